"""Persistent sqlite tables committed batch by batch, and `JsonStore`, a key -> JSON mapping on one.

Used to resume interrupted runs: a killed process loses at most the batch in flight, and sqlite's
journal (WAL) keeps the file consistent. `SqliteTable` is the one base of every such file (this
store and `apiedit_kedro.models.cache.GenerationCache`): WAL set-up, chunked `get_many` below
sqlite's variable limit, all-or-nothing `put_many`, and a schema version in `PRAGMA user_version`
so a file written by another layout fails with a message instead of a confusing SQL error.
Hand-written because the standard library's `shelve`/`dbm` are neither crash-safe nor safe to read
while another process writes.
"""

import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

# Stays below SQLITE_MAX_VARIABLE_NUMBER on every sqlite build (999 before 3.32).
_CHUNK = 500


class StoreFormatError(RuntimeError):
    """A sqlite file whose table layout this code cannot read."""


class SqliteTable:
    """One table with a text primary key `key` in its own sqlite file.

    Subclasses set `TABLE`, `COLUMNS` (name and SQL type, `key` first) and `VERSION`. Files from
    before versioning (user_version 0) whose columns match are stamped with the current version;
    anything else is refused with the file's path and the fix.
    """

    TABLE: ClassVar[str]
    COLUMNS: ClassVar[tuple[tuple[str, str], ...]]
    VERSION: ClassVar[int]

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._connection = sqlite3.connect(self.path, timeout=60)
        try:
            self._connection.execute("PRAGMA journal_mode=WAL")
            self._open_table()
        except BaseException:
            self._connection.close()
            raise

    def _open_table(self) -> None:
        version = self._connection.execute("PRAGMA user_version").fetchone()[0]
        existing = [
            (row[1], row[2]) for row in self._connection.execute(f"PRAGMA table_info({self.TABLE})")
        ]
        expected = [(name, kind.split()[0]) for name, kind in self.COLUMNS]
        if existing and (version not in (0, self.VERSION) or existing != expected):
            raise StoreFormatError(
                f"{self.path} holds table {self.TABLE!r} version {version} with columns "
                f"{[name for name, _ in existing]}; this code reads version {self.VERSION} with "
                f"columns {[name for name, _ in expected]}. Delete the file to rebuild it (its "
                "results are recomputed), or open it with the code version that wrote it."
            )
        columns = ", ".join(
            f"{name} {kind}{' PRIMARY KEY' if name == 'key' else ''}" for name, kind in self.COLUMNS
        )
        with self._connection:
            self._connection.execute(f"CREATE TABLE IF NOT EXISTS {self.TABLE} ({columns})")
            self._connection.execute(f"PRAGMA user_version = {int(self.VERSION)}")

    def _select_many(self, columns: Sequence[str], keys: Iterable[str]) -> list[tuple]:
        unique = list(dict.fromkeys(keys))
        selected = ", ".join(["key", *columns])
        rows: list[tuple] = []
        for start in range(0, len(unique), _CHUNK):
            chunk = unique[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            rows += self._connection.execute(
                f"SELECT {selected} FROM {self.TABLE} WHERE key IN ({marks})", chunk
            ).fetchall()
        return rows

    def _insert_many(self, rows: Iterable[Sequence[Any]]) -> None:
        """Insert or replace full rows (in `COLUMNS` order) in one transaction: all or nothing."""
        marks = ",".join("?" * len(self.COLUMNS))
        names = ", ".join(name for name, _ in self.COLUMNS)
        with self._connection:
            self._connection.executemany(
                f"INSERT OR REPLACE INTO {self.TABLE} ({names}) VALUES ({marks})", rows
            )

    def __len__(self) -> int:
        return int(self._connection.execute(f"SELECT COUNT(*) FROM {self.TABLE}").fetchone()[0])

    def close(self) -> None:
        self._connection.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class JsonStore(SqliteTable):
    """Persistent mapping of string keys to JSON values."""

    TABLE = "entries"
    COLUMNS = (("key", "TEXT"), ("value", "TEXT NOT NULL"))
    VERSION = 1

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        return {key: json.loads(value) for key, value in self._select_many(["value"], keys)}

    def put_many(self, items: Mapping[str, Any]) -> None:
        self._insert_many([(key, json.dumps(value)) for key, value in items.items()])
