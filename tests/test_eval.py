"""Evaluation: benchmark formats, scoring of hand-made responses, metrics aggregated over ranks,
`lightning-longrl eval` end to end with the tiny model (resume, unreadable videos, the vLLM
engine) and the frame-scaling study."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from lightning_longrl.data.prompts import format_question
from lightning_longrl.data.records import RecordError
from lightning_longrl.eval.formats import category_order, load_benchmark
from lightning_longrl.eval.runner import PREDICTIONS, EvalConfig, evaluate, score_predictions
from lightning_longrl.inference.answers import prediction_row

from helpers import free_port

HERE = Path(__file__).parent

VIDEOMME_ROWS = [
    {"video_id": "001", "duration": "short", "domain": "Knowledge", "sub_category": "Humanity & History",
     "url": "https://www.youtube.com/watch?v=fFjv93ACGo8", "videoID": "fFjv93ACGo8", "question_id": "001-1",
     "task_type": "Counting Problem", "question": "When demonstrating the Germany modern Christmas tree is initially "
     "decorated with apples, candles and berries, which kind of the decoration has the largest number?",
     "options": ["A. Apples.", "B. Candles.", "C. Berries.", "D. The three kinds are of the same number."],
     "answer": "C"},
    {"video_id": "301", "duration": "long", "domain": "Sports", "sub_category": "Football", "videoID": "abcdefghijk",
     "question_id": "301-2", "task_type": "Action Reasoning", "question": "Why does the referee stop the game?",
     "options": ["A. A foul.", "B. Rain.", "C. An injury.", "D. Half time."], "answer": "A"},
]
SRT = ("1\n00:00:01,000 --> 00:00:03,500\n<font color=\"#fff\">Apples go on first.</font>\n\n"
       "2\n00:01:02,250 --> 00:01:04,000\nThen candles.\n")


def _write(path: Path, rows, jsonl: bool = False) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n" if jsonl else json.dumps(rows))
    return path


def test_videomme_rows_with_subtitles(tmp_path):
    subs = tmp_path / "subtitle"
    subs.mkdir()
    (subs / "fFjv93ACGo8.srt").write_text(SRT)
    records = load_benchmark(_write(tmp_path / "videomme.json", VIDEOMME_ROWS), "auto", subtitles_dir=subs)
    first, second = records
    assert first.id == "001-1" and first.video == "fFjv93ACGo8.mp4" and first.category == "Short"
    assert first.options == ("Apples.", "Candles.", "Berries.", "The three kinds are of the same number.")
    assert first.answer == "C" and first.extra["task_type"] == "Counting Problem"
    assert [s.text for s in first.subtitles] == ["Apples go on first.", "Then candles."]
    assert first.subtitles[1].start == pytest.approx(62.25) and first.subtitles[1].end == pytest.approx(64.0)
    assert second.subtitles == () and second.category == "Long"
    assert category_order(records) == ["Short", "Long"]
    prompt = format_question(first, think=True, include_subtitles=True)
    assert "[62.2s-64.0s] Then candles." in prompt and "C. Berries." in prompt
    assert "Apples go on first" not in format_question(first, think=True, include_subtitles=False)


def test_benchmark_errors_name_the_file_row_and_field(tmp_path):
    bad = [dict(VIDEOMME_ROWS[0]), {k: v for k, v in VIDEOMME_ROWS[1].items() if k != "options"}]
    with pytest.raises(RecordError, match=r"videomme.json:2: field 'options'"):
        load_benchmark(_write(tmp_path / "videomme.json", bad), "videomme")
    wrong_letter = [dict(VIDEOMME_ROWS[0], answer="F")]
    with pytest.raises(RecordError, match=r"videomme.json:1: field 'answer'"):
        load_benchmark(_write(tmp_path / "videomme.json", wrong_letter), "videomme")
    with pytest.raises(FileNotFoundError, match="missing.json"):
        load_benchmark(tmp_path / "missing.json")


def test_longvideo_reason_rows(tmp_path):
    rows = [
        {"videos": ["longvila_videos/a.mp4"], "problem": "Why does she open the door?\nA. To leave\nB. To let the dog in"
         "\nC. To get the mail", "answer": "<answer>B</answer>", "type": "Goal & Purpose", "id": "q1"},
        {"video": "b.mp4", "question": "Where is the cup?", "options": ["on the table", "in the sink"], "answer": "A",
         "question_type": "spatial reasoning", "id": "q2"},
        {"video": "c.mp4", "question": "What happens first?", "options": ["x", "y"], "answer": "B", "id": "q3"},
    ]
    records = load_benchmark(_write(tmp_path / "lvr.jsonl", rows, jsonl=True), "longvideo_reason")
    assert [r.category for r in records] == ["Goal and Purpose", "Spatial", None]
    assert records[0].options == ("To leave", "To let the dog in", "To get the mail") and records[0].answer == "B"
    assert category_order(records) == ["Goal and Purpose", "Spatial", "Other"]
    verdicts = [(prediction_row(r, t)["correct"], prediction_row(r, t)["well_formed"]) for r, t in [
        (records[0], "<think>The dog waits outside.</think><answer>B</answer>"),
        (records[0], "<think>...</think><answer>to let the dog in</answer>"),
        (records[0], "<think>...</think><answer>A</answer>"),
        (records[1], "<answer>A</answer>"),
    ]]
    assert verdicts == [(True, True), (True, True), (False, True), (True, False)]
    rows = [prediction_row(records[0], "<think>.</think><answer>B</answer>"), prediction_row(records[1], "nothing"),
            prediction_row(records[2], "<think>.</think><answer>B</answer>")]
    metrics = score_predictions(rows, records, category_order(records))
    assert metrics["accuracy/Goal and Purpose"] == 1.0 and metrics["accuracy/Spatial"] == 0.0
    assert metrics["accuracy/Other"] == 1.0 and metrics["accuracy"] == pytest.approx(2 / 3)


def test_scoring_hand_made_responses(tmp_path):
    """Reasoning mode and direct mode, right, wrong and malformed responses, three formats: the
    per-row verdicts and the aggregated metrics are what a person would count."""
    videomme = load_benchmark(_write(tmp_path / "videomme.json", VIDEOMME_ROWS))
    short, long_ = videomme
    think_cases = [  # (record, response, correct, well formed)
        (short, "<think>I count the berries.</think><answer>C</answer>", True, True),
        (short, "<think>...</think><answer>Berries.</answer>", True, True),       # the option's text
        (short, "<think>...</think><answer>C. Berries.</answer>", True, True),    # letter and text
        (short, "<think>...</think><answer>B or C</answer>", False, True),        # a hedge names no option
        (short, "<answer>C</answer>", True, False),                                # no reasoning block
        (long_, "<think>unclosed <answer>A</answer>", True, False),
        (long_, "The referee stops it for a foul.", False, False),                 # no tags at all
        (long_, "<think>...</think><answer>A</answer><answer>B</answer>", False, False),
        (long_, "<think>...</think><answer>D</answer>", False, True),
        (long_, "", False, False),
    ]
    records = [dataclasses.replace(record, id=f"{record.id}#{i}") for i, (record, *_) in enumerate(think_cases)]
    rows = []
    for record, (_, response, correct, formed) in zip(records, think_cases):
        row = prediction_row(record, response)
        assert (row["correct"], row["well_formed"]) == (correct, formed), response
        rows.append(row)
    metrics = score_predictions(rows, records, ["Short", "Long"])
    assert metrics["accuracy/Short"] == pytest.approx(4 / 5) and metrics["accuracy/Long"] == pytest.approx(1 / 5)
    assert metrics["accuracy"] == pytest.approx(5 / 10) and metrics["format_rate"] == pytest.approx(5 / 10)
    # direct answering: a bare letter or option text counts, the tags alone are the format
    direct = [("<answer>C</answer>", True, True), ("C", True, False), ("Berries", True, False),
              ("<think>x</think><answer>C</answer>", True, False), ("<answer></answer>", False, False)]
    for response, correct, formed in direct:
        row = prediction_row(short, response, think=False)
        assert (row["correct"], row["well_formed"]) == (correct, formed), response
    # open-ended answers (project JSONL): normalised text and numbers
    open_ended = load_benchmark(_write(tmp_path / "open.jsonl", [
        {"id": "n", "video": "v.mp4", "question": "How many cups?", "answer": "3", "category": "Spatial"}], jsonl=True))[0]
    assert prediction_row(open_ended, "<think>...</think><answer>3.0</answer>")["correct"]
    assert not prediction_row(open_ended, "<think>...</think><answer>4</answer>")["correct"]
    # unreadable videos count as wrong overall and are reported
    unreadable = {"id": "u", "correct": False, "well_formed": False, "unreadable": True}
    records.append(dataclasses.replace(short, id="u"))
    metrics = score_predictions([*rows, unreadable], records, ["Short", "Long"])
    assert metrics["unreadable"] == 1 and metrics["accuracy"] == pytest.approx(5 / 11)
    assert metrics["format_rate"] == pytest.approx(5 / 10), "format is rated over answered questions only"


@pytest.mark.slow
def test_metrics_aggregate_across_two_processes(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
         "--master_port", str(free_port()), str(HERE / "eval_metrics_check.py")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [r["local_rows"] for r in rows] == [4, 3], "each rank must hold only its share"
    for r in rows:
        assert r["distributed"] == pytest.approx(r["single"])
        assert r["single"]["questions"] == 10 and r["single"]["unreadable"] == 3


def _config(tmp_path: Path, model: Path, data: Path, **kw) -> EvalConfig:
    defaults = dict(model=str(model), data=str(data), output_dir=str(tmp_path / "eval"), num_frames=8,
                    max_pixels=56 * 56, max_new_tokens=24, batch_size=2, num_workers=0, progress=False)
    return EvalConfig(**{**defaults, **kw})


def test_eval_end_to_end_resumes_and_counts_unreadable_videos(tmp_path, tiny_checkpoints, synth_dir):
    """Synthetic benchmark plus one missing and one corrupt video: every question gets a row,
    the unreadable ones are counted; an interrupted run (a lost batch and a line cut short)
    resumes by answering only what is missing, with the same results."""
    rows = [json.loads(line) for line in (synth_dir / "test.jsonl").read_text().splitlines()]
    assert len(rows) == 4
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00not a video" * 100)
    rows += [dict(rows[0], id="missing", video="videos/does-not-exist.mp4"), dict(rows[1], id="corrupt", video=str(corrupt))]
    data = _write(tmp_path / "bench.jsonl", rows, jsonl=True)
    config = _config(tmp_path, tiny_checkpoints["qwen2_5_vl"], data, video_root=str(synth_dir))
    first = evaluate(config)
    out = Path(config.output_dir)
    predictions = (out / PREDICTIONS).read_text().splitlines()
    assert len(predictions) == 6 and first.answered_now == 6
    assert first.metrics["questions"] == 6 and first.metrics["unreadable"] == 2
    by_id = {json.loads(p)["id"]: json.loads(p) for p in predictions}
    assert by_id["missing"]["unreadable"] and "not found" in by_id["missing"]["error"]
    assert by_id["corrupt"]["unreadable"]
    assert all(by_id[r["id"]]["frames"] == 8 for r in rows[:4])
    saved = json.loads((out / "results.json").read_text())
    assert saved["metrics"] == pytest.approx(first.metrics)
    assert "| Overall | Format | Unreadable |" in (out / "results.md").read_text()
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))

    # interrupted: the last two answered rows lost, and a line cut short by the crash
    kept = [p for p in predictions if json.loads(p)["id"] not in (rows[2]["id"], rows[3]["id"])]
    (out / PREDICTIONS).write_text("\n".join(kept) + "\n" + predictions[-1][:20])
    second = evaluate(config)
    assert second.answered_now == 4, "the two lost answers, and the two unreadable videos tried again"
    assert second.metrics == pytest.approx(first.metrics), "greedy answers must not change on resume"
    rows_now = (out / PREDICTIONS).read_text().splitlines()
    again = evaluate(config)
    assert again.answered_now == 2, "only the unreadable videos are tried again"
    assert len((out / PREDICTIONS).read_text().splitlines()) == len(rows_now) + 2
    # once the video is readable, its question is answered and counted like any other
    (tmp_path / "corrupt.mp4").write_bytes((synth_dir / rows[1]["video"]).read_bytes())
    fixed = evaluate(config)
    assert fixed.answered_now == 2 and fixed.metrics["unreadable"] == 1 and fixed.metrics["questions"] == 6


@pytest.mark.slow
def test_eval_cli_with_vllm_matches_the_policy_engine(tmp_path, tiny_checkpoints, synth_dir):
    """The same greedy answers from both engines (vLLM fed the cached video embeddings), through
    the command line; vLLM runs in its own process (it pins the threads of its process)."""
    outputs = {}
    for engine in ("policy", "vllm"):
        out = tmp_path / engine
        proc = subprocess.run(
            [sys.executable, "-m", "lightning_longrl.cli", "eval", "--model", str(tiny_checkpoints["qwen2_5_vl"]),
             "--data", str(synth_dir / "test.jsonl"), "--output_dir", str(out), "--limit", "4", "--num_frames", "8",
             "--max_pixels", str(56 * 56), "--max_new_tokens", "16", "--batch_size", "2", "--num_workers", "0",
             "--engine", {"policy": "PolicyRolloutEngine", "vllm": "VLLMRolloutEngine"}[engine], "--progress", "false"],
            capture_output=True, text=True, timeout=600, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-4000:]
        assert "| Overall | Format | Unreadable |" in proc.stdout
        outputs[engine] = {json.loads(line)["id"]: json.loads(line)["response"]
                           for line in (out / PREDICTIONS).read_text().splitlines()}
    assert len(outputs["policy"]) == 4
    assert outputs["vllm"] == outputs["policy"]
    assert any(outputs["policy"].values()), "the responses must not all be empty for the comparison to mean anything"


def test_frame_scaling_study_writes_table_and_plot(tmp_path, tiny_checkpoints, synth_dir):
    from PIL import Image

    from lightning_longrl.eval.frame_scaling import frame_scaling

    config = _config(tmp_path, tiny_checkpoints["qwen2_5_vl"], synth_dir / "test.jsonl", limit=4,
                     output_dir=str(tmp_path / "study"))
    results = frame_scaling(config, [8, 4])
    assert sorted(results) == [4, 8]
    root = tmp_path / "study"
    table = (root / "frame_scaling.md").read_text().splitlines()
    assert table[0].startswith("| Frames |") and [line.split("|")[1].strip() for line in table[2:]] == ["4", "8"]
    study = json.loads((root / "frame_scaling.json").read_text())
    assert study["frames"] == [4, 8]
    assert study["accuracy_percent"]["Overall"] == [pytest.approx(100 * results[n].metrics["accuracy"]) for n in (4, 8)]
    for n in (4, 8):
        frames = {json.loads(line)["frames"] for line in (root / f"frames_{n}" / PREDICTIONS).read_text().splitlines()}
        assert frames == {n}
    with Image.open(root / "frame_scaling.png") as image:
        assert image.format == "PNG" and image.size == (900, 560)
        assert len(set(image.convert("RGB").getdata())) > 5, "the plot must have lines, not a blank image"


EVAL_CONFIGS = sorted(p.stem for p in (HERE.parent / "configs" / "eval").glob("*.yaml"))


def test_eval_configs_exist():
    assert EVAL_CONFIGS == ["longvideo_reason", "videomme"]


@pytest.mark.parametrize("name", EVAL_CONFIGS)
def test_eval_configs_parse(name, capsys):
    """The shipped eval YAML files are valid `lightning-longrl eval` configs."""
    from lightning_longrl.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "--config", str(HERE.parent / "configs" / "eval" / f"{name}.yaml"), "--model", "m", "--data", "d",
              "--output_dir", "o", "--print_config"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert "num_frames: 512" in printed and f"format: {name}" in printed and "gpu_memory_utilization: 0.8" in printed


def test_charts_draw_each_series_in_its_colour(tmp_path):
    from PIL import Image

    from lightning_longrl.eval.plot import bar_chart, line_chart

    png = line_chart(tmp_path / "lines.png", [8, 16, 32, 64], {"SFT+GRPO": [30.0, 40.0, None, 66.0],
                                                               "SFT": [20.0, 35.0, 40.0, 41.0]},
                     "Accuracy against input frames", colours={"SFT+GRPO": "#ff0000", "SFT": "#00ff00"})
    with Image.open(png) as image:
        pixels = set(image.convert("RGB").getdata())
    assert (255, 0, 0) in pixels and (0, 255, 0) in pixels, "both lines must be drawn in their colours"
    with pytest.raises(ValueError, match="at least one series"):
        line_chart(tmp_path / "none.png", [8], {}, "empty")
    bars = bar_chart(tmp_path / "bars.png", ["0/8", "4/8", "8/8"], [3, 0, 5], "histogram")
    with Image.open(bars) as image:
        assert image.size == (900, 520)
