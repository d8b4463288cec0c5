"""The demo pipeline (CoT-SFT, then GRPO) over several seeds: held-out accuracy with mean and spread.

For each seed: `fit` configs/demo/sft.yaml, `predict` the test split with its export, `fit`
configs/demo/grpo.yaml from that export, `predict` again. Besides accuracy (overall and per
category) it reports how the predicted option letters are spread, which tells a model that reads
the video from one that repeats a letter.

    .venv/bin/python benchmarks/demo_seeds.py                  # seeds 0 1 2, ~10 min on 2 cores
    .venv/bin/python benchmarks/demo_seeds.py --seeds 0 --grpo-args --trainer.max_epochs 4

Needs the demo data and checkpoint (scripts/demo.sh makes them). Results go to
benchmarks/results/demo_seeds.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "lightning_longrl.cli"]


def sh(args: list[str], log: Path) -> None:
    with log.open("w") as out:
        if subprocess.run(args, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT).returncode != 0:
            raise SystemExit(f"failed: {' '.join(args)} (log: {log})")


def latest(folder: Path) -> Path:
    return max(folder.glob("version_*"), key=lambda p: int(p.name.split("_")[1]))


def predict(model: Path, out: Path) -> dict:
    sh([*CLI, "predict", "--config", "configs/demo/grpo.yaml", "--trainer.logger", "false",
        "--trainer.default_root_dir", str(out), "--model.init_args.model.path", str(model),
        "--trainer.callbacks+=lightning_longrl.callbacks.JSONLPredictionWriter"], out.with_suffix(".log"))
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    by_category: dict[str, list[bool]] = {}
    for r in rows:
        by_category.setdefault(r["category"], []).append(r["correct"])
    return {
        "accuracy": sum(r["correct"] for r in rows) / len(rows),
        "per_category": {k: sum(v) / len(v) for k, v in sorted(by_category.items())},
        "predicted_letters": dict(sorted(Counter(str(r["prediction"]) for r in rows).items())),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--workdir", type=Path, default=ROOT / "runs" / "demo_seeds")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "demo_seeds.json")
    parser.add_argument("--sft-args", nargs=argparse.REMAINDER, default=[])
    parser.add_argument("--grpo-args", nargs=argparse.REMAINDER, default=[])
    args = parser.parse_args()

    test_rows = [json.loads(line) for line in (ROOT / "data/synth/test.jsonl").read_text().splitlines()]
    letters = Counter(r["answer"] for r in test_rows)
    result = {"command": "python benchmarks/demo_seeds.py " + " ".join(sys.argv[1:]), "test_questions": len(test_rows),
              "test_answer_letters": dict(sorted(letters.items())),
              "majority_letter_accuracy": max(letters.values()) / len(test_rows), "seeds": {}}
    for seed in args.seeds:
        run = args.workdir / f"seed{seed}"
        run.mkdir(parents=True, exist_ok=True)
        sh([*CLI, "fit", "--config", "configs/demo/sft.yaml", "--seed_everything", str(seed),
            "--trainer.logger.init_args.save_dir", str(run), "--trainer.default_root_dir", str(run / "sft"),
            *args.sft_args], run / "sft.log")
        sft = latest(run / "sft") / "hf_model"
        sft_eval = predict(sft, run / "eval_sft")
        sh([*CLI, "fit", "--config", "configs/demo/grpo.yaml", "--seed_everything", str(seed),
            "--model.init_args.rollout_seed", str(seed), "--model.init_args.model.path", str(sft),
            "--trainer.logger.init_args.save_dir", str(run), "--trainer.default_root_dir", str(run / "grpo"),
            *args.grpo_args], run / "grpo.log")
        grpo_eval = predict(latest(run / "grpo") / "hf_model", run / "eval_grpo")
        result["seeds"][str(seed)] = {"sft": sft_eval, "grpo": grpo_eval}
        print(f"seed {seed}: SFT {100 * sft_eval['accuracy']:.1f}% {sft_eval['predicted_letters']}  "
              f"SFT+GRPO {100 * grpo_eval['accuracy']:.1f}% {grpo_eval['predicted_letters']}", flush=True)
    for stage in ("sft", "grpo"):
        values = [100 * s[stage]["accuracy"] for s in result["seeds"].values()]
        result[f"{stage}_mean"] = statistics.mean(values)
        result[f"{stage}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nheld-out accuracy over seeds {args.seeds}: SFT {result['sft_mean']:.1f} +- {result['sft_std']:.1f}%, "
          f"SFT+GRPO {result['grpo_mean']:.1f} +- {result['grpo_std']:.1f}% "
          f"(always answering the commonest letter: {100 * result['majority_letter_accuracy']:.1f}%)")


if __name__ == "__main__":
    main()
