"""The demo's GRPO stage with each rollout engine, from the same SFT export and seed.

Fits configs/demo/grpo.yaml once with `rollout_engine: policy` and once with `rollout_engine: vllm`,
then compares how the rewards move over training (first vs last epoch), the held-out accuracy of
each result, the rollout/trainer log-prob agreement and the time spent per step.

    .venv/bin/python benchmarks/demo_engines.py                       # SFT export of scripts/demo.sh
    .venv/bin/python benchmarks/demo_engines.py --sft runs/demo/sft/version_0/hf_model --seed 1

Needs the demo data, the difficulty filter's RL split and an SFT export (scripts/demo.sh makes
all three). Results go to benchmarks/results/demo_engines.json (the numbers there predate the
current demo world; rerun to refresh them).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "lightning_longrl.cli"]


def sh(args: list[str], log: Path) -> None:
    with log.open("w") as out:
        if subprocess.run(args, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT).returncode != 0:
            raise SystemExit(f"failed: {' '.join(args)} (log: {log})")


def evaluate(model: Path, out: Path) -> dict:
    """Held-out accuracy of the demo's test split (configs/demo/eval.yaml)."""
    sh([*CLI, "eval", "--config", "configs/demo/eval.yaml", "--model", str(model), "--output_dir", str(out),
        "--progress", "false"], out.with_suffix(".log"))
    return json.loads((out / "results.json").read_text())["metrics"]

SCALARS = ("reward/total_mean", "reward/accuracy_mean", "reward/format_mean", "response/length_mean",
           "rollout/logprob_diff_max", "time/rollout", "time/step")


def scalars(run: Path) -> dict[str, list[float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run))
    events.Reload()
    return {tag: [e.value for e in events.Scalars(tag)] for tag in SCALARS if tag in events.Tags()["scalars"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sft", type=Path, default=None, help="SFT export (default: runs/demo/sft/version_0/hf_model)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=ROOT / "runs" / "demo_engines")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "demo_engines.json")
    args = parser.parse_args()
    sft = args.sft or ROOT / "runs" / "demo" / "sft" / "version_0" / "hf_model"

    result = {"command": "python benchmarks/demo_engines.py " + " ".join(sys.argv[1:]), "sft": str(sft),
              "seed": args.seed, "engines": {}}
    for engine in ("policy", "vllm"):
        run = args.workdir / engine
        run.mkdir(parents=True, exist_ok=True)
        began = time.perf_counter()
        sh([*CLI, "fit", "--config", "configs/demo/grpo.yaml", "--seed_everything", str(args.seed),
            "--model.init_args.rollout_seed", str(args.seed), "--model.init_args.model.path", str(sft),
            "--model.init_args.rollout_engine", engine, "--trainer.logger.init_args.save_dir", str(run),
            "--trainer.logger.init_args.version", "0", "--trainer.default_root_dir", str(run / "grpo")], run / "grpo.log")
        seconds = time.perf_counter() - began
        version = run / "grpo" / "version_0"
        curves = scalars(version)
        steps = len(curves["reward/total_mean"])
        half = steps // 2
        summary = {
            "fit_seconds": seconds, "steps": steps,
            "rollout_seconds_median": statistics.median(curves["time/rollout"][1:]),
            "step_seconds_median": statistics.median(curves["time/step"][1:]),
            "logprob_diff_max": max(curves["rollout/logprob_diff_max"]),
            "eval": evaluate(version / "hf_model", run / "eval"),
        }
        for tag in ("reward/total_mean", "reward/accuracy_mean", "reward/format_mean", "response/length_mean"):
            summary[tag] = {"first_epoch": statistics.mean(curves[tag][:half]), "last_epoch": statistics.mean(curves[tag][half:])}
        result["engines"][engine] = {"summary": summary, "curves": curves}
        print(f"{engine}: {seconds:.0f} s, reward {summary['reward/total_mean']['first_epoch']:.3f} -> "
              f"{summary['reward/total_mean']['last_epoch']:.3f}, format {summary['reward/format_mean']['first_epoch']:.3f} -> "
              f"{summary['reward/format_mean']['last_epoch']:.3f}, held-out {100 * summary['eval']['accuracy']:.1f}%", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print("\n| engine | reward (first -> second half) | format | accuracy reward | held-out accuracy | max log-prob diff "
          "| rollout s/step | step s | fit s |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|")
    for engine, data in result["engines"].items():
        s = data["summary"]
        moves = [f"{s[t]['first_epoch']:.3f} -> {s[t]['last_epoch']:.3f}"
                 for t in ("reward/total_mean", "reward/format_mean", "reward/accuracy_mean")]
        print(f"| {engine} | {' | '.join(moves)} | {100 * s['eval']['accuracy']:.1f}% | {s['logprob_diff_max']:.1e} | "
              f"{s['rollout_seconds_median']:.2f} | {s['step_seconds_median']:.2f} | {s['fit_seconds']:.0f} |")
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
