"""pass@k on hand-computed examples, including the level nesting and the k <= n rule."""

import pandas as pd
import pytest

from apiedit_kedro.metrics.pass_at_k import pass_at_k_table


def _sample(problem_id, compiles, passed, total, full, **keys):
    return {
        "model": "m",
        "method": keys.get("method", "rome"),
        "regime": "instant",
        "edit_step": 1,
        "subset": "generalization",
        "api_id": "math.sqrt",
        "problem_id": problem_id,
        "compiles": compiles,
        "asserts_passed": passed,
        "asserts_total": total,
        "full_pass": full,
    }


def _value(table, level, k, method="rome"):
    row = table[(table.level == level) & (table.k == k) & (table.method == method)]
    assert len(row) == 1
    return row.iloc[0]["value"]


def test_hand_computed_pass_at_k_over_two_problems():
    # Problem A: 5 samples, 2 full passes, 3 compile, 3 partial. Problem B: 5 samples, none compile.
    samples = [
        _sample("A", True, 3, 3, True),
        _sample("A", True, 3, 3, True),
        _sample("A", True, 1, 3, False),
        _sample("A", False, 0, 3, False),
        _sample("A", False, 0, 3, False),
    ] + [_sample("B", False, 0, 2, False) for _ in range(5)]
    table = pass_at_k_table(pd.DataFrame(samples))

    # A: c_full=2 -> pass@1 = 2/5, pass@3 = 1 - C(3,3)/C(5,3) = 0.9, pass@5 = 1; B: 0.
    assert _value(table, "full", 1) == pytest.approx((0.4 + 0.0) / 2)
    assert _value(table, "full", 3) == pytest.approx((0.9 + 0.0) / 2)
    assert _value(table, "full", 5) == pytest.approx((1.0 + 0.0) / 2)
    # A: c_compile=3 -> pass@1 = 0.6, pass@3 = 1 - 0 (n - c = 2 < 3) = 1.
    assert _value(table, "compile", 1) == pytest.approx(0.3)
    assert _value(table, "compile", 3) == pytest.approx(0.5)
    assert _value(table, "partial", 1) == pytest.approx(0.3)
    assert set(table.n_problems) == {2}
    # Mean share of tests passed: A = (1 + 1 + 1/3 + 0 + 0) / 5, B = 0.
    assert table.iloc[0]["mean_assert_share"] == pytest.approx((7 / 3 / 5) / 2)


def test_levels_are_nested_even_when_raw_flags_disagree():
    # A sample that "passes" tests without compiling (e.g. it referenced a removed API in a dead
    # branch) counts at no level.
    samples = [_sample("A", False, 3, 3, True)]
    table = pass_at_k_table(pd.DataFrame(samples), ks=(1,))
    assert set(table["value"]) == {0.0}


def test_k_larger_than_samples_is_not_reported():
    samples = [_sample("A", True, 1, 1, True), _sample("A", True, 1, 1, True)]
    table = pass_at_k_table(pd.DataFrame(samples))
    assert sorted(set(table.k)) == [1]


def test_groups_are_kept_apart():
    samples = [_sample("A", True, 1, 1, True, method="none"), _sample("A", False, 0, 1, False)]
    table = pass_at_k_table(pd.DataFrame(samples), ks=(1,))
    assert _value(table, "full", 1, method="none") == 1.0
    assert _value(table, "full", 1, method="rome") == 0.0


def test_bad_k_and_missing_columns_are_rejected():
    frame = pd.DataFrame([_sample("A", True, 1, 1, True)])
    with pytest.raises(ValueError, match="k >= 1"):
        pass_at_k_table(frame, ks=(0,))
    with pytest.raises(ValueError, match="subset"):
        pass_at_k_table(frame.drop(columns=["subset"]))
