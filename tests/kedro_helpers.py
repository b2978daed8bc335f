"""Helpers for tests that run pipelines: an in-memory dataset that keeps its data, and MBPP's path."""

from pathlib import Path

import pytest
from kedro.io import MemoryDataset

PROJECT_ROOT = Path(__file__).resolve().parents[1]
MBPP_COPIES = (
    PROJECT_ROOT / "data" / "01_raw" / "mbpp.jsonl",
    PROJECT_ROOT.parent / "shared" / "data" / "mbpp" / "mbpp.jsonl",
)


def mbpp_path() -> Path:
    """The local MBPP copy (skips the test when neither copy exists)."""
    for path in MBPP_COPIES:
        if path.is_file():
            return path
    pytest.skip("MBPP is not present (data/01_raw/mbpp.jsonl or ../shared/data/mbpp/mbpp.jsonl)")


class KeptDataset(MemoryDataset):
    """Keeps intermediate results after the runner releases them, so tests can inspect them."""

    def _release(self) -> None:
        pass
