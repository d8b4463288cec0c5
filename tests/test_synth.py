import hashlib
import json

import numpy as np
import pytest

from lightning_longrl.data.records import CATEGORIES, read_records
from lightning_longrl.data.video import FrameSampling, read_video
from lightning_longrl.synth.dataset import SPLITS, SynthConfig, generate_dataset
from lightning_longrl.synth.scenes import BALL_COLOR, FLASH_PALETTE, PALETTE, TASKS, make_question


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
    assert {s: manifest["counts"][s] for s in SPLITS} == {s: len(r) for s, r in records.items()}
    captions = read_records(synth_dir / "captions.jsonl")  # two descriptions of every train and rl video
    assert len(captions) == 2 * (len(records["train"]) + len(records["rl"])) == manifest["counts"]["captions"]
    assert {c.video for c in captions} == {r.video for r in records["train"] + records["rl"]}
    assert all(not c.is_multiple_choice and c.answer for c in captions)
    for r in records["train"]:
        assert r.answer in "ABCD"[: len(r.options)]
        assert r.reasoning.endswith(f"({r.answer}).")
        assert (synth_dir / r.video).is_file()


def test_generation_is_byte_identical_and_resumable(tmp_path):
    """Two generations with one seed, in parallel workers as by default, give the same bytes.

    Enough videos that an encoder-side nondeterminism (once seen in about 1 video in 50) shows."""
    config = dict(num_videos=40, duration=16.0, fps=2.0, workers=2)
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
    with pytest.raises(ValueError, match="cot_error_rate"):
        SynthConfig(cot_error_rate=1.5)
    with pytest.raises(ValueError, match="val_fraction"):
        SynthConfig(val_fraction=0.6, test_fraction=0.5)


def _nearest(pixel, palette):
    name, rgb = min(palette.items(), key=lambda kv: np.abs(np.array(kv[1]) - pixel).sum())
    return name if np.abs(np.array(rgb) - pixel).sum() < 90 else None


def _read(frame):
    """(scene colour, flash colour, ball side) read off one decoded frame, as a perfect watcher
    would: inside each quarter of the frame one colour (the scene's or the ball's black), and
    during the flash an outline of the flash's colour around every quarter."""
    h, w = frame.shape[:2]
    palette = {**PALETTE, **FLASH_PALETTE, "black": BALL_COLOR}
    inside, outlines = {}, []
    for row in (0, 1):
        for col in (0, 1):
            quarter = frame[row * h // 2 : (row + 1) * h // 2, col * w // 2 : (col + 1) * w // 2]
            inside[row, col] = _nearest(quarter[3:-3, 3:-3].reshape(-1, 3).mean(0), palette)
            outlines.append(_nearest(quarter[:2].reshape(-1, 3).mean(0), palette))  # the top strip
    dark = {side for side, cells in _SIDE_QUARTERS.items() if all(inside[c] == "black" for c in cells)}
    scene = [q for q in inside.values() if q in PALETTE]
    flash = [q for q in outlines if q in FLASH_PALETTE]
    return (scene[0] if scene else None), (flash[0] if flash else None), (dark.pop() if len(dark) == 1 else None)


_SIDE_QUARTERS = {"top": ((0, 0), (0, 1)), "right": ((0, 1), (1, 1)), "bottom": ((1, 0), (1, 1)), "left": ((0, 0), (1, 0))}


def _oracle(records, root, num_frames):
    """Answer every question from the sampled frames alone; the share answered right."""
    from collections import Counter

    correct = 0
    for r in records:
        clip = read_video(root / r.video, FrameSampling(num_frames=num_frames, max_pixels=28 * 28))
        seen = [_read(f) for f in clip.frames]
        scenes = [s for s, _, _ in seen if s is not None]
        sides = [b for _, _, b in seen if b is not None]
        flash = [(f, s) for s, f, _ in seen if f is not None]
        scene_runs = [c for i, c in enumerate(scenes) if i == 0 or scenes[i - 1] != c]
        side_runs = [c for i, c in enumerate(sides) if i == 0 or sides[i - 1] != c]
        task = r.extra["task"]
        if task == "scene_most":
            guess = Counter(scene_runs).most_common(1)[0][0]
        elif task == "scene_count":
            guess = str(scene_runs.count(scene_runs[0]))
        elif task == "ball_most":
            guess = Counter(side_runs).most_common(1)[0][0]
        elif task == "ball_end":
            guess = side_runs[-1]
        elif task == "flash_colour":
            guess = flash[0][0] if flash else None
        else:  # flash_scene: the scene beside the flash
            guess = flash[0][1] if flash else None
        correct += guess is not None and guess in r.options and "ABCD"[r.options.index(guess)] == r.answer
    return correct / len(records)


def test_answers_are_in_the_frames_and_more_frames_show_the_flash_longer(tmp_path):
    """A perfect watcher answers everything from the frames of a 64 s video. The 4 s flash sits
    inside one 8 s scene, so even 8 uniform frames (one in the middle of every scene) show it once;
    what more frames add is more frames of the flash: 1, 1, 2 and 4 at 8, 16, 32 and 64 frames,
    and unblended scenes (8 frames put two scenes in every merged token)."""
    config = SynthConfig(out_dir=str(tmp_path), num_videos=96, val_fraction=0.0, test_fraction=0.0, rl_fraction=0.0,
                         workers=0)
    generate_dataset(config, progress=False)
    records = read_records(tmp_path / "train.jsonl")
    assert _oracle(records, tmp_path, 128) == 1.0
    brief = [r for r in records if r.extra["task"] in ("flash_colour", "flash_scene")]
    assert _oracle(brief, tmp_path, 8) == 1.0
    flash_frames = {n: _flash_frames(records[:24], tmp_path, n) for n in (8, 16, 32, 64)}
    assert flash_frames == {8: 1, 16: 1, 32: 2, 64: 4}, flash_frames


def _flash_frames(records, root, num_frames) -> float:
    """Mean number of sampled frames that show the flash."""
    counts = []
    for r in records:
        clip = read_video(root / r.video, FrameSampling(num_frames=num_frames, max_pixels=28 * 28))
        counts.append(sum(_read(f)[1] is not None for f in clip.frames))
    return sum(counts) / len(counts)


@pytest.mark.parametrize("task", TASKS)
def test_answer_letters_are_balanced(task):
    """No task may make the option letter guessable: each letter is right 25% +- 10% of the time."""
    from collections import Counter

    rng = np.random.default_rng(0)
    questions = [make_question(rng, task, 64.0) for _ in range(400)]
    letters = Counter(q.answer for q in questions)
    assert set(letters) == set("ABCD")
    assert all(0.15 <= n / 400 <= 0.35 for n in letters.values()), letters
    for q in questions:  # the trace names the value and its letter; the teacher's slip is always wrong
        assert q.reasoning.endswith(f"{q.options['ABCD'.index(q.answer)]} ({q.answer}).")
        assert q.slip_answer != q.answer
        assert q.slip_reasoning.endswith(f"{q.options['ABCD'.index(q.slip_answer)]} ({q.slip_answer}).")


def test_imperfect_teacher_rewrites_only_training_traces(tmp_path):
    config = dict(num_videos=60, duration=16.0, fps=1.0, height=28, width=28, workers=0)
    clean = generate_dataset(SynthConfig(out_dir=str(tmp_path / "clean"), **config), progress=False)
    noisy = generate_dataset(SynthConfig(out_dir=str(tmp_path / "noisy"), cot_error_rate=0.5,
                                         cot_error_tasks=["scene_count", "ball_end"], **config), progress=False)
    assert clean["teacher_errors"] == 0 and clean["counts"] == noisy["counts"]
    for split in ("rl", "val", "test", "captions"):
        assert (tmp_path / "clean" / f"{split}.jsonl").read_text() == (tmp_path / "noisy" / f"{split}.jsonl").read_text()
    before = {r.id: r for r in read_records(tmp_path / "clean" / "train.jsonl")}
    slipped = [r for r in read_records(tmp_path / "noisy" / "train.jsonl") if r.extra.get("teacher_error")]
    assert len(slipped) == noisy["teacher_errors"] > 0
    for r in slipped:
        assert r.extra["task"] in ("scene_count", "ball_end")
        assert r.extra["verified_answer"] == before[r.id].answer != r.answer
        assert r.reasoning.endswith(f"({r.answer}).")
    tasks = [r.extra["task"] for r in before.values()]
    assert len(slipped) < tasks.count("scene_count") + tasks.count("ball_end")


def test_tiny_model_rotary_settings_are_validated_and_saved(tmp_path):
    import json as _json

    from lightning_longrl.synth.tiny_model import TinyModelSpec, create_tiny_checkpoint

    with pytest.raises(ValueError, match="mrope_section"):
        TinyModelSpec(hidden_size=128, num_heads=4, mrope_section=[8, 4, 2])
    path = create_tiny_checkpoint(tmp_path / "m", TinyModelSpec(rope_theta=1e4, mrope_section=[8, 4, 4]))
    text = _json.loads((path / "config.json").read_text())
    text = text.get("text_config", text)
    rope = text.get("rope_parameters") or text.get("rope_scaling") or {}
    assert rope.get("mrope_section") == [8, 4, 4]
    assert (rope.get("rope_theta") or text.get("rope_theta")) == 1e4


def test_image_and_text_questions_are_answered_by_their_media(tmp_path):
    """The demo's mixed share: every image question is answered from its pictures alone, every
    text-only one from its text; the two pictures of a pair differ; test stays video-only unless
    asked; answer letters are balanced."""
    from collections import Counter

    from lightning_longrl.data.image import read_image

    config = SynthConfig(out_dir=str(tmp_path / "a"), num_videos=10, duration=16.0, image_questions=40, text_questions=20,
                         workers=0)
    manifest = generate_dataset(config, progress=False)
    records = [r for split in SPLITS for r in read_records(tmp_path / "a" / f"{split}.jsonl")]
    stills = [r for r in records if r.video is None]
    assert len(stills) == 60 and not [r for r in read_records(tmp_path / "a" / "test.jsonl") if r.video is None]
    assert manifest["tasks"]["train"]["image_pair"] > 0
    sampling = FrameSampling(num_frames=1, max_pixels=28 * 28)
    for r in stills:
        task = r.extra["task"]
        if task == "text_scene_most":
            listed = r.question.split(": ")[1].split(". ")[0].split(", ")
            guess = Counter(listed).most_common(1)[0][0]
        else:
            seen = [_read(read_image(tmp_path / "a" / name, sampling)) for name in r.images]
            if task == "image_ball":
                guess = seen[0][2]
            else:
                assert len(seen) == 2 and seen[0][0] != seen[1][0], "the first picture must not give the answer away"
                guess = seen[1][0]
        assert "ABCD"[r.options.index(guess)] == r.answer, (r.id, guess)
    letters = Counter(r.answer for r in stills)
    assert set(letters) == set("ABCD") and max(letters.values()) <= 25
    both = generate_dataset(SynthConfig(**{**config.__dict__, "out_dir": str(tmp_path / "b"), "stills_in_test": True}),
                            progress=False)
    assert [r for r in read_records(tmp_path / "b" / "test.jsonl") if r.video is None] and both["counts"] != manifest["counts"]
