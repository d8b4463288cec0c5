"""Rewards against an adversarial list of responses, and reward plug-ins by import path."""

import pytest

from lightning_longrl.data.records import parse_record
from lightning_longrl.rl.rewards import CombinedReward, RewardSpec, accuracy_reward, default_rewards, format_reward

CHOICE = parse_record({"id": "mc", "video": "v.mp4", "question": "Where is the ball?",
                       "options": ["top left", "top right", "bottom left", "bottom right"], "answer": "B"})
OPEN = parse_record({"id": "open", "video": "v.mp4", "question": "How many blinks?", "answer": "12"})
PHRASE = parse_record({"id": "phrase", "video": "v.mp4", "question": "What is shown?", "answer": "The red ball."})


@pytest.mark.parametrize(
    ("response", "accuracy", "format_"),
    [
        ("<think>it moves right</think><answer>B</answer>", 1.0, 1.0),
        ("  <think>it moves right</think>\n<answer> B </answer>\n", 1.0, 1.0),
        ("<think>x</think><answer>(b)</answer>", 1.0, 1.0),
        ("<think>x</think><answer>B. top right</answer>", 1.0, 1.0),
        ("<think>x</think><answer>top right</answer>", 1.0, 1.0),
        ("<think>x</think><answer>A</answer>", 0.0, 1.0),  # wrong but well formed
        ("<think>x</think><answer>B. bottom left</answer>", 0.0, 1.0),  # letter and text disagree
        ("<think>x</think><answer>B or C</answer>", 0.0, 1.0),  # hedging
        ("<think>x</think><answer>A B C D</answer>", 0.0, 1.0),
        # gaming the parser earns nothing at all
        ("<think>x</think><answer>B</answer><answer>B</answer>", 0.0, 0.0),  # several answer tags
        ("<think>x</think><answer>A</answer><answer>B</answer>", 0.0, 0.0),
        ("<think>x</think><answer></answer>", 0.0, 0.0),  # empty answer
        ("<think>x</think><answer>   </answer>", 0.0, 0.0),
        ("<think>x</think>B", 0.0, 0.0),  # answer outside the tags
        ("<think>x</think><answer>A</answer>B", 0.0, 0.0),
        ("B <think>x</think><answer>B</answer>", 0.0, 0.0),  # text before
        ("<think>x <answer>B</answer>", 0.0, 0.0),  # unclosed think
        ("<think>x</think><think>y</think><answer>B</answer>", 0.0, 0.0),  # two think blocks
        ("<answer>B</answer>", 0.0, 0.0),  # no reasoning
        ("<think></think><answer>B</answer>", 0.0, 0.0),  # empty reasoning
        ("<answer>B</answer><think>x</think>", 0.0, 0.0),  # wrong order
        ("<think>x</think><answer>B</answer", 0.0, 0.0),  # truncated
        ("", 0.0, 0.0),
    ],
)
def test_multiple_choice_rewards(response, accuracy, format_):
    assert accuracy_reward(response, CHOICE) == accuracy
    assert format_reward(response, CHOICE) == format_


@pytest.mark.parametrize(
    ("answer", "record", "accuracy"),
    [("12", OPEN, 1.0), ("12.0", OPEN, 1.0), ("12.05", OPEN, 1.0), ("13", OPEN, 0.0), ("twelve", OPEN, 0.0),
     ("12 or 13", OPEN, 0.0), ("red ball", PHRASE, 1.0), ("the Red Ball", PHRASE, 1.0), ("a red ball!", PHRASE, 1.0),
     ("blue ball", PHRASE, 0.0), ("red", PHRASE, 0.0)],
)
def test_open_ended_accuracy(answer, record, accuracy):
    assert accuracy_reward(f"<think>counting</think><answer>{answer}</answer>", record) == accuracy


def test_default_weights_are_accuracy_09_format_01():
    reward = CombinedReward(default_rewards())
    scores = reward(["<think>x</think><answer>B</answer>", "<think>x</think><answer>A</answer>", "B"], [CHOICE] * 3)
    assert scores.total == pytest.approx([1.0, 0.1, 0.0])
    assert scores.terms == {"accuracy": [1.0, 0.0, 0.0], "format": [1.0, 1.0, 0.0]}


def test_reward_plugs_in_by_import_path(tmp_path, monkeypatch):
    (tmp_path / "my_rewards.py").write_text(
        "def brevity(response, record):\n    return 1.0 if len(response) < 40 else 0.0\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    reward = CombinedReward([RewardSpec("accuracy", "lightning_longrl.rl.rewards.accuracy_reward", 1.0),
                             RewardSpec("brevity", "my_rewards.brevity", 0.5)])
    scores = reward(["<think>x</think><answer>B</answer>", "<think>" + "y" * 50 + "</think><answer>B</answer>"], [CHOICE] * 2)
    assert scores.total == pytest.approx([1.5, 1.0])


@pytest.mark.parametrize(
    ("spec", "message"),
    [(RewardSpec("a", "no_such_module_xyz.fn"), "cannot import module"),
     (RewardSpec("a", "lightning_longrl.rl.rewards.nope"), "has no attribute 'nope'"),
     (RewardSpec("a", "lightning_longrl.rl.rewards.NUMERIC_REL_TOL"), "not callable"),
     (RewardSpec("a", "justaname"), "not an import path")],
)
def test_bad_reward_paths_are_named(spec, message):
    with pytest.raises(ValueError, match=message):
        CombinedReward([spec])


def test_non_finite_rewards_are_refused(tmp_path, monkeypatch):
    (tmp_path / "nan_rewards.py").write_text("def bad(response, record):\n    return float('nan')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match="returned nan for record 'mc'"):
        CombinedReward([RewardSpec("bad", "nan_rewards.bad")])(["x"], [CHOICE])
