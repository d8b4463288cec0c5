"""The text around a question (on a video, on images, or text-only): chat messages for the prompt
and the SFT target.

One place decides what the model is asked and how a reasoning answer looks, so SFT targets,
GRPO rollouts and evaluation all use the same words.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, NamedTuple

from lightning_longrl.data.records import OPTION_LETTERS, VideoQARecord

END_OF_TURN = "<|im_end|>"
"""Qwen's end-of-turn token: appended to SFT targets and the stop token of generation."""

SYSTEM_PROMPT = "You are a helpful assistant who watches long videos carefully and reasons about them."

THINK_INSTRUCTION = (
    "Think about the question by checking the video, then give the answer. Write the reasoning "
    "inside <think> </think> and the final answer inside <answer> </answer>."
)
_CHECKING = {"video": "by checking the video", "image": "by checking the image", "text": "step by step"}
DIRECT_INSTRUCTION = "Give only the final answer inside <answer> </answer>."
LETTER_INSTRUCTION = " For a multiple-choice question, the answer is the option's letter."


def format_subtitles(record: VideoQARecord) -> str:
    """Subtitles inside the record's clip as ``[12.0s-15.5s] text`` lines (empty string when none)."""
    lines = []
    for sub in record.subtitles:
        if record.end is not None and sub.start >= record.end:
            continue
        if record.start is not None and sub.end <= record.start:
            continue
        span = "" if sub.end == float("inf") else f"[{sub.start:.1f}s-{sub.end:.1f}s] "
        lines.append(span + sub.text)
    return "\n".join(lines)


def format_question(record: VideoQARecord, think: bool = True, include_subtitles: bool = True) -> str:
    """The user turn's text: subtitles (optional), question, lettered options, instruction."""
    parts = []
    subtitles = format_subtitles(record) if include_subtitles else ""
    if subtitles:
        parts.append("Subtitles of the video:\n" + subtitles)
    parts.append("Question: " + record.question)
    if record.options:
        parts.append("Options:\n" + "\n".join(f"{OPTION_LETTERS[i]}. {o}" for i, o in enumerate(record.options)))
    instruction = THINK_INSTRUCTION.replace(_CHECKING["video"], _CHECKING[record.modality]) if think else DIRECT_INSTRUCTION
    if record.options:
        instruction += LETTER_INSTRUCTION
    parts.append(instruction)
    return "\n".join(parts)


def format_response(record: VideoQARecord, think: bool = True) -> str:
    """The assistant's target text, ``<think>...</think><answer>...</answer>``.

    Raises:
        ValueError: ``think`` is set but the record has no reasoning.
    """
    if not think:
        return f"<answer>{record.answer}</answer>"
    if not record.reasoning:
        raise ValueError(f"record {record.id!r} has no 'reasoning', which chain-of-thought SFT needs")
    return f"<think>{record.reasoning}</think><answer>{record.answer}</answer>"


def build_messages(record: VideoQARecord, think: bool = True, include_subtitles: bool = True) -> list[dict[str, Any]]:
    """Chat messages for the prompt (system + user with the record's video or images, then the
    question), for ``processor.apply_chat_template``."""
    media = [{"type": "video"}] if record.video is not None else [{"type": "image"} for _ in record.images]
    return [
        {"role": "system", "content": [{"type": "text", "text": SYSTEM_PROMPT}]},
        {"role": "user", "content": [*media, {"type": "text", "text": format_question(record, think, include_subtitles)}]},
    ]


class ParsedResponse(NamedTuple):
    """A model response split into its parts."""

    reasoning: str | None  # text inside the single <think> block
    answer: str | None  # text inside the single <answer> block, stripped
    well_formed: bool  # exactly one <think>...</think> then exactly one <answer>...</answer>, nothing else


_WELL_FORMED = re.compile(r"\s*<think>(?P<think>.*?)</think>\s*<answer>(?P<answer>.*?)</answer>\s*", re.DOTALL)
_TAGS = ("<think>", "</think>", "<answer>", "</answer>")


def parse_response(text: str) -> ParsedResponse:
    """Split ``<think>...</think><answer>...</answer>``; anything else is not well formed.

    A response with several answer tags, an unclosed think block, text outside the tags or an
    empty answer is not well formed; its answer is still extracted when exactly one non-empty
    ``<answer>`` block exists (so callers can tell a format slip from a wrong answer).
    """
    counts = [text.count(tag) for tag in _TAGS]
    match = _WELL_FORMED.fullmatch(text)
    if match and counts == [1, 1, 1, 1] and match.group("answer").strip() and match.group("think").strip():
        return ParsedResponse(match.group("think").strip(), match.group("answer").strip(), True)
    answers = re.findall(r"<answer>(.*?)</answer>", text, re.DOTALL)
    answer = answers[0].strip() if len(answers) == 1 and answers[0].strip() else None
    return ParsedResponse(None, answer, False)


_LETTER = re.compile(r"^\(?([A-Z])\)?$")
_LETTER_THEN_TEXT = re.compile(r"^\(?([A-Z])(?:[\.\):]|\)[\.:]?)\s*(.*)$", re.DOTALL | re.IGNORECASE)


def _plain_words(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def normalize_choice(answer: str | None, options: int | Sequence[str]) -> str | None:
    """The option letter an answer names, else ``None``.

    Accepted: the letter alone (``"B"``, ``"(b)"``); the letter, a separator and the option's own
    text (``"B. top left"``, ``"B) top left"``); the option's text alone (``"top left"``). Hedges
    such as ``"B or C"`` or ``"A B"`` name no single option and give ``None``.

    Args:
        answer: the text inside ``<answer>``.
        options: the option texts, or only their number (then text after a letter is not checked).
    """
    if answer is None:
        return None
    count = options if isinstance(options, int) else len(options)
    texts = None if isinstance(options, int) else [_plain_words(o) for o in options]
    answer = answer.strip()
    letters = OPTION_LETTERS[:count]
    match = _LETTER.match(answer.upper())
    if match:
        return match.group(1) if match.group(1) in letters else None
    match = _LETTER_THEN_TEXT.match(answer)
    if match and match.group(1).upper() in letters:
        letter, rest = match.group(1).upper(), _plain_words(match.group(2))
        if texts is None or not rest or rest == texts[letters.index(letter)]:
            return letter
        return None
    if texts is not None and _plain_words(answer) in texts and texts.count(_plain_words(answer)) == 1:
        return letters[texts.index(_plain_words(answer))]
    return None
