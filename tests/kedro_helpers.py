"""Helpers for running pipelines in tests with an in-memory catalog."""

from kedro.io import MemoryDataset


class KeptDataset(MemoryDataset):
    """Keeps intermediate results after the runner releases them, so tests can inspect them."""

    def _release(self) -> None:
        pass
