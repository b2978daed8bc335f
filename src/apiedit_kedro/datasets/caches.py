"""Catalog entries for the run's persistent caches, so nodes reach them through the catalog.

Loading one of these datasets opens the cache (a sqlite file or a directory); there is nothing to
save: the nodes write into the cache as they go, which is what lets an interrupted run resume.
"""

from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from apiedit_kedro.models.cache import GenerationCache
from apiedit_kedro.study.store import JsonStore


class _CacheDataset(AbstractDataset):
    def __init__(self, filepath: str, metadata: dict[str, Any] | None = None) -> None:
        self._filepath = Path(filepath)
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "kind": type(self).__name__}

    def save(self, data: Any) -> None:
        raise DatasetError(
            f"{type(self).__name__} at {self._filepath} is written by the nodes that use it; "
            "it cannot be saved as a node output"
        )

    def _exists(self) -> bool:
        return self._filepath.exists()


class GenerationCacheDataset(_CacheDataset):
    """Opens the sqlite generation cache (`apiedit_kedro.models.cache.GenerationCache`)."""

    def load(self) -> GenerationCache:
        return GenerationCache(self._filepath)


class JsonStoreDataset(_CacheDataset):
    """Opens a sqlite key -> JSON store (execution results, edit logs)."""

    def load(self) -> JsonStore:
        return JsonStore(self._filepath)


class CacheDirectoryDataset(_CacheDataset):
    """A directory for cached artefacts (covariance statistics); loading creates it."""

    def load(self) -> Path:
        self._filepath.mkdir(parents=True, exist_ok=True)
        return self._filepath
