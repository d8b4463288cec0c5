import json

import pytest

from lightning_longrl.data.records import RecordError, parse_record, read_records, split_embedded_options


def write_jsonl(path, rows):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_own_format_round_trip(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [{
        "id": "q1", "video": "v/1.mp4", "question": "Which colour?", "options": ["A. red", "B. blue"],
        "answer": "(B)", "reasoning": "<think>it is blue</think>", "category": "Temporal",
        "start": 1.5, "end": 9, "subtitles": [{"start": 2, "end": 3, "text": "hello"}], "source": "x",
    }])
    (record,) = read_records(path)
    assert record.options == ("red", "blue")
    assert record.answer == "B"
    assert record.reasoning == "it is blue"
    assert (record.start, record.end) == (1.5, 9.0)
    assert record.subtitles[0].text == "hello"
    assert record.extra == {"source": "x"}


@pytest.mark.parametrize("videos", ["clip.mp4", ["clip.mp4"]])
def test_long_rl_format(videos):
    record = parse_record({
        "problem": "What happens last?\nA. a goal\nB. a foul\nC. a save\nD. a corner",
        "videos": videos, "answer": "<answer> C </answer>", "reasoning": "the keeper saves",
    })
    assert record.video == "clip.mp4"
    assert record.question == "What happens last?"
    assert record.options == ("a goal", "a foul", "a save", "a corner")
    assert record.answer == "C"


@pytest.mark.parametrize("raw", [
    {"image": "a.png", "question": "What is drawn?", "answer": "a cat"},
    {"images": ["a.png"], "question": "What is drawn?", "answer": "a cat"},
    {"images": [{"path": "a.png"}], "question": "What is drawn?", "answer": "a cat"},
    {"images": ["a.png"], "problem": "<image>What is drawn?", "answer": "<answer>a cat</answer>"},  # Long-RL / EasyR1
])
def test_image_records(raw):
    record = parse_record(raw)
    assert record.images == ("a.png",) and record.video is None
    assert record.modality == "image"
    assert record.question == "What is drawn?" and record.answer == "a cat"


def test_several_images_keep_their_order_and_placeholders_are_removed():
    record = parse_record({"images": ["b.png", "a.png"], "problem": "Compare <image> with\n<image>\nWhich is larger?",
                           "answer": "the first"})
    assert record.images == ("b.png", "a.png")
    assert "<image>" not in record.question and "Which is larger?" in record.question


@pytest.mark.parametrize("raw", [
    {"question": "What is 2 + 3?", "answer": "5"},
    {"problem": "What is 2 + 3?", "answer": "5", "images": []},  # Long-RL writes empty lists
    {"problem": "What is 2 + 3?", "answer": "5", "videos": [], "images": None},
])
def test_text_only_records(raw):
    record = parse_record(raw)
    assert record.modality == "text" and record.images == () and record.video is None


def test_open_ended_answer_kept():
    record = parse_record({"video": "a.mp4", "question": "How many?", "answer": 3})
    assert record.answer == "3" and not record.is_multiple_choice


def test_embedded_options_need_a_full_lettered_run():
    assert split_embedded_options("Q?\nB. x\nC. y") == ("Q?\nB. x\nC. y", ())
    assert split_embedded_options("Q?\nOptions:\nA. x\nB. y") == ("Q?", ("x", "y"))
    assert split_embedded_options("A. x\nB. y") == ("A. x\nB. y", ())  # nothing but options


@pytest.mark.parametrize(
    ("line", "field", "message"),
    [
        ("{not json", None, "invalid JSON"),
        ('["a list"]', None, "expected a JSON object"),
        ('{"video": "a.mp4", "images": ["b.png"], "question": "q", "answer": "A"}', "images", "not both"),
        ('{"image": "a.png", "images": ["b.png"], "question": "q", "answer": "A"}', "images", "not both"),
        ('{"image": ["a.png"], "question": "q", "answer": "A"}', "image", "use 'images'"),
        ('{"images": ["a.png", ""], "question": "q", "answer": "A"}', "images", "item 1: expected a non-empty"),
        ('{"images": [3], "question": "q", "answer": "A"}', "images", "item 0"),
        ('{"images": ["a.png"], "problem": "<image><image>q", "answer": "A"}', "problem", "2 <image>/<video>"),
        ('{"images": ["a.png"], "question": "q", "answer": "A", "start": 3}', "start", "only a video question"),
        ('{"question": "q", "answer": "A", "subtitles": "hello"}', "subtitles", "only a video question"),
        ('{"video": "a.mp4", "answer": "A"}', "question", "missing"),
        ('{"video": "a.mp4", "question": "q"}', "answer", "missing"),
        ('{"video": 3, "question": "q", "answer": "A"}', "video", "expected a non-empty file path"),
        ('{"videos": ["a", "b"], "question": "q", "answer": "A"}', "videos", "at most one video"),
        ('{"video": "a.mp4", "question": "q", "answer": "E", "options": ["x", "y"]}', "answer", "neither an option"),
        ('{"video": "a.mp4", "question": "q", "answer": "A", "options": "x,y"}', "options", "list of non-empty"),
        ('{"video": "a.mp4", "question": "q", "answer": "A", "start": 5, "end": 2}', "end", "greater than start"),
        ('{"video": "a.mp4", "question": "q", "answer": "A", "start": "soon"}', "start", "number of seconds"),
        ('{"video": "a.mp4", "question": "q", "answer": "A", "start": NaN}', "start", "finite"),
        ('{"video": "a.mp4", "question": "q", "answer": "A", "end": Infinity}', "end", "finite"),
        ('{"video": "a.mp4", "question": "q", "answer": "<answer> </answer>"}', "answer", "empty"),
        ('{"video": "a.mp4", "question": "  ", "answer": "A"}', "question", "must not be empty"),
    ],
)
def test_malformed_record_names_file_line_and_field(tmp_path, line, field, message):
    good = '{"id": "ok", "video": "a.mp4", "question": "q", "answer": "yes"}'
    path = write_jsonl(tmp_path / "bad.jsonl", [good, "", line])
    with pytest.raises(RecordError) as info:
        read_records(path)
    err = info.value
    assert err.path == str(path) and err.line == 3 and err.field == field
    text = str(err)
    assert f"{path}:3" in text and message in text
    if field:
        assert f"field '{field}'" in text


def test_duplicate_ids_are_rejected(tmp_path):
    row = {"id": "same", "video": "a.mp4", "question": "q", "answer": "x"}
    path = write_jsonl(tmp_path / "dup.jsonl", [row, row])
    with pytest.raises(RecordError, match=r"dup.jsonl:2: field 'id': duplicate id 'same' \(first on line 1\)"):
        read_records(path)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        read_records(tmp_path / "nope.jsonl")
