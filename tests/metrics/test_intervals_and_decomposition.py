"""Wilson intervals, the paired bootstrap and the Shapley parts against hand computations."""

import math

import numpy as np
import pandas as pd
import pytest

from apiedit_kedro.metrics.comparison import paired_comparison
from apiedit_kedro.metrics.decomposition import failure_decomposition, shapley_two_factor
from apiedit_kedro.metrics.intervals import paired_bootstrap, wilson_interval


@pytest.mark.parametrize(
    ("successes", "n", "expected"),
    [
        # Published 95 % Wilson intervals (Newcombe 1998, Table I: 81/263, 15/148, 0/20, 1/29).
        (81, 263, (0.2553, 0.3662)),
        (15, 148, (0.0624, 0.1605)),
        (0, 20, (0.0000, 0.1611)),
        (1, 29, (0.0061, 0.1718)),
    ],
)
def test_wilson_matches_published_values(successes, n, expected):
    low, high = wilson_interval(successes, n)
    assert low == pytest.approx(expected[0], abs=1e-4)
    assert high == pytest.approx(expected[1], abs=1e-4)


def test_wilson_of_nothing_is_undefined_and_bad_counts_fail():
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_paired_bootstrap_reproduces_a_hand_loop_and_is_seeded():
    a = np.array([1, 0, 1, 1, 0, 1, 0, 1], dtype=float)
    b = np.array([0, 0, 1, 0, 0, 1, 0, 0], dtype=float)
    mean, low, high = paired_bootstrap(a, b, n_resamples=500, seed=7)
    rng = np.random.default_rng(7)
    resampled = []
    for _ in range(500):
        picks = rng.integers(0, len(a), size=len(a))
        resampled.append(np.mean(a[picks]) - np.mean(b[picks]))  # pairs resampled together
    assert mean == pytest.approx(3 / 8)
    assert (low, high) == pytest.approx(tuple(np.quantile(resampled, [0.025, 0.975])))
    assert paired_bootstrap(a, b, n_resamples=500, seed=7) == (mean, low, high)


def test_pairing_removes_shared_problem_difficulty():
    # Problem difficulty varies a lot, the method adds exactly +0.1 on every problem: the paired
    # interval is the single point 0.1, an unpaired one would be wide.
    difficulty = np.linspace(0.0, 0.8, 20)
    mean, low, high = paired_bootstrap(difficulty + 0.1, difficulty, seed=1)
    assert (mean, low, high) == pytest.approx((0.1, 0.1, 0.1))


def test_shapley_parts_by_hand_and_sum_exactly():
    compile_part, post_part = shapley_two_factor(c0=0.8, p0=0.5, c1=0.4, p1=0.25)
    assert compile_part == pytest.approx((0.4 - 0.8) * (0.5 + 0.25) / 2)  # -0.15
    assert post_part == pytest.approx((0.25 - 0.5) * (0.8 + 0.4) / 2)  # -0.15
    assert compile_part + post_part == pytest.approx(0.4 * 0.25 - 0.8 * 0.5, abs=1e-15)
    rng = np.random.default_rng(0)
    for c0, p0, c1, p1 in rng.random((200, 4)):
        parts = shapley_two_factor(c0, p0, c1, p1)
        assert sum(parts) == pytest.approx(c1 * p1 - c0 * p0, abs=1e-12)


def _samples(method, outcomes, subset="reliability"):
    """Execution rows: one problem per outcome tuple of (compiles, full_pass) samples."""
    rows = []
    for index, samples in enumerate(outcomes):
        for sample_idx, (compiles, full) in enumerate(samples):
            rows.append(
                {
                    "model": "m",
                    "method": method,
                    "regime": "instant",
                    "edit_step": 1,
                    "api_id": "re.sub",
                    "problem_id": f"P/{index}",
                    "subset": subset,
                    "sample_idx": sample_idx,
                    "compiles": compiles,
                    "asserts_passed": int(full),
                    "asserts_total": 1,
                    "full_pass": full,
                }
            )
    return rows


def test_failure_decomposition_on_hand_built_executions():
    # none: 4 problems, compile 4/4, pass 2/4 -> c0 = 1, p0 = 0.5
    none = _samples("none", [[(True, True)], [(True, True)], [(True, False)], [(True, False)]])
    # rome: compile 2/4, pass 1/4 -> c1 = 0.5, p1 = 0.5
    rome = _samples("rome", [[(True, True)], [(False, False)], [(True, False)], [(False, False)]])
    table = failure_decomposition(pd.DataFrame(none + rome))
    [row] = table.to_dict("records")
    assert row["method"] == "rome" and row["k"] == 1
    assert row["pass_change"] == pytest.approx(-0.25)
    assert row["compile_part"] == pytest.approx((0.5 - 1.0) * (0.5 + 0.5) / 2)
    assert row["post_compile_part"] == pytest.approx(0.0)
    assert row["compile_part"] + row["post_compile_part"] == pytest.approx(row["pass_change"])


def test_paired_comparison_pairs_by_problem():
    none = _samples("none", [[(True, False)], [(True, True)], [(True, False)]])
    ft = _samples("ft", [[(True, True)], [(True, True)], [(True, True)], [(True, True)]])
    table = paired_comparison(pd.DataFrame(none + ft), n_resamples=200, seed=3)
    full = table[(table["level"] == "full") & (table["reference"] == "none")]
    [row] = full.to_dict("records")
    assert row["n_problems"] == 3  # P/3 has no `none` run: it cannot be paired
    assert row["difference"] == pytest.approx(2 / 3)
    assert row["pass_at_1_reference"] == pytest.approx(1 / 3)
    assert "prepend_doc" not in set(table["reference"])  # not run: no comparison
