"""``lightning-longrl curate``: long videos in, question / reasoning / answer records out
(section 3 of the paper).

Stages, each stored as it goes in ``output_dir`` (see :mod:`lightning_longrl.data.jsonl_store`),
so a rerun after a crash or Ctrl-C redoes nothing already done and loses nothing:

1. ``clips.jsonl``: each video's duration and its clips of about ``clip_seconds``.
2. ``captions.jsonl``: a caption per clip, from ``frames_per_clip`` frames, by the captioner.
3. ``generations.jsonl``: per video, reasoning family and question type, the question writer's
   reply from all the clip captions (prompt templates in ``prompts/``); a reply that is not a
   usable record is marked rejected and also kept verbatim in ``rejects.jsonl``.
4. ``refined.jsonl``: the reasoning of each accepted record rewritten by the refiner for concision
   and agreement with the captions.
5. ``records.jsonl``: the records in the project's format with their provenance (rewritten from
   the stores at the end of every run), and ``summary.json``.

Requests that fail (after the backend's retries) are not stored and are counted; a rerun tries
them again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from lightning_longrl.curate.backends import Backend, BackendConfig, BackendError, Request, build_backend
from lightning_longrl.curate.parse import RejectedOutput, parse_generation, record_schema, strip_thinking
from lightning_longrl.data.dataset import portable_video_path
from lightning_longrl.data.jsonl_store import JSONLStore
from lightning_longrl.data.records import OPTION_LETTERS
from lightning_longrl.data.video import FrameSampling, VideoDecodeError, read_video

log = logging.getLogger(__name__)

FAMILIES = {"temporal": "Temporal", "goal_and_purpose": "Goal and Purpose", "spatial": "Spatial",
            "plot_and_narrative": "Plot and Narrative"}
QUESTION_TYPES = ("multiple_choice", "open_ended")
VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v")
DEFAULT_PROMPTS = Path(__file__).with_name("prompts")


@dataclass
class CurateConfig:
    """What to curate, with which models, and how."""

    videos: str
    """A folder (searched recursively for video files) or a text file with one video path per line."""
    output_dir: str
    """Where the stage files, rejects, records and summary go; a rerun resumes."""
    captioner: BackendConfig
    """Vision-language model that captions each clip."""
    writer: BackendConfig
    """(Reasoning) LLM that writes question / reasoning / answer records from the captions."""
    refiner: BackendConfig | None = None
    """LLM that rewrites the reasoning; ``None``: the writer does it."""
    refine: bool = True
    """Run the refinement stage."""
    clip_seconds: float = 10.0
    """Clip length; the last clip of a video may be shorter."""
    frames_per_clip: int = 8
    max_pixels: int = 448 * 448
    """Per-frame pixel budget of the frames sent to the captioner."""
    families: list[str] = field(default_factory=lambda: list(FAMILIES))
    """Reasoning families, each with its prompt template: temporal, goal_and_purpose, spatial, plot_and_narrative."""
    question_types: list[str] = field(default_factory=lambda: list(QUESTION_TYPES))
    """multiple_choice and/or open_ended: one question of each type per video and family."""
    prompts_dir: str | None = None
    """Folder of prompt templates overriding the built-in ones (same file names; see docs/curation.md)."""
    max_videos: int | None = None
    """Curate only the first N videos (sorted by path)."""
    max_chars: list[int] = field(default_factory=lambda: [400, 200, 3000])
    """Longest question, option (or open-ended answer) and reasoning in characters, enforced by
    writers with ``json_schema`` on."""
    progress: bool = True

    def __post_init__(self) -> None:
        unknown = [f for f in self.families if f not in FAMILIES]
        if unknown or not self.families:
            raise ValueError(f"curate: families must be among {list(FAMILIES)}, got {self.families}")
        bad = [t for t in self.question_types if t not in QUESTION_TYPES]
        if bad or not self.question_types:
            raise ValueError(f"curate: question_types must be among {list(QUESTION_TYPES)}, got {self.question_types}")
        if not self.clip_seconds > 0 or self.frames_per_clip < 1:
            raise ValueError("curate: clip_seconds must be > 0 and frames_per_clip >= 1")


def find_videos(source: str | Path) -> list[Path]:
    """Video files under a folder (recursively, sorted) or listed in a text file (relative lines
    are relative to the file's folder)."""
    source = Path(source)
    if source.is_dir():
        return sorted(p for p in source.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
    if source.is_file():
        lines = [s.strip() for s in source.read_text().splitlines() if s.strip() and not s.startswith("#")]
        return [p if p.is_absolute() else source.parent / p for p in map(Path, lines)]
    raise FileNotFoundError(f"curate: videos {source} is neither a folder nor a list file")


class Prompts:
    """The prompt templates: ``prompts_dir`` first, then the built-in ones."""

    def __init__(self, override: str | Path | None) -> None:
        self.override = Path(override) if override else None
        if self.override is not None and not self.override.is_dir():
            raise FileNotFoundError(f"curate: prompts_dir {self.override} is not a folder")

    def __getitem__(self, name: str) -> str:
        for folder in (self.override, DEFAULT_PROMPTS):
            if folder is not None and (folder / f"{name}.txt").is_file():
                return (folder / f"{name}.txt").read_text()
        raise FileNotFoundError(f"curate: no prompt template {name}.txt")

    def fill(self, name: str, **values: Any) -> str:
        try:
            return self[name].format(**values)
        except (KeyError, IndexError, ValueError) as err:
            raise ValueError(f"curate: prompt template {name}.txt: bad placeholder ({err}); "
                             f"available: {sorted(values)}") from None


@dataclass
class CurateSummary:
    videos: int = 0
    unreadable_videos: int = 0
    clips: int = 0
    captions: int = 0
    generations: int = 0
    rejected: int = 0
    refined: int = 0
    records: int = 0
    records_per_category: dict[str, int] = field(default_factory=dict)
    requests_this_run: dict[str, int] = field(default_factory=dict)
    failed_this_run: dict[str, int] = field(default_factory=dict)
    """Requests that failed after their retries; a rerun tries them again."""


def curate(config: CurateConfig, backends: dict[str, Backend] | None = None) -> CurateSummary:
    """Run (or resume) the pipeline; returns the summary also written to ``summary.json``.

    Args:
        backends: already built backends by role (``captioner``, ``writer``, ``refiner``);
            the missing ones are built from the config and closed at the end.
    """
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    prompts = Prompts(config.prompts_dir)
    videos = find_videos(config.videos)[: config.max_videos]
    if not videos:
        raise ValueError(f"curate: no video files in {config.videos}")
    run = _Run(config, out, prompts, dict(backends or {}))
    try:
        run.clips(videos)
        run.captions()
        run.release("captioner")  # frees its memory (a GPU) for the writer
        run.generations()
        if config.refine:
            run.refinements()
    finally:
        run.close()
    return run.finish()


class _Run:
    def __init__(self, config: CurateConfig, out: Path, prompts: Prompts, backends: dict[str, Backend]) -> None:
        self.config, self.out, self.prompts = config, out, prompts
        self.backends, self.own = backends, []
        self.stores = {
            "clips": JSONLStore(out / "clips.jsonl", key=lambda r: r["video"], required=("video",)),
            "captions": JSONLStore(out / "captions.jsonl", key=lambda r: (r["video"], r["clip"]), required=("video", "clip")),
            "generations": JSONLStore(out / "generations.jsonl", key=_item_key, required=("video", "family", "question_type")),
            "refined": JSONLStore(out / "refined.jsonl", key=_item_key, required=("video", "family", "question_type")),
            "rejects": JSONLStore(out / "rejects.jsonl", key=lambda r: (r["stage"], *_item_key(r)), required=("stage",)),
        }
        self.requests: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        self.videos: list[str] = []

    # ----------------------------------------------------------------------------- helpers
    def backend(self, role: str) -> Backend:
        """The backend of a role, built on first use (the refiner defaults to the writer's)."""
        if role not in self.backends:
            if role == "refiner" and self.config.refiner is None:
                self.backends[role] = self.backend("writer")
            else:
                self.backends[role] = build_backend(getattr(self.config, role))
                self.own.append(self.backends[role])
        return self.backends[role]

    def _bar(self, total: int, done: int, stage: str):
        return tqdm(total=total, initial=done, desc=stage, unit="item", disable=not self.config.progress, dynamic_ncols=True)

    def _run_requests(self, stage: str, role: str, items: list[Any], make: Callable[[Any], Request | None],
                      store: Callable[[Any, str], None], done: int, total: int) -> None:
        """Send the requests of ``items`` in chunks and store each reply as it comes back."""
        if not items:
            return
        backend = self.backend(role)
        chunk = max(backend.config.batch_size, backend.config.concurrency)
        with self._bar(total, done, stage) as bar:
            for start in range(0, len(items), chunk):
                part = items[start : start + chunk]
                requests = [make(item) for item in part]
                ready = [(item, r) for item, r in zip(part, requests) if r is not None]
                replies = backend.generate([r for _, r in ready]) if ready else []
                self.requests[stage] += len(ready)
                for (item, _), reply in zip(ready, replies):
                    if isinstance(reply, BackendError):
                        self.failed[stage] += 1
                    else:
                        store(item, reply)
                bar.update(len(part))

    # ------------------------------------------------------------------------------ stages
    def clips(self, videos: Sequence[Path]) -> None:
        store = self.stores["clips"]
        with self._bar(len(videos), 0, "clips") as bar:
            for path in videos:
                key = str(Path(path).resolve())  # the same video whether given relative or absolute
                self.videos.append(key)
                if key not in store:
                    try:
                        duration = read_video(path, FrameSampling(num_frames=1, max_pixels=28 * 28)).duration
                        count = max(1, math.ceil(duration / self.config.clip_seconds - 1e-6))
                        spans = [[i * self.config.clip_seconds, min(duration, (i + 1) * self.config.clip_seconds)]
                                 for i in range(count)]
                        store.append({"video": key, "duration": duration, "clips": spans})
                    except (VideoDecodeError, OSError) as err:
                        store.append({"video": key, "error": str(err)})
                bar.update(1)

    def _readable(self) -> list[dict[str, Any]]:
        rows = [self.stores["clips"].get(v) for v in self.videos]
        return [r for r in rows if r is not None and "clips" in r]

    def captions(self) -> None:
        store = self.stores["captions"]
        items = [(row["video"], i, span) for row in self._readable() for i, span in enumerate(row["clips"])]
        pending = [it for it in items if (it[0], it[1]) not in store]
        sampling = FrameSampling(num_frames=self.config.frames_per_clip, max_pixels=self.config.max_pixels)

        def make(item) -> Request | None:
            video, _, (start, end) = item
            try:
                clip = read_video(video, sampling, start=start, end=end)
            except (VideoDecodeError, OSError) as err:
                log.warning("%s [%.1f-%.1f s]: %s", video, start, end, err)
                self.failed["captions"] += 1
                return None
            text = self.prompts.fill("caption", num_frames=len(clip.frames), clip_seconds=end - start, start=start, end=end)
            return Request(text, clip.frames, clip.timestamps)

        def save(item, reply: str) -> None:
            video, index, (start, end) = item
            store.append({"video": video, "clip": index, "start": start, "end": end, "caption": reply,
                          "model": self.backend("captioner").name})

        self._run_requests("captions", "captioner", pending, make, save, len(items) - len(pending), len(items))

    def _captions_text(self, video: str, clips: list) -> str | None:
        lines = []
        for index, (start, end) in enumerate(clips):
            row = self.stores["captions"].get((video, index))
            if row is None:
                return None  # not all clips captioned yet (a failed request): wait for a rerun
            lines.append(f"[{start:.0f}s-{end:.0f}s] {row['caption']}")
        return "\n".join(lines)

    def generations(self) -> None:
        store, rejects = self.stores["generations"], self.stores["rejects"]
        items = [(row, family, qtype) for row in self._readable() for family in self.config.families
                 for qtype in self.config.question_types]
        pending = [it for it in items if (it[0]["video"], it[1], it[2]) not in store]

        def make(item) -> Request | None:
            row, family, qtype = item
            captions = self._captions_text(row["video"], row["clips"])
            if captions is None:
                return None
            return Request(self.prompts.fill(family, captions=captions, duration=row["duration"],
                                             question_type=qtype.replace("_", "-"),
                                             question_type_instruction=self.prompts[qtype].strip()),
                           schema=record_schema(qtype, max_chars=tuple(self.config.max_chars)))

        def save(item, reply: str) -> None:
            row, family, qtype = item
            entry = {"video": row["video"], "family": family, "question_type": qtype, "raw": reply,
                     "model": self.backend("writer").name}
            try:
                qa = parse_generation(reply, qtype)
                entry["parsed"] = {"question": qa.question, "options": list(qa.options), "answer": qa.answer,
                                   "reasoning": qa.reasoning}
            except RejectedOutput as err:
                entry["rejected"] = str(err)
                rejects.append({"stage": "generation", "video": row["video"], "family": family, "question_type": qtype,
                                "reason": str(err), "raw": reply, "model": entry["model"]})
            store.append(entry)

        self._run_requests("questions", "writer", pending, make, save, len(items) - len(pending), len(items))

    def refinements(self) -> None:
        store = self.stores["refined"]
        accepted = [g for g in self.stores["generations"].rows.values() if "parsed" in g and g["video"] in self.videos]
        pending = [g for g in accepted if _item_key(g) not in store]
        clips = {r["video"]: r["clips"] for r in self._readable()}

        def make(g) -> Request | None:
            captions = self._captions_text(g["video"], clips[g["video"]])
            qa = g["parsed"]
            options = "".join(f"{OPTION_LETTERS[i]}. {o}\n" for i, o in enumerate(qa["options"]))
            return Request(self.prompts.fill("refine", captions=captions, question=qa["question"], options=options,
                                             answer=qa["answer"], reasoning=qa["reasoning"]))

        def save(g, reply: str) -> None:
            reply = strip_thinking(reply)
            if not reply.strip():
                self.stores["rejects"].append({"stage": "refinement", "video": g["video"], "family": g["family"],
                                               "question_type": g["question_type"], "reason": "empty reply",
                                               "raw": reply, "model": self.backend("refiner").name})
                return
            store.append({"video": g["video"], "family": g["family"], "question_type": g["question_type"],
                          "reasoning": reply.strip(), "model": self.backend("refiner").name})

        self._run_requests("refine", "refiner", pending, make, save, len(accepted) - len(pending), len(accepted))

    # ------------------------------------------------------------------------------ output
    def release(self, role: str) -> None:
        """Close a backend this run built once its stages are done (unless another role uses it)."""
        backend = self.backends.get(role)
        if backend is None or backend not in self.own:
            return
        if any(b is backend for r, b in self.backends.items() if r != role):
            return
        backend.close()
        self.own.remove(backend)

    def close(self) -> None:
        for store in self.stores.values():
            store.close()
        for backend in self.own:
            backend.close()

    def finish(self) -> CurateSummary:
        records = self.records()
        tmp = self.out / "records.jsonl.tmp"
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        os.replace(tmp, self.out / "records.jsonl")
        readable = self._readable()
        in_run = [g for g in self.stores["generations"].rows.values() if g["video"] in self.videos]
        summary = CurateSummary(
            videos=len(self.videos), unreadable_videos=len(self.videos) - len(readable),
            clips=sum(len(r["clips"]) for r in readable),
            captions=sum(1 for k in self.stores["captions"].rows if k[0] in self.videos),
            generations=len(in_run), rejected=sum(1 for g in in_run if "rejected" in g),
            refined=sum(1 for k in self.stores["refined"].rows if k[0] in self.videos),
            records=len(records), records_per_category=dict(Counter(r["category"] for r in records)),
            requests_this_run=dict(self.requests), failed_this_run=dict(self.failed),
        )
        (self.out / "summary.json").write_text(json.dumps(summary.__dict__, indent=2) + "\n")
        return summary

    def records(self) -> list[dict[str, Any]]:
        """Accepted generations (refined when refinement is on and done) as project records."""
        clips = {r["video"]: r for r in self._readable()}
        records = []
        for g in self.stores["generations"].rows.values():
            if "parsed" not in g or g["video"] not in clips:
                continue
            refined = self.stores["refined"].get(_item_key(g))
            if self.config.refine and refined is None:
                continue  # waits for its refinement (a failed request is retried next run)
            qa = g["parsed"]
            video = g["video"]
            digest = hashlib.sha1(video.encode()).hexdigest()[:8]
            records.append({
                "id": f"{Path(video).stem}-{digest}-{g['family']}-{g['question_type']}",
                "video": portable_video_path(video, self.out),
                "question": qa["question"],
                **({"options": qa["options"]} if qa["options"] else {}),
                "answer": qa["answer"],
                "reasoning": refined["reasoning"] if refined else qa["reasoning"],
                "category": FAMILIES[g["family"]],
                "provenance": {
                    "captioner": self.stores["captions"].get((video, 0))["model"],
                    "writer": g["model"], "refiner": refined["model"] if refined else None,
                    "family": g["family"], "question_type": g["question_type"],
                    "prompt_template": f"{g['family']}.txt", "clips": clips[video]["clips"],
                    "original_reasoning": qa["reasoning"] if refined else None,
                },
            })
        return records


def _item_key(row: dict[str, Any]) -> tuple[str, str, str]:
    return row["video"], row["family"], row["question_type"]
