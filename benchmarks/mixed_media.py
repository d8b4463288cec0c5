"""Does the demo's mixed share teach image and text-only questions? Held-out accuracy per task.

Writes a held-out set of synthetic image and text-only questions (``lightning_longrl/synth/stills.py``;
a seed the demo's data never uses), then answers it with each given model through
``lightning-longrl eval`` (greedy, the demo's eval settings) and scores every task apart:
``image_ball`` (one picture), ``image_pair`` (two pictures), ``text_scene_most`` (no media).
Chance is 25% on every task. Comparing a model trained on the mixed data with one trained on
videos only shows what the mixed share adds; the video test set is ``benchmarks/learning.py``'s.

Usage::

    python benchmarks/mixed_media.py --models sft=runs/demo/sft/version_0/hf_model \
        grpo=runs/demo/grpo/version_0/hf_model --out benchmarks/results/mixed_media.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def held_out_set(folder: Path, image_questions: int, text_questions: int, seed: int) -> Path:
    """Every image and text-only question of a synthetic set with ``seed``, in one JSONL file."""
    sys.path.insert(0, str(REPO))
    from lightning_longrl.synth.dataset import SPLITS, SynthConfig, generate_dataset

    config = SynthConfig(out_dir=str(folder), num_videos=1, image_questions=image_questions,
                         text_questions=text_questions, stills_in_test=True, seed=seed, workers=0)
    generate_dataset(config, progress=False)
    rows = [line for split in SPLITS for line in (folder / f"{split}.jsonl").read_text().splitlines()
            if '"video"' not in line]
    out = folder / "stills.jsonl"
    out.write_text("\n".join(rows) + "\n")
    return out


def score(model: str, data: Path, out: Path) -> dict:
    """Accuracy (%) per task and overall, and the share of well-formed responses, of one model."""
    began = time.perf_counter()
    subprocess.run([sys.executable, "-m", "lightning_longrl.cli", "eval", "--config", str(REPO / "configs/demo/eval.yaml"),
                    "--data", str(data), "--model", model, "--output_dir", str(out), "--progress", "false"],
                   check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    tasks = {json.loads(line)["id"]: json.loads(line)["task"] for line in data.read_text().splitlines()}
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    per_task: dict[str, list[bool]] = defaultdict(list)
    for row in rows:
        per_task[tasks[row["id"]]].append(bool(row["correct"]))
    result = {task: round(100 * sum(v) / len(v), 1) for task, v in sorted(per_task.items())}
    result["overall"] = round(100 * sum(bool(r["correct"]) for r in rows) / len(rows), 1)
    result["well_formed"] = round(100 * sum(bool(r["well_formed"]) for r in rows) / len(rows), 1)
    result["questions"] = len(rows)
    result["seconds"] = round(time.perf_counter() - began, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", required=True, help="NAME=HF_FOLDER pairs")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/mixed_media.json")
    parser.add_argument("--work", type=Path, default=REPO / "runs/mixed_media")
    parser.add_argument("--image-questions", type=int, default=200)
    parser.add_argument("--text-questions", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1000, help="data seed (the demo's use 0, 1, 2)")
    args = parser.parse_args()
    data = held_out_set(args.work / "data", args.image_questions, args.text_questions, args.seed)
    results = {}
    for pair in args.models:
        name, _, model = pair.partition("=")
        results[name] = {"model": model, **score(model, data, args.work / "eval" / name)}
        print(name, json.dumps({k: v for k, v in results[name].items() if k != "model"}), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"data": {"seed": args.seed, "image_questions": args.image_questions,
                                             "text_questions": args.text_questions}, "models": results}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
