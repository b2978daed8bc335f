"""A small persistent key -> JSON store on sqlite, committed batch by batch.

Used to resume interrupted runs: a killed process loses at most the batch in flight, and sqlite's
journal keeps the file consistent. Hand-written because the standard library's `shelve`/`dbm` are
neither crash-safe nor safe to read while another process writes.
"""

import json
import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


class JsonStore:
    """Persistent mapping of string keys to JSON values."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._connection = sqlite3.connect(self.path, timeout=60)
        self._connection.execute("PRAGMA journal_mode=WAL")
        self._connection.execute(
            "CREATE TABLE IF NOT EXISTS entries (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
        )
        self._connection.commit()

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), 500):
            chunk = unique[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._connection.execute(
                f"SELECT key, value FROM entries WHERE key IN ({marks})", chunk
            )
            found.update((key, json.loads(value)) for key, value in rows)
        return found

    def put_many(self, items: Mapping[str, Any]) -> None:
        with self._connection:
            self._connection.executemany(
                "INSERT OR REPLACE INTO entries (key, value) VALUES (?, ?)",
                [(key, json.dumps(value)) for key, value in items.items()],
            )

    def __len__(self) -> int:
        return int(self._connection.execute("SELECT COUNT(*) FROM entries").fetchone()[0])

    def close(self) -> None:
        self._connection.close()
