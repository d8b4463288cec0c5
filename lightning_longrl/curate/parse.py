"""Reading what the question-writing LLM replied: one JSON object with ``question``,
``options``, ``answer`` and ``reasoning``. Anything else is rejected with a reason (and kept
verbatim by the pipeline)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from lightning_longrl.data.records import OPTION_LETTERS, split_embedded_options

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)
_THINK = re.compile(r"<think>.*?</think>", re.DOTALL)


@dataclass(frozen=True)
class GeneratedQA:
    question: str
    options: tuple[str, ...]
    answer: str
    reasoning: str


class RejectedOutput(ValueError):
    """The reply cannot be turned into a record; the message says why."""


def parse_generation(text: str, question_type: str) -> GeneratedQA:
    """The record in a reply, or :class:`RejectedOutput`.

    Accepted: the JSON object alone, inside a ```json fence, or after a reasoning model's
    ``<think>...</think>``. For ``multiple_choice`` there must be 2 to 26 distinct options and
    the answer must name one (a letter, ``"B. text"`` or the option's text; stored as the
    letter); for ``open_ended`` no options.
    """
    body = strip_thinking(text)
    fenced = _FENCE.search(body)
    if fenced:
        body = fenced.group(1).strip()
    start, end = body.find("{"), body.rfind("}")
    if start < 0 or end <= start:
        raise RejectedOutput("no JSON object in the reply")
    try:
        raw = json.loads(body[start : end + 1], strict=False)  # control characters inside strings are tolerated
    except json.JSONDecodeError as err:
        raise RejectedOutput(f"invalid JSON ({err.msg})") from None
    if not isinstance(raw, dict):
        raise RejectedOutput("the JSON is not an object")
    fields = {}
    for name in ("question", "answer", "reasoning"):
        value = raw.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not value.strip():
            raise RejectedOutput(f"'{name}' is missing or empty")
        fields[name] = value.strip()
    options = raw.get("options") or []
    if not isinstance(options, list) or not all(isinstance(o, str) and o.strip() for o in options):
        raise RejectedOutput("'options' is not a list of non-empty strings")
    question = fields["question"]
    if not options and question_type == "multiple_choice":
        question, embedded = split_embedded_options(question)
        options = list(embedded)
    options = [re.sub(r"^\(?[A-Z][\.\):]\s+", "", o.strip()) for o in options]
    if question_type == "multiple_choice":
        if not 2 <= len(options) <= len(OPTION_LETTERS):
            raise RejectedOutput(f"a multiple-choice question needs 2 to {len(OPTION_LETTERS)} options, got {len(options)}")
        if len({o.lower() for o in options}) != len(options):
            raise RejectedOutput("the options are not distinct")
        letter = _answer_letter(fields["answer"], options)
        if letter is None:
            raise RejectedOutput(f"the answer {fields['answer']!r} names none of the options")
        return GeneratedQA(question, tuple(options), letter, fields["reasoning"])
    if options:
        raise RejectedOutput("an open-ended question must have no options")
    return GeneratedQA(question, (), fields["answer"], fields["reasoning"])


def strip_thinking(text: str) -> str:
    """A reply without a reasoning model's ``<think>...</think>`` blocks."""
    return _THINK.sub("", text).strip()


def _answer_letter(answer: str, options: list[str]) -> str | None:
    from lightning_longrl.data.prompts import normalize_choice

    return normalize_choice(answer, options)


def record_schema(question_type: str, options: int = 4, max_chars: tuple[int, int, int] = (400, 200, 3000)) -> dict:
    """JSON schema of the writer's reply (for backends with structured outputs).

    Args:
        max_chars: longest question, option (and open-ended answer) and reasoning, in characters.
    """
    question_max, option_max, reasoning_max = max_chars

    def text(limit: int) -> dict:
        return {"type": "string", "minLength": 1, "maxLength": limit}

    multiple = question_type == "multiple_choice"
    return {
        "type": "object",
        "properties": {
            "question": text(question_max),
            "options": {"type": "array", "items": text(option_max), "minItems": options if multiple else 0,
                        "maxItems": options if multiple else 0},
            "answer": {"type": "string", "enum": list(OPTION_LETTERS[:options])} if multiple else text(option_max),
            "reasoning": text(reasoning_max),
        },
        "required": ["question", "options", "answer", "reasoning"],
        "additionalProperties": False,
    }

