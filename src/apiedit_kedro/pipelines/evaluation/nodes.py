"""Nodes of the `evaluation` pipeline."""

import logging
from typing import Any

import pandas as pd

from apiedit_kedro.metrics.pass_at_k import pass_at_k_table
from apiedit_kedro.study.execution import build_requests, execute_cached, execution_table
from apiedit_kedro.study.store import JsonStore

logger = logging.getLogger(__name__)

EDIT_METRIC_COLUMNS = [
    "edit_seconds",
    "final_loss",
    "delta_norm",
    "rewrite_acc",
    "rephrase_acc",
    "locality",
]


def execute_generations(
    instant_generations: pd.DataFrame,
    sequential_generations: pd.DataFrame,
    benchmark: pd.DataFrame,
    api_mapping: pd.DataFrame,
    execution_store: JsonStore,
    evaluation: dict[str, Any],
) -> pd.DataFrame:
    """One method's generations (both regimes) executed in the edited and the pristine world."""
    generations = pd.concat(
        [frame for frame in (instant_generations, sequential_generations) if not frame.empty],
        ignore_index=True,
    )
    requests = build_requests(
        generations,
        benchmark,
        api_mapping,
        default_timeout_s=float(evaluation["default_timeout_s"]),
    )
    results = execute_cached(requests, execution_store, workers=evaluation.get("workers"))
    return execution_table(generations, results)


def combine_execution_results(*method_results: pd.DataFrame) -> pd.DataFrame:
    """All methods' execution results in one table."""
    return pd.concat([frame for frame in method_results if not frame.empty], ignore_index=True)


def compute_pass_at_k(execution_results: pd.DataFrame, evaluation: dict[str, Any]) -> pd.DataFrame:
    """pass@k at the compile, partial and full levels per model, method, regime, step and subset."""
    table = pass_at_k_table(execution_results, ks=tuple(evaluation["ks"]))
    missing = {"none"} - set(table["method"])
    if missing and not table.empty:
        logger.warning("pass@k has no unedited baseline rows (method 'none' was not run)")
    return table


def summarise_edit_metrics(*edit_logs: pd.DataFrame) -> pd.DataFrame:
    """Mean edit cost and token-level edit metrics per model, method and regime.

    For the sequential regime `final_drift_total` is the accumulated weight drift after the last edit.
    """
    logs = pd.concat([log for log in edit_logs if not log.empty], ignore_index=True)
    for column in [*EDIT_METRIC_COLUMNS, "drift_total"]:
        if column not in logs.columns:
            logs[column] = float("nan")
    keys = ["model", "method", "regime"]
    summary = logs.groupby(keys, sort=True)[EDIT_METRIC_COLUMNS].mean().reset_index()
    summary["n_edits"] = logs.groupby(keys, sort=True).size().to_numpy()
    final = logs.sort_values("edit_step").groupby(keys, sort=True)["drift_total"].last()
    summary["final_drift_total"] = final.to_numpy()
    return summary
