"""Error taxonomy (RQ4): which failure class each failed sample falls in, and their shares.

Every sample that does not fully pass in the edited world gets exactly one class, from the
sandbox's first failure (`error_type`, in stage order load -> setup -> tests) and the new-API
evidence of `metrics.adoption`:

- `syntax_error`: the program does not parse (error_type `syntax_error`);
- `removed_api`: it references an API removed in its world (`removed_api`);
- `new_api_misuse`: the first failure is a Python exception raised in or by a call of a new API
  of its world (`adoption.new_api_exception`: the message names the new API, or a new API had
  been called);
- `assertion_failure`: a test's assert failed (`AssertionError`);
- `timeout`: the wall-clock, CPU or per-unit time limit (`timeout`);
- `sandbox_error`: the harness could not judge the sample (`sandbox_error`, `static_scan_failed`,
  `no_tests`);
- `other_runtime_error`: any other exception or verdict (NameError, TypeError outside the new
  API, guard violations, memory limit, crashes, early exits, tampering).

`error_taxonomy` gives per model × method × regime × subset the count of each class and its
share of all samples of the group (`share`) and of the failed ones (`share_of_failures`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from apiedit_kedro.apis.mapping import ApiMapping, parse_mappings
from apiedit_kedro.metrics.adoption import (
    _calls,
    item_world,
    new_api_exception,
    require_columns,
)

FAILURE_CLASSES = (
    "syntax_error",
    "removed_api",
    "new_api_misuse",
    "other_runtime_error",
    "assertion_failure",
    "timeout",
    "sandbox_error",
)
GROUP_COLUMNS = ("model", "method", "regime", "subset")
_HARNESS_ERRORS = frozenset({"sandbox_error", "static_scan_failed", "no_tests"})
REQUIRED_COLUMNS = (
    *GROUP_COLUMNS,
    "api_id",
    "world_api_ids",
    "full_pass",
    "error_type",
    "error_message",
    "new_api_calls_by_api",
)


def failure_class(row: Mapping[str, Any], mappings: Mapping[str, ApiMapping]) -> str:
    """The class of one failed sample ("" for a full pass)."""
    if bool(row["full_pass"]):
        return ""
    error_type = str(row.get("error_type") or "")
    if error_type == "syntax_error":
        return "syntax_error"
    if error_type == "removed_api":
        return "removed_api"
    if error_type == "timeout":
        return "timeout"
    if error_type in _HARNESS_ERRORS:
        return "sandbox_error"
    if error_type == "AssertionError":
        return "assertion_failure"
    for api_id in item_world(row):
        if api_id in mappings and new_api_exception(row, mappings[api_id], _calls(row, api_id)):
            return "new_api_misuse"
    return "other_runtime_error"


def error_taxonomy(executions: pd.DataFrame, api_mapping: pd.DataFrame) -> pd.DataFrame:
    """Count and shares of each failure class per model, method, regime and subset."""
    require_columns(
        executions,
        REQUIRED_COLUMNS,
        table="execution_results",
        hint="re-create it with `kedro run --pipeline=evaluation`",
    )
    columns = [
        *GROUP_COLUMNS,
        "failure_class",
        "count",
        "n_samples",
        "n_failures",
        "share",
        "share_of_failures",
    ]
    if executions.empty:
        return pd.DataFrame(columns=columns)
    mappings = {m.api_id: m for m in parse_mappings(api_mapping.to_dict("records"))}
    classes = [failure_class(row, mappings) for row in executions.to_dict("records")]
    frame = executions[list(GROUP_COLUMNS)].assign(failure_class=classes)
    rows = []
    for key, group in frame.groupby(list(GROUP_COLUMNS), sort=True, dropna=False):
        failures = group[group["failure_class"] != ""]
        counts = failures["failure_class"].value_counts()
        for failure in FAILURE_CLASSES:
            count = int(counts.get(failure, 0))
            rows.append(
                {
                    **dict(zip(GROUP_COLUMNS, key, strict=True)),
                    "failure_class": failure,
                    "count": count,
                    "n_samples": len(group),
                    "n_failures": len(failures),
                    "share": count / len(group),
                    "share_of_failures": count / len(failures) if len(failures) else 0.0,
                }
            )
    return pd.DataFrame(rows, columns=columns)
