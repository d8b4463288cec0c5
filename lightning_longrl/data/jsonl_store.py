"""Append-only JSONL files that long jobs write as they go, so that a rerun resumes.

Each finished item is one line, flushed at once: a crash or Ctrl-C loses at most the item being
written. On reopening, a last line cut short by a crash is dropped (its item is done again);
any other unreadable line is an error naming the file and line.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def read_jsonl_rows(path: Path, required: Iterable[str] = ()) -> list[dict[str, Any]]:
    """The rows of ``path`` (none when it does not exist); see the module notes on bad lines."""
    if not path.is_file():
        return []
    rows = []
    # "\n" only: str.splitlines would also split on U+2028 and the like, which JSON text may hold
    lines = path.read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                log.warning("%s: ignoring a truncated last line (its item is done again)", path)
                continue
            raise ValueError(f"{path}:{number}: not a JSON object; remove the line (or the file) to redo it") from None
        missing = [name for name in required if not isinstance(row, dict) or name not in row]
        if missing:
            raise ValueError(f"{path}:{number}: a row needs the field(s) {missing}")
        rows.append(row)
    return rows


class JSONLStore:
    """Rows keyed by ``key(row)``, loaded from ``path`` and appended to it one by one.

    Args:
        path: the file (created with its folder on the first append).
        key: the identity of a row (a later row with the same key replaces an earlier one).
        required: fields every stored row must have.
    """

    def __init__(self, path: str | Path, key: Callable[[dict[str, Any]], Any], required: Iterable[str] = ()) -> None:
        self.path = Path(path)
        self.key = key
        self._end_last_line()
        self.rows: dict[Any, dict[str, Any]] = {key(r): r for r in read_jsonl_rows(self.path, required)}
        self._handle = None

    def __contains__(self, item_key: Any) -> bool:
        return item_key in self.rows

    def __len__(self) -> int:
        return len(self.rows)

    def get(self, item_key: Any) -> dict[str, Any] | None:
        return self.rows.get(item_key)

    def append(self, row: dict[str, Any]) -> None:
        """Store one row and flush it to disk."""
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = self.path.open("a", encoding="utf-8")
        self._handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._handle.flush()
        self.rows[self.key(row)] = row

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> JSONLStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _end_last_line(self) -> None:
        """A last line without its newline: complete JSON gets the newline, a cut-off write is dropped."""
        if not self.path.is_file():
            return
        data = self.path.read_bytes()
        if not data or data.endswith(b"\n"):
            return
        cut = data.rfind(b"\n") + 1
        try:
            json.loads(data[cut:])
            self.path.write_bytes(data + b"\n")
        except (json.JSONDecodeError, UnicodeDecodeError):
            log.warning("%s: dropping a truncated last line (its item is done again)", self.path)
            self.path.write_bytes(data[:cut])
