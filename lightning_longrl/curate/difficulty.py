"""``lightning-longrl filter``: the test-time-scaling difficulty filter of the paper (section 3).

A model answers every question ``k`` times (sampled); a question it always gets right is
``easy``, one it never gets right ``hard``, anything between ``medium``. GRPO learns nothing from a
group whose rollouts all score the same, so the paper keeps the medium questions for RL. The
labels go to ``labels.jsonl`` as each batch finishes (a rerun resumes); then every record goes to
exactly one split, ``rl.jsonl`` (labels in ``rl_labels``) or ``sft.jsonl`` (the others), and a
histogram of per-question accuracy is drawn to ``accuracy_histogram.png``.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from lightning_longrl.data.dataset import portable_video_path, resolve_media_path
from lightning_longrl.data.jsonl_store import JSONLStore
from lightning_longrl.data.records import VideoQARecord, read_records
from lightning_longrl.data.video import FrameSampling
from lightning_longrl.eval.plot import bar_chart
from lightning_longrl.inference.answers import prediction_row
from lightning_longrl.inference.batch_ops import sample_responses
from lightning_longrl.inference.loading import load_inference_model, question_loader
from lightning_longrl.models.video_lm import AttnImplementation, Dtype
from lightning_longrl.rl.rollout import EngineFactory, PolicyRolloutEngine, SamplingConfig, check_engine_factory

LABELS = ("easy", "medium", "hard")


@dataclass
class FilterConfig:
    """Which model judges difficulty, on which records, and how."""

    model: str
    """Local Hugging Face folder of the judging model."""
    data: str
    """Records (project JSONL or Long-RL records)."""
    output_dir: str
    """labels.jsonl, sft.jsonl, rl.jsonl, summary.json and accuracy_histogram.png; a rerun resumes."""
    k: int = 10
    """Sampled answers per question (the paper: 10)."""
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    rl_labels: list[str] = field(default_factory=lambda: ["medium"])
    """Labels whose questions go to rl.jsonl; all others go to sft.jsonl."""
    video_root: str | None = None
    num_frames: int | None = 64
    fps: float | None = None
    max_frames: int = 512
    max_pixels: int = 448 * 448
    think: bool = True
    max_new_tokens: int = 512
    engine: EngineFactory = PolicyRolloutEngine
    """``PolicyRolloutEngine`` or ``VLLMRolloutEngine`` with its settings as ``init_args`` (the k
    samples of a question share one prefill in both)."""
    batch_size: int = 2
    """Questions per batch (each sampled ``k`` times)."""
    num_workers: int = 2
    dtype: Dtype = "float32"
    attn_implementation: AttnImplementation = "auto"
    device: str = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        self.engine = check_engine_factory(self.engine, "filter engine")
        if self.k < 1:
            raise ValueError(f"filter: k must be >= 1, got {self.k}")
        if not set(self.rl_labels) <= set(LABELS):
            raise ValueError(f"filter: rl_labels must be among {LABELS}, got {self.rl_labels}")
        if (self.num_frames is None) == (self.fps is None):
            raise ValueError("filter: set num_frames or fps, exactly one")


def label_of(correct: int, k: int) -> str:
    return "easy" if correct == k else "hard" if correct == 0 else "medium"


def difficulty_filter(config: FilterConfig) -> dict:
    """Label every record (resuming), write the splits, the histogram and ``summary.json``."""
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = Path(config.data)
    records = read_records(data)
    raw_rows = [json.loads(line) for line in data.read_text(encoding="utf-8").split("\n") if line.strip()]
    with JSONLStore(out / "labels.jsonl", key=lambda r: str(r["id"]), required=("id", "correct", "k")) as store:
        stale = [r for r in records if r.id in store and store.get(r.id)["k"] != config.k]
        if stale:
            raise ValueError(f"{out / 'labels.jsonl'} was made with k={store.get(stale[0].id)['k']}, not {config.k}; "
                             "use another output_dir or delete the file")
        pending = [r for r in records if r.id not in store or store.get(r.id).get("unreadable")]
        if pending:
            _label(config, pending, store, len(records) - len(pending), len(records), data)
        labels = {r.id: store.get(r.id) for r in records}
    splits = {"sft": [], "rl": []}
    video_root = Path(config.video_root) if config.video_root else data.parent
    for record, raw in zip(records, raw_rows, strict=True):
        row = labels[record.id]
        if row.get("unreadable"):
            continue
        splits["rl" if row["label"] in config.rl_labels else "sft"].append(_relocated(raw, record, video_root, out))
    for name, rows in splits.items():
        tmp = out / f"{name}.jsonl.tmp"
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        os.replace(tmp, out / f"{name}.jsonl")
    readable = [r for r in labels.values() if not r.get("unreadable")]
    histogram = Counter(r["correct"] for r in readable)
    bar_chart(out / "accuracy_histogram.png", [f"{c}/{config.k}" for c in range(config.k + 1)],
              [histogram.get(c, 0) for c in range(config.k + 1)],
              title=f"Correct answers out of {config.k} samples, per question ({len(readable)} questions)",
              x_label="correct answers", y_label="questions")
    summary = {"questions": len(records), "unreadable": len(records) - len(readable),
               "labels": dict(Counter(r["label"] for r in readable)), "sft": len(splits["sft"]), "rl": len(splits["rl"]),
               "correct_histogram": {str(c): histogram.get(c, 0) for c in range(config.k + 1)}, "k": config.k}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _label(config: FilterConfig, pending, store: JSONLStore, done: int, total: int, data: Path) -> None:
    model = load_inference_model(config.model, config.dtype, config.attn_implementation, config.device)
    engine = config.engine(model)
    frames = FrameSampling(num_frames=config.num_frames, fps=config.fps, max_frames=config.max_frames,
                           max_pixels=config.max_pixels)
    loader = question_loader(model, pending, data, config.video_root, frames, config.think, True, config.batch_size,
                             config.num_workers)
    generation = SamplingConfig(num_samples=config.k, max_new_tokens=config.max_new_tokens,
                                temperature=config.temperature, top_p=config.top_p)
    generator = torch.Generator().manual_seed(config.seed)
    device = next(model.parameters()).device
    by_id = {r.id: r for r in pending}
    try:
        with tqdm(total=total, initial=done, desc="filter", unit="question", disable=not config.progress) as bar:
            for batch in loader:
                for record_id, reason in batch.skipped:
                    store.append({"id": record_id, "k": config.k, "correct": 0, "label": None, "unreadable": True,
                                  "error": reason})
                if len(batch):
                    responses = sample_responses(model, engine, batch.to(device), generation, generator)
                    for q, record in enumerate(batch.records):
                        correct = sum(prediction_row(by_id[record.id], text, think=config.think)["correct"]
                                      for text in responses[q * config.k : (q + 1) * config.k])
                        store.append({"id": record.id, "k": config.k, "correct": correct,
                                      "accuracy": correct / config.k, "label": label_of(correct, config.k)})
                bar.update(len(batch) + len(batch.skipped))
    finally:
        engine.close()


def _relocated(raw: dict, record: VideoQARecord, video_root: Path, out: Path) -> dict:
    """A row copied as it is, except its media paths, which must still point at the files from ``out``."""
    row = {k: v for k, v in raw.items() if k not in ("video", "videos", "image", "images")}
    if record.video is not None:
        row["video"] = portable_video_path(resolve_media_path(record.video, video_root), out)
    elif record.images:
        row["images"] = [portable_video_path(resolve_media_path(i, video_root), out) for i in record.images]
    return row
