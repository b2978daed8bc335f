"""HumanEval and MBPP problems normalised to one table (`problems` dataset contract).

Engine package: never imports Kedro. `humaneval` splits `check(candidate)` into assert units,
`mbpp` builds the task-specific part of the standard MBPP prompt, `table` joins both sources.
"""

from apiedit_kedro.problems.humaneval import split_check_into_units
from apiedit_kedro.problems.table import (
    PROBLEM_COLUMNS,
    humaneval_problems,
    mbpp_problems,
)

__all__ = [
    "PROBLEM_COLUMNS",
    "humaneval_problems",
    "mbpp_problems",
    "split_check_into_units",
]
