"""RL objectives and advantage estimators side by side on the toy benchmark, from one SFT model.

Takes a finished demo run (``scripts/demo.sh --seed N``, or ``benchmarks/learning.py``): its SFT
export, its difficulty-filtered RL questions and its held-out test set. For every variant it runs
the demo's GRPO stage (``configs/demo/grpo.yaml``, same seed, same steps) with only that variant's
options changed, then ``lightning-longrl eval`` on the test questions at 64 frames, and reports
held-out accuracy, the answer-letter spread and the median GRPO step time. Two runs go side by
side, one CPU thread each, as in the demo, so step times compare within this table only.

    .venv/bin/python benchmarks/rl_variants.py                           # seed 0: grpo gspo dr_grpo rloo
    .venv/bin/python benchmarks/rl_variants.py --variants grpo cispo reinforce_pp --seed 1

Results: benchmarks/results/rl_variants.json (and a Markdown table on stdout).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PREFIX = "--model.init_args."
VARIANTS: dict[str, list[str]] = {
    "grpo": [],  # the demo's own objective: token ratio, group-normalised advantages, token_mean
    "gspo": [f"{PREFIX}loss.objective", "gspo", f"{PREFIX}loss.aggregation", "sequence_mean",
             f"{PREFIX}loss.clip_low", "0.0003", f"{PREFIX}loss.clip_high", "0.0004"],
    "dr_grpo": [f"{PREFIX}loss.aggregation", "sequence_sum", f"{PREFIX}advantage.estimator", "group_mean"],
    "rloo": [f"{PREFIX}advantage.estimator", "rloo"],
    "reinforce_pp": [f"{PREFIX}advantage.estimator", "reinforce_pp"],
    "cispo": [f"{PREFIX}loss.objective", "cispo", f"{PREFIX}loss.clip_low", "0.999", f"{PREFIX}loss.clip_high", "0.28"],
    # LoRA adapters instead of the weights; adapters usually want a larger learning rate
    "lora": [f"{PREFIX}model.lora.rank", "16", f"{PREFIX}model.lora.alpha", "32", f"{PREFIX}optimizer.init_args.lr", "0.001"],
    "lora_lr1e-4": [f"{PREFIX}model.lora.rank", "16", f"{PREFIX}model.lora.alpha", "32"],
}
DESCRIPTIONS = {
    "grpo": "GRPO: token ratio, (r - mean) / std, token mean",
    "gspo": "GSPO: sequence ratio clipped at 3e-4 / 4e-4, sequence mean",
    "dr_grpo": "Dr. GRPO: r - mean, token sum / max_new_tokens",
    "rloo": "RLOO: leave-one-out baseline",
    "reinforce_pp": "REINFORCE++: group baseline, batch whitening",
    "cispo": "CISPO: clipped detached weights (upper 0.28)",
    "lora": "GRPO with LoRA (rank 16, alpha 32, lr 1e-3), reference = adapters off",
    "lora_lr1e-4": "GRPO with LoRA (rank 16, alpha 32, the demo's lr 1e-4)",
}


def seed_dirs(seed: int) -> tuple[Path, Path]:
    suffix = "" if seed == 0 else f"-seed{seed}"
    return REPO / f"runs/demo{suffix}", REPO / f"data/demo{suffix}"


def fit_command(variant: str, seed: int, runs: Path, data: Path, out: Path, steps: int | None) -> list[str]:
    cmd = [str(REPO / ".venv/bin/lightning-longrl"), "fit", "--config", str(REPO / "configs/demo/grpo.yaml"),
           "--seed_everything", str(seed), f"{PREFIX}model.path", str(runs / "sft/version_0/hf_model"),
           "--trainer.default_root_dir", str(out / variant), "--trainer.logger.init_args.save_dir", str(out),
           "--trainer.logger.init_args.name", variant, "--trainer.logger.init_args.version", "0",
           "--data.init_args.train_file", str(runs / "filter/rl.jsonl"), "--data.init_args.val_file",
           str(data / "val.jsonl"), *VARIANTS[variant]]
    return cmd + (["--trainer.max_steps", str(steps)] if steps else [])


def eval_command(variant: str, data: Path, out: Path) -> list[str]:
    return [str(REPO / ".venv/bin/lightning-longrl"), "eval", "--config", str(REPO / "configs/demo/eval.yaml"),
            "--data", str(data / "test.jsonl"), "--model", str(out / variant / "version_0/hf_model"),
            "--output_dir", str(out / "eval" / variant)]


def run_side_by_side(jobs: list[tuple[str, list[str]]], logs: Path, width: int = 2) -> None:
    """Run the commands ``width`` at a time, one thread each; stop with the log's end on a failure."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore"}
    logs.mkdir(parents=True, exist_ok=True)
    pending = list(jobs)
    while pending:
        batch, pending = pending[:width], pending[width:]
        procs = []
        for name, cmd in batch:
            print(f"+ {name}: {' '.join(cmd)}", flush=True)
            log = (logs / f"{name}.log").open("w")
            procs.append((name, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO), log))
        for name, proc, log in procs:
            code = proc.wait()
            log.close()
            if code:
                tail = (logs / f"{name}.log").read_text().splitlines()[-20:]
                sys.exit(f"rl_variants: {name} failed (exit {code}); the end of {logs / name}.log:\n" + "\n".join(tail))


def step_seconds(tb_dir: Path) -> float | None:
    """Median of the logged ``time/step`` of a GRPO run (its first step, with warm-up, left out)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    events.Reload()
    if "time/step" not in events.Tags()["scalars"]:
        return None
    values = [e.value for e in events.Scalars("time/step")][1:]
    return statistics.median(values) if values else None


def summary(variant: str, out: Path) -> dict:
    results = out / "eval" / variant / "results.json"
    metrics = json.loads(results.read_text())["metrics"]
    rows = [json.loads(line) for line in results.with_name("predictions.jsonl").read_text().splitlines() if line]
    letters = Counter(r.get("prediction") or "none" for r in rows)
    return {
        "variant": variant, "description": DESCRIPTIONS[variant], "options": VARIANTS[variant],
        "accuracy": 100 * metrics["accuracy"], "format_rate": 100 * metrics["format_rate"],
        "top_letter_share": 100 * max(letters.values()) / max(len(rows), 1), "questions": len(rows),
        "step_seconds": step_seconds(out / variant / "version_0"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=["grpo", "gspo", "dr_grpo", "rloo"], choices=list(VARIANTS))
    parser.add_argument("--seed", type=int, default=0, help="the demo run to start from (scripts/demo.sh --seed N)")
    parser.add_argument("--steps", type=int, default=None, help="GRPO steps (default: configs/demo/grpo.yaml's)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/rl_variants.json")
    parser.add_argument("--reuse", action="store_true", help="collect finished runs without rerunning them")
    args = parser.parse_args()
    runs, data = seed_dirs(args.seed)
    sft = runs / "sft/version_0/hf_model"
    if not (sft.is_dir() and (runs / "filter/rl.jsonl").is_file()):
        sys.exit(f"rl_variants: no finished demo run for seed {args.seed} ({sft} or {runs / 'filter/rl.jsonl'} missing); "
                 f"run scripts/demo.sh --seed {args.seed} first")
    out = runs / "rl_variants"
    began = time.perf_counter()
    if not args.reuse:
        run_side_by_side([(v, fit_command(v, args.seed, runs, data, out, args.steps)) for v in args.variants], out / "logs")
        run_side_by_side([(f"eval_{v}", eval_command(v, data, out)) for v in args.variants], out / "logs")
    rows = [summary(v, out) for v in args.variants]
    result = {"command": "python benchmarks/rl_variants.py " + " ".join(sys.argv[1:]), "seed": args.seed,
              "start": str(sft.relative_to(REPO)), "minutes": round((time.perf_counter() - began) / 60, 1), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nSeed {args.seed}, from {sft.relative_to(REPO)}; held-out accuracy at 64 frames ({rows[0]['questions']} questions)")
    print("| variant | accuracy % | well-formed % | top letter % | GRPO step s (median) |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        step = f"{r['step_seconds']:.2f}" if r["step_seconds"] is not None else "-"
        print(f"| {r['description']} | {r['accuracy']:.1f} | {r['format_rate']:.1f} | {r['top_letter_share']:.1f} | {step} |")
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
