"""Does the pipeline learn? The paper's Table 4 and Figure 8 at toy scale, over several seeds.

Runs ``scripts/demo.sh --seed N --control`` for every seed (the demo's whole pipeline plus the
extra-SFT control), then collects, per seed and as a mean over seeds:

* held-out accuracy (overall, per category, per synthetic task) and answer-letter shares of the
  base model, SFT, GRPO only (from the base model), SFT+GRPO and SFT continued for as many steps
  as GRPO took;
* accuracy against 8 / 16 / 32 / 64 frames for SFT and SFT+GRPO;
* the issue's targets, each marked met or not.

Usage (about 12 minutes per seed on 2 cores)::

    python benchmarks/learning.py                      # seeds 0 1 2 -> benchmarks/results/learning.json
    python benchmarks/learning.py --seeds 0 --reuse    # collect finished runs without rerunning them
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODELS = {  # row name -> results.json below the seed's runs folder
    "Base model": "eval/base/results.json",
    "SFT": "eval/sft_frames/frames_64/results.json",
    "GRPO only": "eval/grpo_only/results.json",
    "SFT+GRPO": "eval/grpo_frames/frames_64/results.json",
    "SFT, extra steps (control)": "eval/sft_control/results.json",
}
FRAMES = {"SFT": "eval/sft_frames/frame_scaling.json", "SFT+GRPO": "eval/grpo_frames/frame_scaling.json"}


def runs_dir(seed: int) -> Path:
    return REPO / ("runs/demo" if seed == 0 else f"runs/demo-seed{seed}")


def data_dir(seed: int) -> Path:
    return REPO / ("data/demo" if seed == 0 else f"data/demo-seed{seed}")


def model_summary(results: Path, test_file: Path) -> dict:
    """Accuracy overall / per category / per task, and the share of each predicted letter."""
    metrics = json.loads(results.read_text())["metrics"]
    tasks = {json.loads(line)["id"]: json.loads(line).get("task") for line in test_file.read_text().splitlines()}
    rows = [json.loads(line) for line in results.with_name("predictions.jsonl").read_text().splitlines() if line]
    per_task: dict[str, list[bool]] = defaultdict(list)
    for r in rows:
        per_task[tasks.get(r["id"], "?")].append(bool(r["correct"]))
    letters = Counter(r.get("prediction") or "none" for r in rows)
    return {
        "accuracy": 100 * metrics["accuracy"],
        "format_rate": 100 * metrics["format_rate"],
        "categories": {k.split("/", 1)[1]: 100 * v for k, v in metrics.items() if k.startswith("accuracy/")},
        "tasks": {t: 100 * sum(v) / len(v) for t, v in sorted(per_task.items())},
        "letter_shares": {k: 100 * n / len(rows) for k, n in sorted(letters.items())},
        "questions": len(rows),
    }


def collect(seed: int) -> dict:
    root, test = runs_dir(seed), data_dir(seed) / "test.jsonl"
    out = {"models": {}, "frames": {}}
    for name, rel in MODELS.items():
        if (root / rel).is_file():
            out["models"][name] = model_summary(root / rel, test)
    for name, rel in FRAMES.items():
        if (root / rel).is_file():
            study = json.loads((root / rel).read_text())
            out["frames"][name] = dict(zip(map(str, study["frames"]), study["accuracy_percent"]["Overall"]))
    return out


def mean_std(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "per_seed": values}


def summarise(per_seed: dict[int, dict]) -> dict:
    seeds = sorted(per_seed)
    acc = {m: mean_std([per_seed[s]["models"][m]["accuracy"] for s in seeds])
           for m in MODELS if all(m in per_seed[s]["models"] for s in seeds)}
    frames = {}
    for m in FRAMES:
        if all(m in per_seed[s]["frames"] for s in seeds):
            counts = list(per_seed[seeds[0]]["frames"][m])
            frames[m] = {n: mean_std([per_seed[s]["frames"][m][n] for s in seeds]) for n in counts}
    targets = {}
    if {"SFT", "SFT+GRPO"} <= set(acc):
        sft, rl = acc["SFT"], acc["SFT+GRPO"]
        targets["SFT mean >= 45%"] = sft["mean"] >= 45
        targets["SFT+GRPO >= SFT + 10 points (mean)"] = rl["mean"] - sft["mean"] >= 10
        targets["SFT+GRPO > SFT in every seed"] = all(b > a for a, b in zip(sft["per_seed"], rl["per_seed"]))
        if "SFT, extra steps (control)" in acc:
            targets["SFT+GRPO > extra-SFT control (mean)"] = rl["mean"] > acc["SFT, extra steps (control)"]["mean"]
        if "GRPO only" in acc:
            targets["GRPO only < SFT+GRPO (mean)"] = acc["GRPO only"]["mean"] < rl["mean"]
    if "SFT+GRPO" in frames:
        curve = [frames["SFT+GRPO"][n]["mean"] for n in sorted(frames["SFT+GRPO"], key=int)]
        targets["SFT+GRPO rises at every frame step"] = all(b > a for a, b in zip(curve, curve[1:]))
        targets["SFT+GRPO gains >= 15 points from fewest to most frames"] = curve[-1] - curve[0] >= 15
    shares = [max(v for k, v in model["letter_shares"].items() if k != "none")
              for s in seeds for model in per_seed[s]["models"].values()
              if any(k != "none" for k in model["letter_shares"])]  # models that answered with letters
    targets["no letter above 40% of any model's predictions"] = bool(shares) and max(shares) <= 40
    return {"accuracy": acc, "frames": frames, "targets": targets}


def markdown(summary: dict) -> str:
    lines = ["| Model | Mean accuracy (%) | Std | Per seed |", "|---|---:|---:|---|"]
    for name, v in summary["accuracy"].items():
        lines.append(f"| {name} | {v['mean']:.1f} | {v['std']:.1f} | {', '.join(f'{x:.1f}' for x in v['per_seed'])} |")
    for name, points in summary["frames"].items():
        lines.append("")
        lines.append(f"{name}: " + ", ".join(f"{n} frames {p['mean']:.1f}" for n, p in points.items()))
    lines.append("")
    lines += [f"- [{'x' if ok else ' '}] {target}" for target, ok in summary["targets"].items()]
    return "\n".join(lines)


def machine() -> dict:
    """Where the numbers were measured: same-seed runs repeat exactly on one machine, but another
    CPU (other vector kernels, other rounding) trains to different weights and moves the table
    about as much as another seed does."""
    import os
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def _earlier_minutes(out: Path) -> dict:
    """Run times of seeds a ``--reuse`` collects again (kept from the file it rewrites)."""
    with contextlib.suppress(OSError, ValueError):
        return {str(k): v for k, v in json.loads(out.read_text()).get("minutes_per_seed", {}).items()}
    return {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--reuse", action="store_true", help="collect finished runs; run only seeds without results")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/learning.json"))
    args = parser.parse_args()
    per_seed, minutes = {}, _earlier_minutes(Path(args.out)) if args.reuse else {}
    for seed in args.seeds:
        done = all((runs_dir(seed) / rel).is_file() for rel in [*MODELS.values(), *FRAMES.values()])
        if not (args.reuse and done):
            log = REPO / f"runs/learning-seed{seed}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            print(f"seed {seed}: scripts/demo.sh --seed {seed} --control  (log: {log})", flush=True)
            start = time.time()
            with log.open("w") as f:
                code = subprocess.call([str(REPO / "scripts/demo.sh"), "--seed", str(seed), "--control"],
                                       stdout=f, stderr=subprocess.STDOUT, cwd=REPO)
            minutes[str(seed)] = round((time.time() - start) / 60, 2)
            if code:
                sys.exit(f"seed {seed}: the demo failed (exit {code}); see {log}")
        per_seed[seed] = collect(seed)
    summary = summarise(per_seed)
    result = {"seeds": args.seeds, "machine": machine(), "minutes_per_seed": {s: minutes[s] for s in map(str, args.seeds) if s in minutes},
              "per_seed": per_seed, **summary}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    if summary["frames"]:  # the Figure-8 shape over the seeds' mean: SFT+GRPO red, SFT grey
        from lightning_longrl.report import frame_scaling_figure

        runs = [(name, {int(n): p["mean"] for n, p in summary["frames"][name].items()})
                for name in ("SFT+GRPO", "SFT") if name in summary["frames"]]
        png, _ = frame_scaling_figure(runs, Path(args.out).with_suffix("").as_posix() + "_frames",
                                      title=f"Accuracy against input frames, mean of {len(args.seeds)} seeds")
        print(f"figure: {png}")
    print(markdown(summary))
    print(f"\nwritten: {args.out}")


if __name__ == "__main__":
    main()
