"""The frame-scaling study (the paper's Figure 8): one benchmark at several frame counts.

Each frame count is an ordinary :func:`~lightning_longrl.eval.runner.evaluate` run in
``<output_dir>/frames_<n>/`` (so an interrupted study resumes where it stopped, and every point
keeps its predictions); the model and engine are loaded once. The study writes
``frame_scaling.md`` / ``frame_scaling.json`` (accuracy per category and overall at each frame
count) and ``frame_scaling.png`` (accuracy against frames, one line per category).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

from lightning_longrl.eval.plot import line_chart
from lightning_longrl.eval.runner import EvalConfig, EvalResult, evaluate
from lightning_longrl.inference.loading import load_inference_model


def frame_scaling(config: EvalConfig, frames: Sequence[int]) -> dict[int, EvalResult]:
    """Evaluate ``config`` at each of ``frames`` (``config.num_frames`` is replaced) and write the
    study's table and plot into ``config.output_dir``."""
    if not frames or any(n < 1 for n in frames):
        raise ValueError(f"frame_scaling needs positive frame counts, got {list(frames)}")
    frames = sorted(set(frames))
    root = Path(config.output_dir)
    model = load_inference_model(config.model, config.dtype, config.attn_implementation, config.device)
    engine = config.engine(model)
    results: dict[int, EvalResult] = {}
    try:
        for n in frames:
            point = dataclasses.replace(config, num_frames=n, fps=None, output_dir=str(root / f"frames_{n}"))
            results[n] = evaluate(point, model, engine)
    finally:
        engine.close()
    write_study(root, results)
    return results


def write_study(root: Path, results: dict[int, EvalResult]) -> None:
    frames = sorted(results)
    groups = list(dict.fromkeys(g for r in results.values() for g in r.groups))
    series: dict[str, list[float | None]] = {"Overall": [100 * results[n].metrics["accuracy"] for n in frames]}
    for g in groups:
        series[g] = [100 * results[n].metrics[f"accuracy/{g}"] if f"accuracy/{g}" in results[n].metrics else None
                     for n in frames]
    header = ["Frames", *groups, "Overall", "Format", "Unreadable"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
    for i, n in enumerate(frames):
        m = results[n].metrics
        cells = [str(n), *(f"{series[g][i]:.1f}" if series[g][i] is not None else "-" for g in groups),
                 f"{series['Overall'][i]:.1f}", f"{100 * m['format_rate']:.1f}", str(int(m["unreadable"]))]
        lines.append("| " + " | ".join(cells) + " |")
    (root / "frame_scaling.md").write_text("\n".join(lines) + "\n")
    (root / "frame_scaling.json").write_text(json.dumps(
        {"frames": frames, "accuracy_percent": series, "metrics": {str(n): results[n].metrics for n in frames}},
        indent=2) + "\n")
    line_chart(root / "frame_scaling.png", frames, series, title="Accuracy against input frames")
