"""MBPP normalisation: entry points, the task's prompt block and the id ranges."""

import json
from pathlib import Path

import pytest

from apiedit_kedro.problems import mbpp_problems
from apiedit_kedro.problems.mbpp import MbppRecordError, entry_point, mbpp_split, task_prompt_block

SHARED_MBPP = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mbpp" / "mbpp.jsonl"


def test_prompt_block_is_the_standard_mbpp_task_block():
    block = task_prompt_block("Write a function to add.", ["assert add(1, 2) == 3"])
    assert block == (
        "You are an expert Python programmer, and here is your task: Write a function to add. "
        "Your code should pass these tests:\n\nassert add(1, 2) == 3\n"
    )


def test_entry_point_is_the_called_function_the_code_defines():
    code = "def helper(x):\n    return x\ndef solve(x):\n    return helper(x)\n"
    assert entry_point(code, ["assert solve(1) == 1"], task_id=1) == "solve"
    with pytest.raises(MbppRecordError, match="MBPP/7"):
        entry_point(code, ["assert other(1) == 1"], task_id=7)


def test_split_roles_follow_the_upstream_readme():
    assert [mbpp_split(i) for i in (1, 10, 11, 510, 511, 974)] == [
        "prompt",
        "prompt",
        "test",
        "test",
        "train",
        "train",
    ]


@pytest.mark.skipif(not SHARED_MBPP.is_file(), reason="the vendored MBPP copy is not present")
def test_all_974_records_normalise_with_unix_newlines():
    records = [json.loads(line) for line in SHARED_MBPP.read_text().splitlines()]
    rows = mbpp_problems(records)
    assert len(rows) == 974
    assert all(len(r["tests"]) == 3 and "\r" not in r["reference_solution"] for r in rows)
    assert sum(bool(r["test_setup"]) for r in rows) == 2
