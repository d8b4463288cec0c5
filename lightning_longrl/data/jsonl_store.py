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
    lines = path.read_text(encoding="utf-8").splitlines()
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
        self.rows: dict[Any, dict[str, Any]] = {key(r): r for r in read_jsonl_rows(self.path, required)}
        self._drop_partial_line()
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

    def _drop_partial_line(self) -> None:
        if self.path.is_file():
            data = self.path.read_bytes()
            if data and not data.endswith(b"\n"):
                self.path.write_bytes(data[: data.rfind(b"\n") + 1])
