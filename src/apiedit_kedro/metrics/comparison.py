"""Paired comparison of every method with the `none` and `prepend_doc` baselines.

For each model, regime, edit step, subset, level (compile, partial, full) and method, the
difference in pass@1 (method − reference), where a problem's pass@1 is the share of its samples
at the level; the interval is the seeded percentile bootstrap of `intervals.paired_bootstrap`
over the problems both runs share (a problem is (api_id, problem_id)), so each resample keeps a
problem's two values together. An interval that covers 0 is a difference the run cannot tell
from noise.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from apiedit_kedro.metrics.intervals import paired_bootstrap
from apiedit_kedro.metrics.pass_at_k import LEVELS, PROBLEM_COLUMNS, sample_levels

REFERENCES = ("none", "prepend_doc")
GROUP_COLUMNS = ("model", "regime", "edit_step", "subset")


def problem_pass_at_1(executions: pd.DataFrame) -> pd.DataFrame:
    """pass@1 per problem at each level: columns group, method, api_id, problem_id, levels."""
    scored = sample_levels(executions)
    for column in PROBLEM_COLUMNS:
        scored[column] = scored[column].fillna("")
    return (
        scored.groupby([*GROUP_COLUMNS, "method", *PROBLEM_COLUMNS], sort=True, dropna=False)[
            [f"level_{level}" for level in LEVELS]
        ]
        .mean()
        .reset_index()
    )


def paired_comparison(
    executions: pd.DataFrame,
    *,
    references: Sequence[str] = REFERENCES,
    n_resamples: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """Difference in pass@1 of each method from each reference, with a paired bootstrap CI."""
    columns = [
        *GROUP_COLUMNS,
        "method",
        "reference",
        "level",
        "pass_at_1",
        "pass_at_1_reference",
        "difference",
        "ci_low",
        "ci_high",
        "n_problems",
        "significant",
    ]
    per_problem = problem_pass_at_1(executions) if not executions.empty else None
    rows = []
    if per_problem is not None:
        keys = [*GROUP_COLUMNS, *PROBLEM_COLUMNS]
        for reference in references:
            base = per_problem[per_problem["method"] == reference]
            if base.empty:
                continue
            others = per_problem[per_problem["method"] != reference]
            paired = others.merge(base.drop(columns="method"), on=keys, suffixes=("", "_ref"))
            for key, group in paired.groupby([*GROUP_COLUMNS, "method"], sort=True):
                for level in LEVELS:
                    a = group[f"level_{level}"].to_numpy()
                    b = group[f"level_{level}_ref"].to_numpy()
                    difference, low, high = paired_bootstrap(
                        a, b, n_resamples=n_resamples, seed=seed
                    )
                    rows.append(
                        {
                            **dict(zip([*GROUP_COLUMNS, "method"], key, strict=True)),
                            "reference": reference,
                            "level": level,
                            "pass_at_1": float(a.mean()),
                            "pass_at_1_reference": float(b.mean()),
                            "difference": difference,
                            "ci_low": low,
                            "ci_high": high,
                            "n_problems": len(group),
                            "significant": bool(low > 0 or high < 0),
                        }
                    )
    return pd.DataFrame(rows, columns=columns)
