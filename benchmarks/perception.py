"""How well does a model *see* the synthetic videos? Field-by-field accuracy of its descriptions.

The demo's perception stage trains the random tiny model on dense descriptions
(``captions.jsonl``: "scenes: red, blue, ... ball: top, left, ... flash: a pink flash in the
green scene."). This script asks a model for the descriptions of the held-out test videos
(``captions_test.jsonl``) with ``lightning-longrl eval`` (greedy, direct mode) and scores each
field separately: every scene colour, every ball side, the flash's colour and the scene it falls
in (from the long description and from the flash-only one). It is how a change of the world or
of the perception recipe is measured before the whole pipeline runs.

Usage::

    python benchmarks/perception.py --model runs/demo/perception/version_0/hf_model \
        --data data/demo/captions_test.jsonl --out runs/perception_probe/seed0
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_SCENES = re.compile(r"scenes:\s*([^.]*)\.")
_BALL = re.compile(r"ball:\s*([^.]*)\.")
_FLASH = re.compile(r"flash:\s*an?\s+(\w+)\s+flash in the\s+(\w+)\s+scene")


def fields(text: str) -> dict[str, object]:
    """The description's fields (missing ones are None)."""
    out: dict[str, object] = {"scenes": None, "ball": None, "flash_colour": None, "flash_scene": None}
    if m := _SCENES.search(text):
        out["scenes"] = [s.strip() for s in m.group(1).split(",")]
    if m := _BALL.search(text):
        out["ball"] = [s.strip() for s in m.group(1).split(",")]
    if m := _FLASH.search(text):
        out["flash_colour"], out["flash_scene"] = m.group(1), m.group(2)
    return out


def score(predictions: Path, data: Path) -> dict[str, dict[str, float]]:
    """Accuracy (%) of every field, per description task (``describe``, ``describe_flash``)."""
    records = {r["id"]: r for r in map(json.loads, data.read_text().splitlines())}
    hits: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for row in map(json.loads, predictions.read_text().splitlines()):
        record = records[row["id"]]
        want, got = fields(record["answer"]), fields(row.get("response") or "")
        task = hits[record["task"]]
        for key in ("scenes", "ball"):
            if want[key] is None:
                continue
            pred = got[key] or []
            for i, value in enumerate(want[key]):
                task[f"{key}[{i}]"].append(i < len(pred) and pred[i] == value)
            task[key].append(pred == want[key])
        for key in ("flash_colour", "flash_scene"):
            task[key].append(got[key] == want[key])
    return {t: {k: round(100 * sum(v) / len(v), 1) for k, v in sorted(fs.items())} for t, fs in sorted(hits.items())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="Hugging Face folder of the model to ask")
    parser.add_argument("--data", default=str(REPO / "data/demo/captions_test.jsonl"))
    parser.add_argument("--out", required=True, help="folder for the eval run and perception.json")
    parser.add_argument("--limit", type=int, default=400, help="descriptions to ask for (both tasks together)")
    parser.add_argument("--num_frames", type=int, default=64)
    args = parser.parse_args()
    out = Path(args.out)
    cmd = [sys.executable, "-m", "lightning_longrl.cli", "eval", "--config", str(REPO / "configs/demo/eval.yaml"),
           "--model", args.model, "--data", args.data, "--output_dir", str(out / "eval"), "--think", "false",
           "--max_new_tokens", "80", "--num_frames", str(args.num_frames), "--limit", str(args.limit),
           "--progress", "false"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    result = score(out / "eval/predictions.jsonl", Path(args.data))
    (out / "perception.json").write_text(json.dumps({"model": args.model, "num_frames": args.num_frames,
                                                      "accuracy": result}, indent=2) + "\n")
    for task, accs in result.items():
        summary = {k: v for k, v in accs.items() if "[" not in k}
        print(task, json.dumps(summary))


if __name__ == "__main__":
    main()
