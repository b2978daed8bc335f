"""Read-only Kedro datasets for the raw benchmark sources (HumanEval, MBPP)."""

from apiedit_kedro.datasets.humaneval import HumanEvalDataset
from apiedit_kedro.datasets.jsonlines import ChecksummedJSONLinesDataset

__all__ = ["ChecksummedJSONLinesDataset", "HumanEvalDataset"]
