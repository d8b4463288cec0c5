"""Question/answer records for long videos, read from JSONL.

Two on-disk shapes are accepted (see ``docs/data_format.md``):

* the project's own: ``id``, ``video`` (or ``image`` / ``images``, or neither for a text-only
  question), ``question``, ``options``, ``answer``, ``reasoning``, ``category``, ``start``, ``end``,
  ``subtitles``;
* Long-RL's released records as they are: ``problem`` for the question, ``videos`` / ``images`` as
  a string or a list, ``<video>`` / ``<image>`` placeholders in the question, and an ``answer``
  that may be wrapped in ``<answer>...</answer>``.

A record shows one video, one or more images, or nothing (text-only); mixing a video and images in
one record is refused.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Modality = Literal["video", "image", "text"]

CATEGORIES = ("Temporal", "Goal and Purpose", "Plot and Narrative", "Spatial")
"""The four reasoning categories of LongVideo-Reason."""

OPTION_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_KNOWN_FIELDS = {
    "id", "video", "videos", "image", "images", "question", "problem", "options", "answer", "reasoning",
    "category", "start", "end", "subtitles",
}
_PLACEHOLDER = re.compile(r"[ \t]*<(?:image|video)>[ \t]*\n?")
"""Long-RL / EasyR1 mark where media go with ``<image>`` / ``<video>`` in the question text."""


class RecordError(ValueError):
    """A record in a JSONL file is malformed. The message names the file, line and field."""

    def __init__(self, path: str | Path, line: int, field_name: str | None, message: str) -> None:
        where = f"{path}:{line}"
        if field_name is not None:
            where += f": field '{field_name}'"
        super().__init__(f"{where}: {message}")
        self.path = str(path)
        self.line = line
        self.field = field_name


@dataclass(frozen=True)
class Subtitle:
    """One subtitle line with its time span in seconds."""

    start: float
    end: float
    text: str


@dataclass(frozen=True)
class VideoQARecord:
    """One question about one video, about images, or about nothing but its text."""

    id: str
    video: str | None
    """Path of the video file, absolute or relative to the data module's ``video_root``; ``None``
    for image and text-only questions."""
    question: str
    answer: str
    """For multiple choice, the option letter (``"B"``); otherwise the free-form answer."""
    options: tuple[str, ...] = ()
    """Option texts without their letters; empty for open-ended questions."""
    reasoning: str | None = None
    """Chain-of-thought text (without tags) used as the SFT target."""
    category: str | None = None
    start: float | None = None
    """Start of the clip in seconds (the whole video when ``None``)."""
    end: float | None = None
    subtitles: tuple[Subtitle, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict, compare=False)
    """Fields this package does not interpret, kept for analysis."""
    images: tuple[str, ...] = ()
    """Image paths (resolved like ``video``), in the order the prompt shows them."""

    @property
    def is_multiple_choice(self) -> bool:
        return len(self.options) > 0

    @property
    def modality(self) -> Modality:
        """``"video"``, ``"image"`` or ``"text"``: what the question shows the model."""
        return "video" if self.video is not None else "image" if self.images else "text"


def strip_answer_tags(answer: str) -> str:
    """``"<answer> B </answer>"`` -> ``"B"``; text without tags is only stripped."""
    match = _ANSWER_TAG.search(answer)
    return (match.group(1) if match else answer).strip()


def parse_record(raw: Any, path: str | Path = "<memory>", line: int = 0) -> VideoQARecord:
    """Validate one decoded JSON object and turn it into a :class:`VideoQARecord`.

    Raises:
        RecordError: naming ``path``, ``line`` and the offending field.
    """

    def fail(field_name: str | None, message: str) -> RecordError:
        return RecordError(path, line, field_name, message)

    if not isinstance(raw, dict):
        raise fail(None, f"expected a JSON object, got {type(raw).__name__}")

    def text(name: str, value: Any, allow_empty: bool = False) -> str:
        if not isinstance(value, str):
            raise fail(name, f"expected a string, got {type(value).__name__}")
        if not allow_empty and not value.strip():
            raise fail(name, "must not be empty")
        return value

    def seconds(name: str) -> float | None:
        value = raw.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail(name, f"expected a number of seconds, got {type(value).__name__}")
        if not math.isfinite(value):
            raise fail(name, f"must be a finite number of seconds, got {value}")
        if value < 0:
            raise fail(name, f"must be >= 0, got {value}")
        return float(value)

    video = _media_paths(raw, "video", "videos", fail)
    if len(video) > 1:
        raise fail("videos", f"expected at most one video, got a list of {len(video)}")
    images = _media_paths(raw, "image", "images", fail)
    if video and images:
        raise fail("images", "a record shows either one video or images, not both; split it into two records")

    if "question" in raw:
        question = text("question", raw["question"])
    elif "problem" in raw:
        question = text("problem", raw["problem"])
    else:
        raise fail("question", "missing (give 'question', or Long-RL's 'problem')")
    marks = len(_PLACEHOLDER.findall(question))
    if marks:  # Long-RL's placeholders: the prompt places the media itself
        name = "question" if "question" in raw else "problem"
        if marks != len(video) + len(images):
            raise fail(name, f"has {marks} <image>/<video> placeholder(s) but the record gives "
                             f"{len(video) + len(images)} media file(s)")
        question = _PLACEHOLDER.sub("", question)
        if not question.strip():
            raise fail(name, "is empty once its <image>/<video> placeholders are removed")

    if "answer" not in raw:
        raise fail("answer", "missing")
    answer_raw = raw["answer"]
    if isinstance(answer_raw, (int, float)) and not isinstance(answer_raw, bool):
        answer_raw = str(answer_raw)
    answer = strip_answer_tags(text("answer", answer_raw))
    if not answer:
        raise fail("answer", "is empty inside <answer></answer>")

    options: tuple[str, ...] = ()
    if raw.get("options") is not None:
        opts = raw["options"]
        if not isinstance(opts, list) or not all(isinstance(o, str) and o.strip() for o in opts):
            raise fail("options", "expected a list of non-empty strings")
        if not 2 <= len(opts) <= len(OPTION_LETTERS):
            raise fail("options", f"expected 2 to {len(OPTION_LETTERS)} options, got {len(opts)}")
        options = tuple(_strip_option_letter(o, i) for i, o in enumerate(opts))
        answer = _answer_letter(answer, options, fail)
    else:
        # Long-RL and most benchmarks write the options into the question ("A. ...\nB. ...").
        question, options = split_embedded_options(question)
        if options:
            answer = _answer_letter(answer, options, fail)

    reasoning = raw.get("reasoning")
    if reasoning is not None:
        reasoning = text("reasoning", reasoning, allow_empty=True).strip() or None
        if reasoning is not None:
            reasoning = _strip_think_tags(reasoning)

    category = raw.get("category")
    if category is not None:
        category = text("category", category)

    start, end = seconds("start"), seconds("end")
    if start is not None and end is not None and end <= start:
        raise fail("end", f"must be greater than start ({start}), got {end}")

    subtitles = _parse_subtitles(raw.get("subtitles"), fail)
    if not video:
        for name, value in (("start", start), ("end", end), ("subtitles", subtitles)):
            if value:
                raise fail(name, "only a video question can have it (this record has no 'video')")

    record_id = raw.get("id")
    if record_id is None:
        record_id = f"{Path(str(path)).stem}:{line}"
    elif isinstance(record_id, (int, str)) and not isinstance(record_id, bool):
        record_id = str(record_id)
    else:
        raise fail("id", f"expected a string or integer, got {type(record_id).__name__}")

    extra = {k: v for k, v in raw.items() if k not in _KNOWN_FIELDS}
    return VideoQARecord(
        id=record_id, video=video[0] if video else None, question=question.strip(), answer=answer, options=options,
        reasoning=reasoning, category=category, start=start, end=end, subtitles=subtitles, extra=extra,
        images=images,
    )


def _media_paths(raw: dict, one: str, many: str, fail: Any) -> tuple[str, ...]:
    """Paths under ``one`` (a string) or ``many`` (a string or a list, Long-RL's form); a list item
    may also be an object with a ``path`` (Hugging Face datasets' image/video features)."""
    if one in raw and many in raw:
        raise fail(many, f"give '{one}' or '{many}', not both")
    name = one if one in raw else many
    value = raw.get(name)
    if value is None:
        return ()
    items = value if isinstance(value, list) else [value]
    if name == one and isinstance(value, list):
        raise fail(one, f"expected one path as a string (use '{many}' for a list)")
    paths = []
    for i, item in enumerate(items):
        if isinstance(item, dict) and "path" in item:
            item = item["path"]
        if not isinstance(item, str) or not item.strip():
            where = f"item {i}: " if isinstance(value, list) else ""
            raise fail(name, f"{where}expected a non-empty file path, got {type(item).__name__} {str(item)[:40]!r}")
        paths.append(item)
    return tuple(paths)


def read_records(path: str | Path) -> list[VideoQARecord]:
    """Read and validate every record of a JSONL file (blank lines are skipped).

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        RecordError: on the first malformed line, naming file, line and field.
    """
    return list(iter_records(path))


def iter_records(path: str | Path) -> Iterator[VideoQARecord]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"record file not found: {path}")
    seen: dict[str, int] = {}
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as err:
                raise RecordError(path, line_no, None, f"invalid JSON ({err.msg} at column {err.colno})") from None
            record = parse_record(raw, path, line_no)
            if record.id in seen:
                raise RecordError(path, line_no, "id", f"duplicate id {record.id!r} (first on line {seen[record.id]})")
            seen[record.id] = line_no
            yield record


def write_records(path: str | Path, records: list[dict[str, Any]]) -> None:
    """Write plain dicts as JSONL (one object per line, UTF-8)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


_OPTION_LINE = re.compile(r"^\s*\(?([A-Z])[\.\):]\s+(.+?)\s*$")


def split_embedded_options(question: str) -> tuple[str, tuple[str, ...]]:
    """Split trailing ``A. ...`` / ``B. ...`` lines off a question.

    Only a run of at least two lines lettered A, B, C, ... in order at the end of the text counts;
    otherwise the question is returned unchanged with no options.
    """
    lines = question.rstrip().split("\n")
    options: list[str] = []
    first = len(lines)
    for i in range(len(lines) - 1, -1, -1):
        match = _OPTION_LINE.match(lines[i])
        if not match:
            break
        options.insert(0, match.group(2))
        first = i
        if match.group(1) == "A":
            break
    letters = [(_OPTION_LINE.match(lines[j]) or [None, None])[1] for j in range(first, len(lines))]
    if len(options) < 2 or letters != list(OPTION_LETTERS[: len(options)]):
        return question, ()
    stem = "\n".join(lines[:first]).strip()
    if stem.lower().endswith("options:"):
        stem = stem[: -len("options:")].strip()
    if not stem:  # nothing but options: not a question we can split
        return question, ()
    return stem, tuple(options)


_LETTER_PREFIX = re.compile(r"^\s*\(?([A-Z])[\.\):]\s+")
_THINK_TAG = re.compile(r"^\s*<think>(.*?)</think>\s*$", re.DOTALL)


def _strip_option_letter(option: str, index: int) -> str:
    """Drop a leading ``"B. "`` / ``"(B) "`` when it matches the option's position."""
    match = _LETTER_PREFIX.match(option)
    if match and match.group(1) == OPTION_LETTERS[index]:
        return option[match.end():].strip()
    return option.strip()


def _strip_think_tags(reasoning: str) -> str:
    match = _THINK_TAG.match(reasoning)
    return match.group(1).strip() if match else reasoning


def _answer_letter(answer: str, options: tuple[str, ...], fail: Any) -> str:
    """Normalise a multiple-choice answer to its letter (accepts ``"B"``, ``"B."``, ``"(B)"`` or the option text)."""
    letters = OPTION_LETTERS[: len(options)]
    candidate = answer.strip().strip("()").rstrip(".):").strip()
    if len(candidate) == 1 and candidate.upper() in letters:
        return candidate.upper()
    match = _LETTER_PREFIX.match(answer + " ")
    if match and match.group(1) in letters:
        return match.group(1)
    for letter, option in zip(letters, options):
        if answer.strip().lower() == option.lower():
            return letter
    raise fail("answer", f"{answer!r} is neither an option letter ({', '.join(letters)}) nor an option's text")


def _parse_subtitles(value: Any, fail: Any) -> tuple[Subtitle, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (Subtitle(0.0, float("inf"), value.strip()),) if value.strip() else ()
    if not isinstance(value, list):
        raise fail("subtitles", "expected a string or a list of {start, end, text} objects")
    subtitles = []
    for i, item in enumerate(value):
        if not isinstance(item, dict) or not isinstance(item.get("text"), str):
            raise fail("subtitles", f"item {i}: expected an object with 'text', 'start' and 'end'")
        try:
            start, end = float(item.get("start", 0.0)), float(item.get("end", float("inf")))
        except (TypeError, ValueError):
            raise fail("subtitles", f"item {i}: 'start'/'end' must be numbers") from None
        if math.isnan(start) or math.isnan(end) or math.isinf(start):
            raise fail("subtitles", f"item {i}: 'start'/'end' must be finite numbers of seconds")
        subtitles.append(Subtitle(start, end, item["text"].strip()))
    return tuple(subtitles)
