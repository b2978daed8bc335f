"""`ChecksummedJSONLinesDataset`: a JSON-lines file that must match a pinned sha256 before it loads.

Hand-written because kedro-datasets has no integrity check: a vendored benchmark file that drifted
(evalplus #23, #47) would silently change every score. Missing or altered files stop the run with
an error that says where the file goes and where to get it. Read-only.
"""

import hashlib
import json
from pathlib import Path
from typing import Any

import pandas as pd
from kedro.io import AbstractDataset, DatasetError


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class ChecksummedJSONLinesDataset(AbstractDataset[None, pd.DataFrame]):
    """Loads one JSON object per line into a DataFrame after verifying the file's sha256."""

    def __init__(
        self,
        filepath: str,
        sha256: str,
        source_hint: str = "",
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """`source_hint` says where to get the file; it is part of the error when the file is bad."""
        self._filepath = Path(filepath)
        self._sha256 = sha256.lower()
        self._source_hint = source_hint
        self.metadata = metadata

    def load(self) -> pd.DataFrame:
        where = f"Place it at {self._filepath.resolve()}"
        hint = f" ({self._source_hint})" if self._source_hint else ""
        if not self._filepath.is_file():
            raise DatasetError(f"{self._filepath} is missing. {where}{hint}.")
        actual = file_sha256(self._filepath)
        if actual != self._sha256:
            raise DatasetError(
                f"{self._filepath} was altered: sha256 {actual} != pinned {self._sha256}. "
                f"Replace it with the pinned release. {where}{hint}."
            )
        with self._filepath.open(encoding="utf-8") as stream:
            records = [json.loads(line) for line in stream if line.strip()]
        return pd.DataFrame.from_records(records)

    def save(self, data: None) -> None:
        raise DatasetError(f"{self._filepath} is a pinned raw file; this dataset is read-only.")

    def _exists(self) -> bool:
        return self._filepath.is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "sha256": self._sha256}
