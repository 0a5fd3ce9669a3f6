"""The append-only JSONL results store every generation goes to, safe for several processes.

One JSON object a line, keyed by ``key`` (``safety.config.prompt_key(config, prompt)``). Appends
and reads hold an inter-process lock (``<file>.lock``, the ``filelock`` package), so two
processes sharing one file can neither interleave nor lose lines; a line cut short by a killed
process is skipped with a warning and its prompt counts as not stored (so it is generated again).
Imports no torch: a process that only reads or writes results starts fast.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path


class ResultsStore:
    """Append-only JSONL of generations keyed by ``prompt_key(config, prompt)``, safe to share.

    Several processes may read and append one file: every append and every read holds an
    inter-process lock (``<file>.lock``, the ``filelock`` package), an append writes its rows in
    one write and first reads what other writers added, and the first stored row of a key is the
    one every reader uses. ``refresh()`` reads rows appended since the last read (``generate``
    calls it before deciding what to generate; ``get`` calls it for a key it has not seen). A
    line that does not parse (cut short by a killed process, or garbage) is skipped with one
    warning per store; its prompt counts as not stored, so it is generated again."""

    def __init__(self, path: str | Path):
        from filelock import FileLock

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = FileLock(str(self.path) + ".lock")
        self._rows: dict[str, dict] = {}
        self._offset = 0  # bytes of the file already read
        self.skipped = 0  # unreadable lines seen so far
        self.refresh()

    def refresh(self) -> int:
        """Read the rows appended (by any process) since the last read; returns how many were new."""
        with self._lock:
            if not self.path.exists():
                return 0
            with self.path.open("rb") as f:
                f.seek(self._offset)
                data = f.read()
            self._offset += len(data)
        before, bad = len(self._rows), 0
        for line in data.split(b"\n"):
            if not line.strip():
                continue
            try:
                row = json.loads(line.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                row = None
            if not (isinstance(row, dict) and isinstance(row.get("key"), str)):
                bad += 1
                continue
            self._rows.setdefault(row["key"], row)
        if bad:
            if not self.skipped:
                warnings.warn(f"{self.path}: skipped {bad} unreadable line(s) (cut short by a killed process?); "
                              "their prompts will be generated again", RuntimeWarning, stacklevel=2)
            self.skipped += bad
        return len(self._rows) - before

    def get(self, config, prompt: str) -> dict | None:
        """The row stored for ``config`` (a ``RunConfig``) and ``prompt``, or None; a key not seen yet
        first looks for rows other writers appended."""
        from privinf.safety.config import prompt_key

        key = prompt_key(config, prompt)
        if key not in self._rows:
            self.refresh()
        return self._rows.get(key)

    def rows(self) -> list[dict]:
        """Every stored row (the first of each key), after reading what other writers appended."""
        self.refresh()
        return list(self._rows.values())

    def __contains__(self, key: str) -> bool:
        return key in self._rows

    def __len__(self) -> int:
        return len(self._rows)

    def append(self, rows: list[dict]) -> list[dict]:
        """Append ``rows`` (one JSON line each, one write, fsynced) unless another writer already
        stored their key; returns the stored row of each (the earlier one where there was one)."""
        with self._lock:
            self.refresh()
            new = {}
            for row in rows:
                if row["key"] not in self._rows:
                    new.setdefault(row["key"], row)
            if new:
                data = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in new.values()).encode("utf-8")
                with self.path.open("ab") as f:
                    if f.tell() > 0:  # a line cut short before must not swallow our first row
                        with self.path.open("rb") as r:
                            r.seek(-1, os.SEEK_END)
                            if r.read(1) != b"\n":
                                data = b"\n" + data
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                    self._offset = f.tell()
                self._rows.update(new)
        return [self._rows[row["key"]] for row in rows]
