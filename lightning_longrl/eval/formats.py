"""Benchmark record files: the project's JSONL, LongVideo-Reason-eval and VideoMME.

Every format is turned into :class:`~lightning_longrl.data.records.VideoQARecord` rows through
the same validation as training data (:func:`~lightning_longrl.data.records.parse_record`), so a
bad row fails with its file, row and field. ``category`` is what results are grouped by: the
reasoning category for LongVideo-Reason-eval, the duration class (Short / Medium / Long) for
VideoMME.

Accepted shapes (a JSON list or JSONL, one object per row):

* ``jsonl``: the project's records or Long-RL's (``docs/data_format.md``).
* ``longvideo_reason``: LongVideo-Reason-eval rows. The question is in ``question`` or
  ``problem``, the options in ``options`` or written into the question (``A. ...`` lines), the
  answer a letter (optionally inside ``<answer>``), the video in ``video``/``videos``, and the
  category in ``category``, ``type``, ``question_type`` or ``reasoning_type``; category names are
  matched loosely (``"temporal"``, ``"Goal & Purpose"``, ``"plot"``...).
* ``videomme``: rows of Video-MME (``videoID``, ``question_id``, ``duration``, ``domain``,
  ``sub_category``, ``task_type``, ``question``, ``options`` as ``"A. ..."``, ``answer``). The
  video is ``<videoID>.mp4`` under the video root; subtitles, when wanted, are read from
  ``<subtitles_dir>/<videoID>.srt``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

from lightning_longrl.data.records import CATEGORIES, RecordError, Subtitle, VideoQARecord, parse_record

BenchmarkFormat = Literal["auto", "jsonl", "longvideo_reason", "videomme"]
FORMATS = ("jsonl", "longvideo_reason", "videomme")

_CATEGORY_FIELDS = ("category", "type", "question_type", "reasoning_type")
_CATEGORY_WORDS = {"temporal": "Temporal", "goal": "Goal and Purpose", "purpose": "Goal and Purpose",
                   "plot": "Plot and Narrative", "narrative": "Plot and Narrative", "spatial": "Spatial"}
VIDEOMME_DURATIONS = ("Short", "Medium", "Long")


def load_benchmark(path: str | Path, format: BenchmarkFormat = "auto", subtitles_dir: str | Path | None = None,
                   limit: int | None = None) -> list[VideoQARecord]:
    """Read and validate a benchmark file.

    Args:
        path: JSON list or JSONL file.
        format: one of :data:`FORMATS`; ``auto`` picks ``videomme`` when the first row has
            ``videoID`` and ``question_id``, ``jsonl`` otherwise.
        subtitles_dir: VideoMME only: folder of ``<videoID>.srt`` files put into the records.
        limit: keep only the first ``limit`` rows.

    Raises:
        FileNotFoundError: naming the file.
        RecordError: naming the file, row and field of a malformed row.
    """
    path = Path(path)
    rows = _read_rows(path)
    if limit is not None:
        rows = rows[:limit]
    if format == "auto":
        format = detect_format(rows)
    if format not in FORMATS:
        raise ValueError(f"unknown benchmark format {format!r}; choose from {FORMATS} or 'auto'")
    convert = {"jsonl": lambda raw, line: raw, "longvideo_reason": _longvideo_reason_row,
               "videomme": lambda raw, line: _videomme_row(raw, path, line, subtitles_dir)}[format]
    records, seen = [], {}
    for line, raw in rows:
        if not isinstance(raw, dict):
            raise RecordError(path, line, None, f"expected a JSON object, got {type(raw).__name__}")
        record = parse_record(convert(raw, line), path, line)
        if record.id in seen:
            raise RecordError(path, line, "id", f"duplicate id {record.id!r} (first on row {seen[record.id]})")
        seen[record.id] = line
        records.append(record)
    if not records:
        raise ValueError(f"{path}: no records")
    return records


def detect_format(rows: list[tuple[int, Any]]) -> str:
    """``videomme`` when the first row has ``videoID`` and ``question_id``, else ``jsonl``."""
    first = rows[0][1] if rows else {}
    return "videomme" if isinstance(first, dict) and "videoID" in first and "question_id" in first else "jsonl"


def _read_rows(path: Path) -> list[tuple[int, Any]]:
    """``(row number, decoded object)``: rows of a JSON list (numbered from 1) or JSONL lines."""
    if not path.is_file():
        raise FileNotFoundError(f"benchmark file not found: {path}")
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            return list(enumerate(json.loads(text), start=1))
        except json.JSONDecodeError as err:
            raise RecordError(path, err.lineno, None, f"invalid JSON ({err.msg} at column {err.colno})") from None
    rows = []
    for line_no, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            try:
                rows.append((line_no, json.loads(line)))
            except json.JSONDecodeError as err:
                raise RecordError(path, line_no, None, f"invalid JSON ({err.msg} at column {err.colno})") from None
    return rows


def canonical_category(value: Any) -> str | None:
    """One of the four LongVideo-Reason categories named loosely, else the text as given."""
    if not isinstance(value, str) or not value.strip():
        return None
    words = re.findall(r"[a-z]+", value.lower())
    for word in words:
        if word in _CATEGORY_WORDS:
            return _CATEGORY_WORDS[word]
    return value.strip()


def _longvideo_reason_row(raw: dict[str, Any], line: int) -> dict[str, Any]:
    row = {k: v for k, v in raw.items() if k not in _CATEGORY_FIELDS}
    found = [canonical_category(raw[name]) for name in _CATEGORY_FIELDS if name in raw]
    found = [c for c in found if c is not None]
    # a field naming one of the four categories wins over one that holds something else ("multiple choice")
    known = [c for c in found if c in CATEGORIES]
    if known or found:
        row["category"] = (known or found)[0]
    row.update({f"source_{name}": raw[name] for name in _CATEGORY_FIELDS if name in raw and name != "category"})
    return row


def _videomme_row(raw: dict[str, Any], path: Path, line: int, subtitles_dir: str | Path | None) -> dict[str, Any]:
    for name in ("videoID", "question", "options", "answer"):
        if name not in raw:
            raise RecordError(path, line, name, "missing (a Video-MME row needs videoID, question, options, answer)")
    duration = str(raw.get("duration", "")).strip().capitalize()
    if duration and duration not in VIDEOMME_DURATIONS:
        raise RecordError(path, line, "duration", f"expected one of short/medium/long, got {raw['duration']!r}")
    row = {
        "id": str(raw.get("question_id") or f"{raw['videoID']}:{line}"),
        "video": f"{raw['videoID']}.mp4",
        "question": raw["question"],
        "options": raw["options"],
        "answer": raw["answer"],
        "category": duration or None,
    }
    for name in ("video_id", "videoID", "domain", "sub_category", "task_type", "url"):
        if name in raw:
            row[name] = raw[name]
    if subtitles_dir is not None:
        if not Path(subtitles_dir).is_dir():
            raise FileNotFoundError(f"subtitles_dir {subtitles_dir} is not a folder")
        srt = Path(subtitles_dir) / f"{raw['videoID']}.srt"
        if srt.is_file():
            row["subtitles"] = [{"start": s.start, "end": s.end, "text": s.text} for s in read_srt(srt)]
    return row


_SRT_TIME = re.compile(r"(\d+):(\d+):(\d+)[,.](\d+)\s*-->\s*(\d+):(\d+):(\d+)[,.](\d+)")
_SRT_MARKUP = re.compile(r"<[^>]+>|\{[^}]+\}")


def read_srt(path: str | Path) -> list[Subtitle]:
    """Subtitles of an ``.srt`` file (markup such as ``<font>`` removed)."""
    subtitles = []
    blocks = re.split(r"\n\s*\n", Path(path).read_text(encoding="utf-8-sig", errors="replace").replace("\r", ""))
    for block in blocks:
        lines = [s for s in block.strip().splitlines() if s.strip()]
        times = next((i for i, s in enumerate(lines) if _SRT_TIME.search(s)), None)
        if times is None:
            continue
        h1, m1, s1, f1, h2, m2, s2, f2 = (int(x) for x in _SRT_TIME.search(lines[times]).groups())
        text = " ".join(_SRT_MARKUP.sub("", s).strip() for s in lines[times + 1:]).strip()
        if text:
            subtitles.append(Subtitle(h1 * 3600 + m1 * 60 + s1 + f1 / 1000, h2 * 3600 + m2 * 60 + s2 + f2 / 1000, text))
    return subtitles


def category_order(records: list[VideoQARecord]) -> list[str]:
    """Result groups in a fixed order: the four reasoning categories and VideoMME's durations in
    their usual order, then any other category alphabetically, then ``Other`` for records without one."""
    present = {r.category or "Other" for r in records}
    known = [c for c in (*CATEGORIES, *VIDEOMME_DURATIONS) if c in present]
    rest = sorted(present - set(known) - {"Other"})
    return known + rest + (["Other"] if "Other" in present else [])
