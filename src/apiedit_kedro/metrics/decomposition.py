"""Two-factor Shapley decomposition of a pass-rate change into compilation and post-compilation.

At k = 1 (pass@1, estimated per problem as the share of its samples at a level and averaged over
problems), a method's full-pass rate factors as pass = c · p, where c is the compile rate and
p = pass / c the full-pass rate given compilation (p = 0 when c = 0). Against the unedited
baseline `none` (subscript 0) the change c₁p₁ − c₀p₀ splits into the Shapley values of the two
factors:

- compile part      (c₁ − c₀)(p₀ + p₁)/2
- post-compile part (p₁ − p₀)(c₀ + c₁)/2

and the two parts sum to the change exactly (expand the products). A negative compile part says
the edit broke programs before any test ran; a negative post-compile part says programs still
compile but stopped being correct.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from apiedit_kedro.metrics.pass_at_k import PROBLEM_COLUMNS, sample_levels

BASELINE = "none"
GROUP_COLUMNS = ("model", "regime", "edit_step", "subset")


def shapley_two_factor(c0: float, p0: float, c1: float, p1: float) -> tuple[float, float]:
    """(compile part, post-compile part) of c1·p1 − c0·p0."""
    return (c1 - c0) * (p0 + p1) / 2, (p1 - p0) * (c0 + c1) / 2


def pass_at_1_rates(executions: pd.DataFrame, group_columns: Sequence[str]) -> pd.DataFrame:
    """Per group: compile and full pass@1 (macro over problems) and n_problems."""
    scored = sample_levels(executions)
    problems = [column for column in PROBLEM_COLUMNS if column in scored.columns]
    for column in problems:
        scored[column] = scored[column].fillna("")
    per_problem = (
        scored.groupby([*group_columns, *problems], dropna=False, sort=True)[
            ["level_compile", "level_partial", "level_full"]
        ]
        .mean()
        .reset_index()
    )
    return (
        per_problem.groupby(list(group_columns), dropna=False, sort=True)
        .agg(
            compile_rate=("level_compile", "mean"),
            partial_rate=("level_partial", "mean"),
            pass_rate=("level_full", "mean"),
            n_problems=("level_full", "size"),
        )
        .reset_index()
    )


def failure_decomposition(executions: pd.DataFrame) -> pd.DataFrame:
    """Per model, regime, edit step, subset and method ≠ none: the Shapley parts at k = 1."""
    columns = [
        *GROUP_COLUMNS,
        "method",
        "k",
        "compile_rate_none",
        "pass_given_compile_none",
        "compile_rate",
        "pass_given_compile",
        "pass_rate_none",
        "pass_rate",
        "pass_change",
        "compile_part",
        "post_compile_part",
        "n_problems",
    ]
    rates = pass_at_1_rates(executions, [*GROUP_COLUMNS, "method"])
    if rates.empty:
        return pd.DataFrame(columns=columns)
    rates["pass_given_compile"] = (rates["pass_rate"] / rates["compile_rate"]).where(
        rates["compile_rate"] > 0, 0.0
    )
    baseline = rates[rates["method"] == BASELINE].drop(columns=["method", "partial_rate"])
    treated = rates[rates["method"] != BASELINE]
    merged = treated.merge(baseline, on=list(GROUP_COLUMNS), suffixes=("", "_none"), how="inner")
    rows = []
    for row in merged.to_dict("records"):
        compile_part, post_part = shapley_two_factor(
            row["compile_rate_none"],
            row["pass_given_compile_none"],
            row["compile_rate"],
            row["pass_given_compile"],
        )
        rows.append(
            {
                **{column: row[column] for column in (*GROUP_COLUMNS, "method")},
                "k": 1,
                "compile_rate_none": row["compile_rate_none"],
                "pass_given_compile_none": row["pass_given_compile_none"],
                "compile_rate": row["compile_rate"],
                "pass_given_compile": row["pass_given_compile"],
                "pass_rate_none": row["pass_rate_none"],
                "pass_rate": row["pass_rate"],
                "pass_change": row["pass_rate"] - row["pass_rate_none"],
                "compile_part": compile_part,
                "post_compile_part": post_part,
                "n_problems": int(row["n_problems"]),
            }
        )
    return pd.DataFrame(rows, columns=columns)
