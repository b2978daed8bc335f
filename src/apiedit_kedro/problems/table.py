"""Normalise HumanEval and MBPP records into rows of the `problems` table, the contract every
pipeline reads problems by."""

import logging
from collections.abc import Iterable, Mapping

from apiedit_kedro.problems import mbpp
from apiedit_kedro.problems.humaneval import split_check_into_units

logger = logging.getLogger(__name__)

PROBLEM_COLUMNS = [
    "problem_id",
    "source",
    "task_number",
    "prompt",
    "prompt_format",
    "reference_solution",
    "prompt_in_reference",
    "tests",
    "test_setup",
    "entry_point",
    "dropped_constant_asserts",
    "mbpp_split",
]
HUMANEVAL_PROMPT_FORMAT = "humaneval_completion"


def _normalise_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def humaneval_problems(records: Iterable[Mapping]) -> list[dict]:
    """One row per HumanEval record; the reference solution is prompt + canonical solution."""
    rows = []
    for record in records:
        task_id = str(record["task_id"])
        split = split_check_into_units(record["test"], record["entry_point"], task_id=task_id)
        rows.append(
            {
                "problem_id": task_id,
                "source": "humaneval",
                "task_number": int(task_id.split("/")[1]),
                "prompt": record["prompt"],
                "prompt_format": HUMANEVAL_PROMPT_FORMAT,
                "reference_solution": record["prompt"] + record["canonical_solution"],
                # HumanEval programs are prompt + completion, so the prompt is the reference's prefix
                "prompt_in_reference": True,
                "tests": split.units,
                "test_setup": split.setup,
                "entry_point": record["entry_point"],
                "dropped_constant_asserts": split.dropped_constant_asserts,
                "mbpp_split": "",
            }
        )
    return rows


def mbpp_problems(records: Iterable[Mapping]) -> list[dict]:
    """One row per MBPP record: its three asserts are the units, `test_setup_code` the setup."""
    rows = []
    for record in records:
        task_id = int(record["task_id"])
        tests = [_normalise_newlines(str(t)) for t in record["test_list"]]
        code = _normalise_newlines(str(record["code"]))
        rows.append(
            {
                "problem_id": f"MBPP/{task_id}",
                "source": "mbpp",
                "task_number": task_id,
                "prompt": mbpp.task_prompt_block(str(record["text"]), tests),
                "prompt_format": mbpp.PROMPT_FORMAT,
                "reference_solution": code,
                "prompt_in_reference": False,
                "tests": tests,
                "test_setup": _normalise_newlines(str(record.get("test_setup_code") or "")),
                "entry_point": mbpp.entry_point(code, tests, task_id=task_id),
                "dropped_constant_asserts": 0,
                "mbpp_split": mbpp.mbpp_split(task_id),
            }
        )
    return rows
