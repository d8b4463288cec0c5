"""Write a synthetic long-video reasoning dataset: videos plus train/val/test JSONL."""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from lightning_longrl.data.records import write_records
from lightning_longrl.synth.render import FrameRenderer, encode_video
from lightning_longrl.synth.scenes import TASKS, SceneQuestion

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


@dataclass
class SynthConfig:
    """What ``lightning-longrl synth`` generates."""

    out_dir: str = "data/synth"
    """Output folder: ``videos/``, ``train.jsonl``, ``val.jsonl``, ``test.jsonl``, ``manifest.json``."""
    num_videos: int = 240
    """Number of videos (one question each)."""
    duration: float = 64.0
    """Length of every video in seconds."""
    fps: float = 8.0
    """Frame rate of the written videos."""
    height: int = 112
    width: int = 112
    brief_event: float = 1.2
    """Length in seconds of brief events (flashes, visits); shorter makes sparse sampling miss more."""
    tasks: list[str] = field(default_factory=lambda: list(TASKS))
    """Task generators to use, assigned round-robin (see ``lightning_longrl.synth.scenes.TASKS``)."""
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    seed: int = 0
    codec: str = "libx264"
    workers: int = 2
    """Processes rendering videos in parallel (0 renders in this process)."""

    def __post_init__(self) -> None:
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown:
            raise ValueError(f"unknown synthetic task(s) {unknown}; choose from {sorted(TASKS)}")
        if self.num_videos < 1:
            raise ValueError("num_videos must be >= 1")
        if not 0 <= self.val_fraction + self.test_fraction < 1:
            raise ValueError("val_fraction + test_fraction must be in [0, 1)")
        if self.duration * self.fps < 2:
            raise ValueError("a video needs at least two frames (duration * fps >= 2)")


def scene_question(config: SynthConfig, index: int) -> SceneQuestion:
    """The scene and question of video ``index``; depends only on (seed, index, timing settings)."""
    rng = np.random.default_rng([config.seed, index])
    task = config.tasks[index % len(config.tasks)]
    return TASKS[task](rng, config.duration, config.brief_event)


def split_of(config: SynthConfig) -> list[str]:
    """Split name of every video index, fixed by the seed."""
    order = np.random.default_rng([config.seed, 10**9]).permutation(config.num_videos)
    n_test = int(round(config.test_fraction * config.num_videos))
    n_val = int(round(config.val_fraction * config.num_videos))
    splits = ["train"] * config.num_videos
    for rank, index in enumerate(order):
        if rank < n_test:
            splits[index] = "test"
        elif rank < n_test + n_val:
            splits[index] = "val"
    return splits


GENERATOR_VERSION = 2
"""Bumped when the same settings would render different data (2: option order randomised in every
task, so the answer letter carries no information); older folders are regenerated."""


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
        for split in SPLITS:  # different settings: records are rewritten, stale videos removed
            (out / f"{split}.jsonl").unlink(missing_ok=True)
        manifest_path.unlink()
        for stale in (out / "videos").glob("*.mp4"):
            stale.unlink()
    (out / "videos").mkdir(parents=True, exist_ok=True)

    jobs = [(config, i) for i in range(config.num_videos)]
    records: list[dict[str, Any]] = []
    bar = tqdm(total=len(jobs), desc="synth videos", unit="video", disable=not progress)
    for record in _map(jobs, config.workers):
        records.append(record)
        bar.update()
    bar.close()

    splits = split_of(config)
    by_split: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    for index, record in enumerate(records):
        by_split[splits[index]].append(record)
    for split, rows in by_split.items():
        write_records(out / f"{split}.jsonl", rows)
    manifest = {
        "config": settings,
        "counts": {s: len(r) for s, r in by_split.items()},
        "categories": {s: dict(Counter(r["category"] for r in rows)) for s, rows in by_split.items()},
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
        yield from pool.imap(_render_one, jobs, chunksize=4)


def tokenizer_corpus(num_questions: int = 2000, seed: int = 12345) -> Iterator[str]:
    """Question/option/reasoning texts of synthetic tasks, for training the tiny models' tokenizer."""
    config = SynthConfig(num_videos=num_questions, seed=seed)
    for index in range(num_questions):
        item = scene_question(config, index)
        yield item.question
        yield " ".join(item.options)
        yield item.reasoning
