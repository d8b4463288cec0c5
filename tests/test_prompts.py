import pytest

from lightning_longrl.data.prompts import build_messages, format_question, format_response, normalize_choice, parse_response
from lightning_longrl.data.records import parse_record

RECORD = parse_record({
    "id": "q", "video": "a.mp4", "question": "Which colour?", "options": ["red", "blue"], "answer": "B",
    "reasoning": "blue shows up", "start": 10, "end": 20,
    "subtitles": [{"start": 0, "end": 5, "text": "before"}, {"start": 12, "end": 14, "text": "inside"}],
})


def test_question_has_options_instruction_and_clip_subtitles_only():
    text = format_question(RECORD)
    assert "Question: Which colour?" in text and "A. red\nB. blue" in text
    assert "<think>" in text and "option's letter" in text
    assert "[12.0s-14.0s] inside" in text and "before" not in text
    assert "Subtitles" not in format_question(RECORD, include_subtitles=False)
    assert "<think>" not in format_question(RECORD, think=False)


def test_response_and_messages():
    assert format_response(RECORD) == "<think>blue shows up</think><answer>B</answer>"
    assert format_response(RECORD, think=False) == "<answer>B</answer>"
    user = build_messages(RECORD)[1]
    assert user["content"][0] == {"type": "video"}
    no_reasoning = parse_record({"video": "a.mp4", "question": "q", "answer": "x"})
    with pytest.raises(ValueError, match="no 'reasoning'"):
        format_response(no_reasoning)


@pytest.mark.parametrize(
    ("text", "well_formed", "answer"),
    [
        ("<think>look</think><answer>B</answer>", True, "B"),
        ("  <think>look\nmore</think>\n<answer> B </answer>\n", True, "B"),
        ("<think>look</think><answer>B</answer><answer>C</answer>", False, None),  # two answers
        ("<think>look</think><answer></answer>", False, None),  # empty answer
        ("<think>look</think><answer>  </answer>", False, None),
        ("<think>look</think>B", False, None),  # answer outside the tags
        ("<think>look<answer>B</answer>", False, "B"),  # unclosed think
        ("<answer>B</answer>", False, "B"),  # no reasoning
        ("<think></think><answer>B</answer>", False, "B"),  # empty reasoning
        ("The answer is B. <think>x</think><answer>B</answer>", False, "B"),  # text before
        ("<think>x</think><answer>B</answer> Also maybe C", False, "B"),  # text after
        ("<think>x</think><think>y</think><answer>B</answer>", False, "B"),  # two thinks
        ("<answer>B</answer><think>x</think>", False, "B"),  # wrong order
        ("B", False, None),
        ("", False, None),
    ],
)
def test_parse_response_adversarial(text, well_formed, answer):
    parsed = parse_response(text)
    assert parsed.well_formed is well_formed
    assert parsed.answer == answer


@pytest.mark.parametrize(
    ("answer", "expected"),
    [("B", "B"), ("b", "B"), ("(C)", "C"), ("A. red", "A"), ("D) x", "D"), ("E", None), ("Blue", None),
     ("", None), (None, None), ("  a  ", "A"), ("B or C", None), ("A B", None), ("B: top", "B")],
)
def test_normalize_choice(answer, expected):
    assert normalize_choice(answer, 4) == expected


@pytest.mark.parametrize(
    ("answer", "expected"),
    [("B. blue", "B"), ("b) Blue!", "B"), ("blue", "B"), ("A. blue", None), ("B. red", None), ("green", None)],
)
def test_normalize_choice_checks_option_text(answer, expected):
    assert normalize_choice(answer, ["red", "blue", "green light", "grey"]) == expected
