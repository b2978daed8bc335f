"""Items and their validation through the real sandbox, on hand-written problems.

The usage check must fail (so `usage_enforced` is True) for one example of each usage kind, and an
unchanged usage or a call the change does not touch must not count as enforced.
"""

import pandas as pd
import pytest

from apiedit_kedro.apis.catalog import catalog_to_records
from apiedit_kedro.apis.mapping import parse_mappings
from apiedit_kedro.apis.usages import detect_api_uses
from apiedit_kedro.benchmark import plan_items, validate_instant
from apiedit_kedro.benchmark.settings import SandboxRun
from apiedit_kedro.sandbox import execute

RUN = SandboxRun(timeout_s=20.0, unit_timeout_s=10.0, workers=2)

# (problem id, solution, tests, API, usage kind, enforced?)
PROGRAMS = [
    (
        "reorder",
        "import re\n\ndef has_digit(s):\n    return re.search(r'\\d', s) is not None\n",
        ["assert has_digit('a1')", "assert not has_digit('ab')"],
        "re.search",
        "reorder",
        True,
    ),
    (
        "pack",
        "import heapq\n\ndef merged(a, b):\n    return list(heapq.merge(a, b))\n",
        ["assert merged([1, 4], [2, 3]) == [1, 2, 3, 4]"],
        "heapq.merge",
        "pack_varargs",
        True,
    ),
    (
        "keyword_only",
        "def size(xs):\n    return len(xs)\n",
        ["assert size([1, 2, 3]) == 3"],
        "builtins.len",
        "keyword_only",
        True,
    ),
    (
        "rename_keywords",
        "def order(xs):\n    return sorted(xs, key=lambda x: -x)\n",
        ["assert order([1, 3, 2]) == [3, 2, 1]"],
        "builtins.sorted",
        "rename_keywords",
        True,
    ),
    (
        # `sorted(xs)` passes no renamed keyword: the new name alone already works
        "rename_untouched",
        "def order(xs):\n    return sorted(xs)\n",
        ["assert order([3, 1, 2]) == [1, 2, 3]"],
        "builtins.sorted",
        "rename_keywords",
        False,
    ),
    (
        "same",
        "from collections import Counter\n\ndef most(xs):\n    return Counter(xs).most_common(1)[0][0]\n",
        ["assert most([1, 2, 2]) == 2"],
        "collections.Counter",
        "same",
        False,
    ),
]


@pytest.fixture(scope="module")
def mappings(api_catalog):
    return {m.api_id: m for m in parse_mappings(catalog_to_records(api_catalog))}


def _edited_world_request(code: str, tests: list[str], world: list[dict]) -> dict:
    return {
        "code": code,
        "tests": tests,
        "setup": "",
        "world": "edited",
        "mappings": world,
        "timeout_s": 10.0,
    }


def _problems() -> pd.DataFrame:
    rows = [
        {
            "problem_id": f"X/{name}",
            "source": "mbpp",
            "prompt": "task",
            "prompt_format": "mbpp_3shot",
            "reference_solution": solution,
            "prompt_in_reference": False,
            "tests": tests,
            "test_setup": "",
            "entry_point": "",
        }
        for name, solution, tests, *_ in PROGRAMS
    ]
    return pd.DataFrame(rows)


def _usages(problems: pd.DataFrame, catalogued: set[str]) -> pd.DataFrame:
    rows = []
    for problem in problems.itertuples(index=False):
        for use in detect_api_uses(problem.reference_solution, builtins_in_scope=catalogued):
            rows.append(
                {
                    "problem_id": problem.problem_id,
                    "where": "solution",
                    "api": use.api,
                    "references": use.references,
                    "catalogued": use.api in catalogued,
                }
            )
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def checked(mappings):
    problems = _problems()
    usages = _usages(problems, set(mappings))
    items, excluded = plan_items(problems, usages, mappings)
    assert not excluded, excluded
    return items, validate_instant(problems, items, mappings, RUN)


@pytest.mark.parametrize(("name", "api_id", "kind", "enforced"), [p[:1] + p[3:] for p in PROGRAMS])
def test_the_new_name_with_the_old_usage_fails_exactly_when_the_usage_changed(
    checked, name, api_id, kind, enforced
):
    items, validation = checked
    item = items.set_index("item_id").loc[f"X/{name}@{api_id}"]
    assert item["usage_kind"] == kind
    rows = validation[(validation["problem_id"] == f"X/{name}") & (validation["api_id"] == api_id)]
    by_check = rows.set_index("check")
    assert by_check.loc["new_instant", "ok"] and by_check.loc["old_instant", "ok"]
    assert by_check.loc["new_pristine", "ok"]
    if enforced:
        usage = by_check.loc["usage_instant"]
        assert usage["ok"] and not usage["full_pass"]
        # a reordered call runs with swapped arguments and fails its asserts; the others are
        # rejected by the new signature itself
        expected = "AssertionError" if kind == "reorder" else "TypeError"
        assert usage["error_type"] == expected, usage["error_message"]
    else:
        # no program differs from the canonical rewrite, so nothing can enforce a usage change
        assert "usage_instant" not in by_check.index
        assert pd.isna(item["renamed_only"]) or item["renamed_only"] is None


def test_values_made_the_old_way_are_instances_of_the_relocated_class(api_catalog):
    records = catalog_to_records(api_catalog)
    world = [
        r for r in records if r["api_id"] in ("builtins.int", "builtins.list", "builtins.dict")
    ]
    program = (
        "def kinds(v):\n"
        "    return (isinstance(v, my_builtin_int), isinstance(v, (my_builtin_list, my_builtin_dict)),\n"
        "            issubclass(bool, my_builtin_int), isinstance(my_builtin_int('3'), my_builtin_int))\n"
    )
    tests = [
        "assert kinds(5) == (True, False, True, True)",
        "assert kinds([1]) == (False, True, True, True)",
        "assert kinds({}) == (False, True, True, True)",
        "assert kinds('x') == (False, False, True, True)",
    ]
    [result] = execute([_edited_world_request(program, tests, world)], workers=1, progress=False)
    assert result["full_pass"], result["error_message"]
    assert result["asserts_passed"] == 4


def test_constants_and_unsubclassable_classes_live_on_under_their_new_names(api_catalog):
    records = {r["api_id"]: r for r in catalog_to_records(api_catalog)}
    world = [records[a] for a in ("math.pi", "sys.maxsize", "builtins.bool", "operator.itemgetter")]
    programs = {
        "new": "import sys\n\ndef f():\n    return (round(my_math_pi, 2), sys.largest_index_v2 > 0,"
        " isinstance(True, my_builtin_bool), my_operator_itemgetter(1)((5, 6)))\n",
        "old_constant": "import math\n\ndef f():\n    return math.pi\n",
        "old_from_import": "from math import pi\n\ndef f():\n    return pi\n",
        "old_class": "def f():\n    return bool(1)\n",
    }
    requests = [
        _edited_world_request(
            code,
            ["assert f() == (3.14, True, True, 6)"] if name == "new" else ["assert f()"],
            world,
        )
        for name, code in programs.items()
    ]
    results = dict(zip(programs, execute(requests, workers=1, progress=False), strict=True))
    assert results["new"]["full_pass"], results["new"]["error_message"]
    for name in ("old_constant", "old_from_import", "old_class"):
        assert not results[name]["full_pass"] and results[name]["old_api_refs"] >= 1, name


def _failing_sandbox(fail_rounds: int):
    """The real sandbox, except that in its first `fail_rounds` calls every edited-world run comes
    back as a sandbox failure (the record a child that died before the program ran gives):
    injected, because no portable way makes this sandbox fail on demand."""
    calls = {"n": 0}

    def run(requests, **kwargs):
        results = execute(requests, **kwargs)
        calls["n"] += 1
        if calls["n"] > fail_rounds:
            return results
        return [
            {
                **result,
                "full_pass": False,
                "error_type": "sandbox_error",
                "error_message": "the sandbox failed inside the child before the program ran",
            }
            if request["world"] == "edited"
            else result
            for request, result in zip(requests, results, strict=True)
        ]

    return run


def test_a_sandbox_failure_is_run_again_not_counted_against_the_item(
    mappings, checked, monkeypatch
):
    from apiedit_kedro.benchmark import validation

    problems = _problems()
    items, _ = plan_items(problems, _usages(problems, set(mappings)), mappings)
    monkeypatch.setattr(validation, "execute", _failing_sandbox(fail_rounds=1))
    recovered = validate_instant(problems, items, mappings, RUN)
    pd.testing.assert_frame_equal(
        recovered.drop(columns="seconds"), checked[1].drop(columns="seconds")
    )


def test_a_sandbox_that_fails_twice_stops_the_synthesis(mappings, monkeypatch):
    from apiedit_kedro.benchmark import validation

    problems = _problems()
    items, _ = plan_items(problems, _usages(problems, set(mappings)), mappings)
    monkeypatch.setattr(validation, "execute", _failing_sandbox(fail_rounds=2))
    with pytest.raises(validation.SandboxValidationError, match="failed inside the sandbox, twice"):
        validate_instant(problems, items, mappings, RUN)
