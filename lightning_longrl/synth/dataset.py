"""Write a synthetic long-video reasoning dataset: videos plus the JSONL splits of the pipeline.

Splits, all on disjoint videos:

* ``captions.jsonl``: dense descriptions (open-ended, no reasoning) of the ``sft`` and ``rl``
  videos, the data of the perception stage that stands in for a pretrained base model;
* ``train.jsonl``: questions with reasoning for CoT-SFT;
* ``rl.jsonl``: further questions for the RL stage (the difficulty filter picks from them);
* ``val.jsonl`` and ``test.jsonl``: held-out questions about unseen videos;
* ``captions_test.jsonl``: descriptions of the test videos (how well the perception stage sees).

With ``image_questions`` / ``text_questions``, the splits also hold questions on still images
(``images/``) and text-only questions about the same world (:mod:`lightning_longrl.synth.stills`),
drawn into the splits like the videos.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from lightning_longrl.data.records import write_records
from lightning_longrl.synth.render import FrameRenderer, encode_video
from lightning_longrl.synth.scenes import TASKS, SceneQuestion, captions, make_question
from lightning_longrl.synth.stills import IMAGE_TASKS, TEXT_TASKS, StillQuestion, make_still_question

log = logging.getLogger(__name__)

SPLITS = ("train", "rl", "val", "test")
CAPTIONS = "captions"
TEST_CAPTIONS = "captions_test"


@dataclass
class SynthConfig:
    """What ``lightning-longrl synth`` generates."""

    out_dir: str = "data/synth"
    """Output folder: ``videos/``, ``captions.jsonl``, ``train.jsonl``, ``rl.jsonl``, ``val.jsonl``,
    ``test.jsonl``, ``manifest.json``."""
    num_videos: int = 2000
    """Number of videos (one question each, plus its descriptions for the perception stage)."""
    duration: float = 64.0
    """Length of every video in seconds."""
    fps: float = 2.0
    """Frame rate of the written videos (64 uniformly sampled frames of a 64 s video are then 64
    distinct frames, and the flash, 2 s long, spans two of them)."""
    height: int = 28
    width: int = 28
    """Frame size; at 28x28 a frame pair is one merged visual token of a Qwen-VL model, its four
    patches the frame's quarters (read with ``max_pixels`` 784)."""
    num_scenes: int = 8
    """Scenes per video (equally long)."""
    flash_length: float | None = None
    """Seconds the flash lasts (default ``duration / 16``: 8 uniform frames land on it one time in two,
    16 frames always, in one frame; 64 frames in four)."""
    tasks: list[str] = field(default_factory=lambda: list(TASKS))
    """Question families, assigned round-robin (see ``lightning_longrl.synth.scenes.TASKS``)."""
    cot_error_rate: float = 0.0
    """Share of the ``train.jsonl`` traces (of the tasks in ``cot_error_tasks``) written by an
    imperfect teacher: the reasoning makes a plausible slip (a runner-up taken for the most
    frequent, a count off by one, the second-last scene read as the last, a neighbouring scene
    or colour) and its answer follows the slip, as in LLM-written CoT data that nobody verified.
    Such rows carry ``teacher_error: true`` and the correct letter in ``verified_answer``. The RL,
    validation and test splits always hold the correct answers."""
    cot_error_tasks: list[str] = field(default_factory=lambda: list(TASKS))
    """Tasks whose training traces the imperfect teacher writes."""
    rl_fraction: float = 0.4
    """Share of the videos whose questions go to ``rl.jsonl`` (the RL stage's pool)."""
    val_fraction: float = 0.05
    test_fraction: float = 0.2
    seed: int = 0
    codec: str = "mpeg4"
    """Video codec (PyAV name). MPEG-4 part 2 by default: libx264 was seen to write different
    (equally decodable) bytes for identical frames in about one video in 240 between two runs."""
    image_questions: int = 0
    """Questions on still images of the world, besides the videos' (one or two images each; tasks
    ``image_ball`` and ``image_pair`` in turn), split like the videos."""
    text_questions: int = 0
    """Text-only questions about the world (the scenes listed in words), split like the videos."""
    stills_in_test: bool = False
    """Also put image and text-only questions into ``test.jsonl``; by default the held-out test
    stays video-only (the demo's table measures long-video reasoning) and they go to the other splits."""
    workers: int = 2
    """Processes rendering videos in parallel (0 renders in this process)."""

    def __post_init__(self) -> None:
        unknown = [t for t in [*self.tasks, *self.cot_error_tasks] if t not in TASKS]
        if unknown:
            raise ValueError(f"unknown synthetic task(s) {unknown}; choose from {list(TASKS)}")
        if not 0 <= self.cot_error_rate <= 1:
            raise ValueError(f"cot_error_rate must be in [0, 1], got {self.cot_error_rate}")
        if self.num_videos < 1:
            raise ValueError("num_videos must be >= 1")
        if self.image_questions < 0 or self.text_questions < 0:
            raise ValueError("image_questions and text_questions must be >= 0")
        fractions = (self.rl_fraction, self.val_fraction, self.test_fraction)
        if min(fractions) < 0 or not sum(fractions) < 1:
            raise ValueError("rl_fraction + val_fraction + test_fraction must be in [0, 1), each >= 0")
        if self.duration * self.fps < 2:
            raise ValueError("a video needs at least two frames (duration * fps >= 2)")
        if self.num_scenes < 3:
            raise ValueError("num_scenes must be >= 3 (the flash falls in a scene other than the first and the last)")
        flash = self.duration / 16 if self.flash_length is None else self.flash_length
        if not 0 < flash < self.duration / self.num_scenes:
            raise ValueError(f"flash_length must be in (0, duration / num_scenes), got {flash}")


def scene_question(config: SynthConfig, index: int) -> SceneQuestion:
    """The timeline and question of video ``index``; depends only on (seed, index, timing settings)."""
    rng = np.random.default_rng([config.seed, index])
    task = config.tasks[index % len(config.tasks)]
    return make_question(rng, task, config.duration, config.num_scenes, config.flash_length)


def teacher_slips(config: SynthConfig, index: int) -> bool:
    """Whether the imperfect teacher writes video ``index``'s training trace with a slip."""
    if config.cot_error_rate <= 0 or config.tasks[index % len(config.tasks)] not in config.cot_error_tasks:
        return False
    return bool(np.random.default_rng([config.seed, index, 1]).random() < config.cot_error_rate)


def split_of(config: SynthConfig, count: int | None = None, stream: int = 0) -> list[str]:
    """Split name of every video index (or of ``count`` questions of another kind, ``stream`` 1 for
    images and 2 for text), fixed by the seed."""
    count = config.num_videos if count is None else count
    order = np.random.default_rng([config.seed, 10**9 + stream]).permutation(count)
    sizes = [("test", config.test_fraction), ("val", config.val_fraction), ("rl", config.rl_fraction)]
    splits = ["train"] * count
    start = 0
    for name, fraction in sizes:
        share = int(round(fraction * count))
        for index in order[start : start + share]:
            splits[index] = name
        start += share
    return splits


GENERATOR_VERSION = 7
"""Bumped when the same settings would render different data (2: option order randomised in every
task; 3: the scenes / ball / flash world with canonical options and perception captions; 4: MPEG-4
codec by default, whole-half ball, 2 s flash; 5: the flash lights the ball's half, beside the
scene colour; 6: the flash outlines every quarter of the frame, 1/16 of the video by default; 7:
image and text-only questions); older folders are regenerated."""


def _video_name(config: SynthConfig, index: int) -> str:
    return f"videos/synth_s{config.seed}_{index:05d}.mp4"


def _render_one(args: tuple[SynthConfig, int]) -> dict[str, Any]:
    config, index = args
    item = scene_question(config, index)
    path = Path(config.out_dir) / _video_name(config, index)
    if not path.exists():
        renderer = FrameRenderer(config.height, config.width)
        encode_video(path, renderer.frames(item.scene, config.fps), config.fps, config.codec)
    return {
        "id": f"synth-s{config.seed}-{index:05d}",
        "video": _video_name(config, index),
        "question": item.question,
        "options": item.options,
        "answer": item.answer,
        "reasoning": item.reasoning,
        "category": item.category,
        "task": item.task,
        "duration": config.duration,
    }


def still_question(config: SynthConfig, index: int, kind: str) -> StillQuestion:
    """Image (``kind="image"``) or text-only question ``index``; depends only on (seed, index, settings)."""
    tasks = IMAGE_TASKS if kind == "image" else TEXT_TASKS
    rng = np.random.default_rng([config.seed, index, 2 if kind == "image" else 3])
    return make_still_question(rng, tasks[index % len(tasks)], config.duration, config.num_scenes, config.flash_length)


def _still_row(config: SynthConfig, index: int, kind: str) -> dict[str, Any]:
    """Render question ``index``'s stills (PNG) and return its record."""
    from PIL import Image

    item = still_question(config, index, kind)
    tag = "img" if kind == "image" else "txt"
    row: dict[str, Any] = {"id": f"synth-s{config.seed}-{tag}-{index:05d}"}
    if kind == "image":
        renderer = FrameRenderer(config.height, config.width)
        names = [f"images/synth_s{config.seed}_{index:05d}_{j}.png" for j in range(len(item.times))]
        for name, t in zip(names, item.times):
            path = Path(config.out_dir) / name
            if not path.exists():
                Image.fromarray(renderer.frame(item.timeline.scene(), t)).save(path)
        row["images"] = names
    return {**row, "question": item.question, "options": item.options, "answer": item.answer,
            "reasoning": item.reasoning, "category": item.category, "task": item.task}


def _caption_rows(config: SynthConfig, index: int, record: dict[str, Any]) -> list[dict[str, Any]]:
    timeline = scene_question(config, index).timeline
    return [{"id": f"{record['id']}-{c.task}", "video": record["video"], "question": c.question, "answer": c.answer,
             "category": "Perception", "task": c.task, "duration": config.duration} for c in captions(timeline)]


def generate_dataset(config: SynthConfig, progress: bool = True) -> dict[str, Any]:
    """Render every video and write the JSONL splits and a manifest; returns the manifest.

    Finished videos are kept across runs (a rerun after an interruption renders only what is
    missing); the JSONL files and the manifest are written last, so their presence means the
    dataset is complete. A folder whose manifest matches ``config`` is left as it is.
    """
    out = Path(config.out_dir)
    manifest_path = out / "manifest.json"
    settings = asdict(config)
    settings.pop("workers")
    settings["generator_version"] = GENERATOR_VERSION
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("config") == settings:
            log.info("synthetic dataset in %s is up to date", out)
            return manifest
        for split in (*SPLITS, CAPTIONS, TEST_CAPTIONS):  # different settings: records are rewritten, stale videos removed
            (out / f"{split}.jsonl").unlink(missing_ok=True)
        manifest_path.unlink()
        for stale in [*(out / "videos").glob("*.mp4"), *(out / "images").glob("*.png")]:
            stale.unlink()
    (out / "videos").mkdir(parents=True, exist_ok=True)
    if config.image_questions:
        (out / "images").mkdir(exist_ok=True)

    jobs = [(config, i) for i in range(config.num_videos)]
    records: list[dict[str, Any]] = []
    bar = tqdm(total=len(jobs), desc="synth videos", unit="video", disable=not progress)
    for record in _map(jobs, config.workers):
        records.append(record)
        bar.update()
    bar.close()

    splits = split_of(config)
    by_split: dict[str, list[dict[str, Any]]] = {s: [] for s in (*SPLITS, CAPTIONS, TEST_CAPTIONS)}
    for index, record in enumerate(records):
        if splits[index] == "train" and teacher_slips(config, index):
            item = scene_question(config, index)
            record = {**record, "answer": item.slip_answer, "reasoning": item.slip_reasoning,
                      "teacher_error": True, "verified_answer": item.answer}
        by_split[splits[index]].append(record)
        if splits[index] in ("train", "rl"):
            by_split[CAPTIONS].extend(_caption_rows(config, index, record))
        elif splits[index] == "test":
            by_split[TEST_CAPTIONS].extend(_caption_rows(config, index, record))
    stills = config if config.stills_in_test else replace(config, test_fraction=0.0)
    for kind, count, stream in (("image", config.image_questions, 1), ("text", config.text_questions, 2)):
        for index, split in enumerate(split_of(stills, count, stream)):
            by_split[split].append(_still_row(config, index, kind))
    for split, rows in by_split.items():
        write_records(out / f"{split}.jsonl", rows)
    manifest = {
        "config": settings,
        "counts": {s: len(r) for s, r in by_split.items()},
        "categories": {s: dict(Counter(r["category"] for r in rows)) for s, rows in by_split.items()},
        "tasks": {s: dict(Counter(r["task"] for r in rows)) for s, rows in by_split.items()},
        "teacher_errors": sum(bool(r.get("teacher_error")) for r in by_split["train"]),
    }
    tmp = manifest_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=2))
    os.replace(tmp, manifest_path)
    return manifest


def _map(jobs: list[tuple[SynthConfig, int]], workers: int) -> Iterator[dict[str, Any]]:
    if workers <= 0 or len(jobs) < 2:
        yield from map(_render_one, jobs)
        return
    ctx = mp.get_context("spawn")
    with ctx.Pool(min(workers, len(jobs))) as pool:
        yield from pool.imap(_render_one, jobs, chunksize=8)


def tokenizer_corpus(num_questions: int = 600, seed: int = 12345) -> Iterator[str]:
    """Question/option/reasoning/description texts of synthetic tasks, for training the tiny models' tokenizer."""
    config = SynthConfig(num_videos=num_questions, seed=seed)
    for index in range(num_questions):
        item = scene_question(config, index)
        yield item.question
        yield " ".join(item.options)
        yield item.reasoning
        for caption in captions(item.timeline):
            yield caption.question
            yield caption.answer
