"""Fixtures for the sandbox tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def sentinel(tmp_path: Path) -> Iterator[Path]:
    """A file outside every sandbox temp dir; adversarial programs try to change or delete it."""
    path = tmp_path / "sentinel.txt"
    path.write_text("untouched")
    before = (path.stat().st_mtime_ns, tmp_path.stat().st_mtime_ns)
    yield path
    assert path.read_text() == "untouched", "a sandboxed program changed a file outside its dir"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sentinel.txt"]
    after = (path.stat().st_mtime_ns, tmp_path.stat().st_mtime_ns)
    assert after == before, "a sandboxed program changed a timestamp outside its dir"
