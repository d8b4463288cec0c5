import hashlib
import json

import numpy as np
import pytest

from lightning_longrl.data.records import CATEGORIES, read_records
from lightning_longrl.data.video import FrameSampling, read_video
from lightning_longrl.synth.dataset import SPLITS, SynthConfig, generate_dataset
from lightning_longrl.synth.scenes import COLORS


def _digest(folder):
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != "manifest.json":
            out[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def test_splits_are_disjoint_complete_and_cover_all_categories(synth_dir):
    records = {split: read_records(synth_dir / f"{split}.jsonl") for split in SPLITS}
    ids = [r.id for rs in records.values() for r in rs]
    assert len(ids) == len(set(ids)) == 20
    videos = [r.video for rs in records.values() for r in rs]
    assert len(set(videos)) == 20  # one question per video, so no video is in two splits
    assert {r.category for rs in records.values() for r in rs} == set(CATEGORIES)
    manifest = json.loads((synth_dir / "manifest.json").read_text())
    assert manifest["counts"] == {s: len(r) for s, r in records.items()}
    for r in records["train"]:
        assert r.answer in "ABCD"[: len(r.options)]
        assert r.reasoning and "video" in r.reasoning
        assert (synth_dir / r.video).is_file()


def test_generation_is_deterministic_and_resumable(tmp_path):
    config = dict(num_videos=6, duration=8.0, fps=4.0, height=32, width=32, workers=0)
    a = generate_dataset(SynthConfig(out_dir=str(tmp_path / "a"), **config), progress=False)
    b = generate_dataset(SynthConfig(out_dir=str(tmp_path / "b"), **config), progress=False)
    assert a == {**b, "config": {**b["config"], "out_dir": a["config"]["out_dir"]}}
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    # an interrupted run (a video and the JSONL missing) is completed by rerunning
    (tmp_path / "a" / "manifest.json").unlink()
    (tmp_path / "a" / "train.jsonl").unlink()
    next((tmp_path / "a" / "videos").glob("*.mp4")).unlink()
    generate_dataset(SynthConfig(out_dir=str(tmp_path / "a"), **config), progress=False)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    other = generate_dataset(SynthConfig(out_dir=str(tmp_path / "c"), **{**config, "seed": 1}), progress=False)
    assert _digest(tmp_path / "c") != _digest(tmp_path / "b") and other["counts"] == a["counts"]


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="unknown synthetic task"):
        SynthConfig(tasks=["juggling"])
    with pytest.raises(ValueError, match="val_fraction"):
        SynthConfig(val_fraction=0.6, test_fraction=0.5)


def _centre_colour(frame):
    h, w = frame.shape[:2]
    patch = frame[h // 2 - 2 : h // 2 + 2, w // 2 - 2 : w // 2 + 2].reshape(-1, 3).mean(0)
    name, rgb = min(COLORS.items(), key=lambda kv: np.abs(np.array(kv[1]) - patch).sum())
    return name if np.abs(np.array(rgb) - patch).sum() < 90 else None


def _oracle(records, root, num_frames):
    """Answer from the sampled frames alone, the way a perfect watcher would."""
    correct = 0
    for r in records:
        clip = read_video(root / r.video, FrameSampling(num_frames=num_frames, max_pixels=64 * 64))
        seen = [_centre_colour(f) for f in clip.frames]
        runs = [c for i, c in enumerate(seen) if c is not None and (i == 0 or seen[i - 1] != c)]
        if r.extra["task"] == "blink_count":
            guess = str(len(runs))
        else:  # flash_order: order of distinct colours
            order = list(dict.fromkeys(runs))
            q = r.question
            if "first" in q:
                guess = order[0] if order else None
            elif "last" in q:
                guess = order[-1] if order else None
            else:
                prev = q.split("the ")[-1].split(" one")[0]
                guess = order[order.index(prev) + 1] if prev in order[:-1] else None
        correct += guess is not None and guess in r.options and "ABCD"[r.options.index(guess)] == r.answer
    return correct / len(records)


def test_brief_events_make_accuracy_grow_with_frames(tmp_path):
    config = SynthConfig(out_dir=str(tmp_path), num_videos=30, duration=32.0, fps=8.0, height=64, width=64,
                         tasks=["blink_count", "flash_order"], val_fraction=0.0, test_fraction=0.0, workers=0)
    generate_dataset(config, progress=False)
    records = read_records(tmp_path / "train.jsonl")
    accuracy = {n: _oracle(records, tmp_path, n) for n in (8, 32, 256)}
    assert accuracy[256] == 1.0  # every answer is in the video
    assert accuracy[8] < accuracy[32] < accuracy[256]
    assert accuracy[8] < 0.6


@pytest.mark.parametrize("task", sorted(__import__("lightning_longrl.synth.scenes", fromlist=["TASKS"]).TASKS))
def test_answer_letters_are_balanced(task):
    """No task may make the option letter guessable: each letter is right 25% +- 10% of the time."""
    from collections import Counter

    from lightning_longrl.synth.scenes import TASKS

    rng = np.random.default_rng(0)
    letters = Counter(TASKS[task](rng, 64.0, 2.0).answer for _ in range(400))
    assert set(letters) == set("ABCD")
    assert all(0.15 <= n / 400 <= 0.35 for n in letters.values()), letters
