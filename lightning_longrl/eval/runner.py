"""``lightning-longrl eval``: a model over a multiple-choice long-video benchmark.

Questions are answered in batches (greedy by default) with the ``policy`` engine (the model's own
``generate``) or the ``vllm`` engine, each video encoded once and fed to the engine as
embeddings. Every answered question is appended to ``<output_dir>/predictions.jsonl`` as soon as
its batch is done, so an interrupted run loses at most one batch: a rerun with the same
``output_dir`` skips the questions already there. At the end the whole file is scored into
``results.json``, ``results.md`` and TensorBoard scalars (``<output_dir>/tensorboard``).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from lightning_longrl.data.jsonl_store import JSONLStore, read_jsonl_rows
from lightning_longrl.data.records import VideoQARecord
from lightning_longrl.data.video import FrameSampling
from lightning_longrl.eval.formats import BenchmarkFormat, category_order, load_benchmark
from lightning_longrl.importing import class_path_config
from lightning_longrl.inference.answers import answer_questions, unreadable_row
from lightning_longrl.inference.loading import load_inference_model, question_loader
from lightning_longrl.inference.metrics import BenchmarkMetrics
from lightning_longrl.models.video_lm import AttnImplementation, Dtype, VideoLanguageModel
from lightning_longrl.rl.rollout import EngineFactory, PolicyRolloutEngine, RolloutEngine, SamplingConfig, check_engine_factory

log = logging.getLogger(__name__)

PREDICTIONS = "predictions.jsonl"


@dataclass
class EvalConfig:
    """What to evaluate, on what, and how."""

    model: str
    """Local Hugging Face folder of the model (an ``hf_model`` export of a run, or a release)."""
    data: str
    """Benchmark file (JSON list or JSONL)."""
    output_dir: str
    """Where predictions.jsonl, results.json, results.md and TensorBoard logs go; a rerun resumes."""
    format: BenchmarkFormat = "auto"
    """``jsonl`` (project / Long-RL records), ``longvideo_reason``, ``videomme``, or ``auto``."""
    video_root: str | None = None
    """Folder relative video paths are resolved against (default: the benchmark file's folder)."""
    subtitles: bool = False
    """Put subtitles into the prompt as text (VideoMME "with subtitles")."""
    subtitles_dir: str | None = None
    """VideoMME: folder of ``<videoID>.srt`` files (needed for ``subtitles``)."""
    num_frames: int | None = 64
    """Frames per video, uniform over the clip (the paper evaluates with 512)."""
    fps: float | None = None
    """Sample by frames per second of video time instead (set ``num_frames: null``)."""
    max_frames: int = 512
    """Cap when sampling by ``fps``."""
    max_pixels: int = 448 * 448
    """Per-frame pixel budget."""
    think: bool = True
    """Reasoning mode (``<think>`` then ``<answer>``); ``false``: direct answering."""
    engine: EngineFactory = PolicyRolloutEngine
    """What answers: ``PolicyRolloutEngine`` (the model's own generate) or ``VLLMRolloutEngine``
    (its settings as ``init_args``); YAML ``engine: {class_path: VLLMRolloutEngine, init_args: {...}}``."""
    greedy: bool = True
    """Greedy decoding; ``false`` samples with ``temperature`` and ``top_p``."""
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    """Seed of sampling (when not greedy)."""
    max_new_tokens: int = 512
    """Response length limit."""
    batch_size: int = 4
    """Questions answered together."""
    num_workers: int = 2
    """DataLoader workers decoding videos."""
    limit: int | None = None
    """Evaluate only the first ``limit`` questions of the file."""
    dtype: Dtype = "float32"
    attn_implementation: AttnImplementation = "auto"
    device: str = "auto"
    """``auto``: CUDA when available, else CPU."""
    progress: bool = True
    """Show a progress bar with an ETA."""

    def __post_init__(self) -> None:
        self.engine = check_engine_factory(self.engine, "eval engine")
        if (self.num_frames is None) == (self.fps is None):
            raise ValueError(f"eval: set num_frames ({self.num_frames}) or fps ({self.fps}), exactly one")
        if self.batch_size < 1 or self.max_new_tokens < 1:
            raise ValueError(f"eval: batch_size and max_new_tokens must be >= 1, got {self.batch_size} and {self.max_new_tokens}")
        if self.subtitles and self.format == "videomme" and self.subtitles_dir is None:
            raise ValueError("eval: VideoMME with subtitles needs subtitles_dir (the folder of <videoID>.srt files)")


@dataclass
class EvalResult:
    metrics: dict[str, float]
    groups: list[str]
    output_dir: Path
    answered_now: int
    """Questions answered by this call (the rest came from an earlier, interrupted run)."""
    seconds: float


def evaluate(config: EvalConfig, model: VideoLanguageModel | None = None, engine: RolloutEngine | None = None) -> EvalResult:
    """Answer every question of the benchmark not yet in the output file, then score them all.

    Args:
        config: what to evaluate.
        model: an already loaded model (else ``config.model`` is loaded).
        engine: an already built engine for ``model`` (else ``config.engine`` is built, and closed at the end).
    """
    began = time.perf_counter()
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    records = load_benchmark(config.data, config.format, config.subtitles_dir, config.limit)
    if config.subtitles and not any(r.subtitles for r in records):
        log.warning("%s: subtitles are on but no question has any (VideoMME reads them from subtitles_dir)", config.data)
    groups = category_order(records)
    predictions = out / PREDICTIONS
    with JSONLStore(predictions, key=lambda row: str(row["id"]), required=("id", "correct")) as store:
        # unreadable videos are tried again (the files or video_root may have been fixed)
        pending = [r for r in records if r.id not in store or store.get(r.id).get("unreadable")]
        answered_now = 0
        if pending:
            answered_now = _answer_pending(config, model, engine, pending, store, len(records) - len(pending))
    rows = read_predictions(predictions)
    metrics = score_predictions([rows[r.id] for r in records if r.id in rows], records, groups)
    result = EvalResult(metrics, groups, out, answered_now, time.perf_counter() - began)
    write_results(config, result)
    return result


def _answer_pending(config: EvalConfig, model: VideoLanguageModel | None, engine: RolloutEngine | None,
                    pending: list[VideoQARecord], store: JSONLStore, already: int) -> int:
    model = (model or load_inference_model(config.model, config.dtype, config.attn_implementation, config.device)).eval()
    own_engine = engine is None
    engine = engine or config.engine(model)
    try:
        return _answer(config, model, engine, pending, store, already)
    finally:
        if own_engine:
            engine.close()


def _answer(config: EvalConfig, model: VideoLanguageModel, engine: RolloutEngine, pending: list[VideoQARecord],
            store: JSONLStore, already: int) -> int:
    frames = FrameSampling(num_frames=config.num_frames, fps=config.fps, max_frames=config.max_frames,
                           max_pixels=config.max_pixels)
    loader = question_loader(model, pending, config.data, config.video_root, frames, config.think, config.subtitles,
                             config.batch_size, config.num_workers)
    generation = SamplingConfig(num_samples=1, max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                                top_p=config.top_p, greedy=config.greedy)
    generator = torch.Generator().manual_seed(config.seed)
    device = next(model.parameters()).device
    by_id = {r.id: r for r in pending}
    answered = 0
    bar = tqdm(total=len(pending) + already, initial=already, desc="eval", unit="question", disable=not config.progress,
               dynamic_ncols=True)
    for batch in loader:
        rows = [unreadable_row(by_id[rid], reason) for rid, reason in batch.skipped]
        if len(batch):
            rows += answer_questions(model, engine, batch.to(device), generation, generator, config.think)
        for row in rows:
            store.append(row)
        answered += len(rows)
        bar.update(len(rows))
    bar.close()
    return answered


def read_predictions(path: Path) -> dict[str, dict[str, Any]]:
    """Rows of a predictions file by question id (a last line cut short by a crash is ignored)."""
    return {str(r["id"]): r for r in read_jsonl_rows(path, required=("id", "correct"))}


def score_predictions(rows: list[dict[str, Any]], records: list[VideoQARecord], groups: list[str]) -> dict[str, float]:
    """Benchmark metrics of prediction rows (one per answered question).

    Questions of ``records`` without a row are not counted; run :func:`evaluate` to answer them.
    """
    category = {r.id: r.category for r in records}
    metrics = BenchmarkMetrics(groups)
    metrics.update([category[str(r["id"])] for r in rows], [bool(r["correct"]) for r in rows],
                   [bool(r.get("well_formed")) for r in rows], [bool(r.get("unreadable")) for r in rows])
    return metrics.compute()


def results_table(metrics: dict[str, float], groups: list[str], name: str = "this run") -> str:
    """A Markdown table: accuracy (%) per group, overall, format-compliance rate, unreadable videos."""
    shown = [g for g in groups if f"accuracy/{g}" in metrics]
    header = ["Model", *shown, "Overall", "Format", "Unreadable"]
    cells = [name, *(f"{100 * metrics[f'accuracy/{g}']:.1f}" for g in shown), f"{100 * metrics['accuracy']:.1f}",
             f"{100 * metrics['format_rate']:.1f}", f"{int(metrics['unreadable'])}"]
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header), "| " + " | ".join(cells) + " |"])


def write_results(config: EvalConfig, result: EvalResult) -> None:
    out = result.output_dir
    summary = {"metrics": result.metrics, "groups": result.groups, "config": _plain(asdict(config)),
               "answered_now": result.answered_now, "seconds": round(result.seconds, 3)}
    (out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    frames = f"{config.num_frames} frames" if config.num_frames else f"{config.fps} fps"
    mode = "reasoning" if config.think else "direct"
    name = f"{Path(config.model).name} ({frames}, {mode}{', subtitles' if config.subtitles else ''})"
    (out / "results.md").write_text(results_table(result.metrics, result.groups, name) + "\n")
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(out / "tensorboard")) as writer:
        step = config.num_frames or 0
        for key, value in result.metrics.items():
            writer.add_scalar(f"eval/{key}", value, global_step=step)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if (class_path := class_path_config(value)) is not None:  # the engine, as YAML would give it
        return _plain(class_path)
    return value if isinstance(value, (str, int, float, bool, type(None), list)) else str(value)
