"""Nodes of the `adoption` pipeline: each wires one engine of `apiedit_kedro.metrics`."""

import logging
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from apiedit_kedro.metrics.adoption import (
    BENCHMARK_USAGE_COLUMNS,
    adoption_summary,
    label_executions,
    require_columns,
    with_usage_change,
)
from apiedit_kedro.metrics.comparison import paired_comparison
from apiedit_kedro.metrics.decomposition import failure_decomposition
from apiedit_kedro.metrics.report import (
    adoption_figure,
    build_report,
    failure_figure,
    fingerprint,
    sequential_figure,
)
from apiedit_kedro.metrics.taxonomy import error_taxonomy
from apiedit_kedro.study.contracts import GENERATION_KEYS

logger = logging.getLogger(__name__)

# a sample's keys but its index (rates are per group), then its verdict
LEVEL_COLUMNS = (
    *(key for key in GENERATION_KEYS if key != "sample_idx"),
    "compiles",
    "asserts_passed",
    "asserts_total",
    "full_pass",
)
_REMAKE = "re-create it with `kedro run --pipeline=evaluation`"


def label_adoption(
    execution_results: pd.DataFrame, benchmark: pd.DataFrame, api_mapping: pd.DataFrame
) -> pd.DataFrame:
    """One adoption label per sample of an edited item, with the item's usage change."""
    # checked before labelling, the expensive part, so a stale benchmark fails at once
    require_columns(
        benchmark,
        BENCHMARK_USAGE_COLUMNS,
        table="benchmark",
        hint="re-create it with `kedro run --pipeline=synthesis`",
    )
    unknown = sorted(set(execution_results["problem_id"]) - set(benchmark["problem_id"]))
    if unknown:
        raise ValueError(
            f"{len(unknown)} executed problems are not in the benchmark (e.g. {unknown[0]}); the "
            "executions and the benchmark come from different synthesis runs"
        )
    labels = with_usage_change(label_executions(execution_results, api_mapping), benchmark)
    logger.info(
        "adoption labels: %s", labels["label"].value_counts().to_dict() if len(labels) else {}
    )
    return labels


def summarise_adoption(adoption_labels: pd.DataFrame, adoption: dict[str, Any]) -> pd.DataFrame:
    """Share, count and Wilson interval of every label and the new-API reference rate."""
    return adoption_summary(adoption_labels, confidence=float(adoption["confidence"]))


def decompose_failures(execution_results: pd.DataFrame) -> pd.DataFrame:
    """Two-factor Shapley parts of every method's pass@1 change from `none`."""
    require_columns(execution_results, LEVEL_COLUMNS, table="execution_results", hint=_REMAKE)
    return failure_decomposition(execution_results)


def classify_errors(execution_results: pd.DataFrame, api_mapping: pd.DataFrame) -> pd.DataFrame:
    """The share of each failure class per method, regime and subset."""
    return error_taxonomy(execution_results, api_mapping)


def compare_with_baselines(
    execution_results: pd.DataFrame, adoption: dict[str, Any]
) -> pd.DataFrame:
    """pass@1 difference from `none` and `prepend_doc` with a paired bootstrap interval."""
    require_columns(execution_results, LEVEL_COLUMNS, table="execution_results", hint=_REMAKE)
    return paired_comparison(
        execution_results,
        n_resamples=int(adoption["bootstrap_resamples"]),
        seed=int(adoption["seed"]),
    )


def plot_adoption(adoption_summary: pd.DataFrame) -> Figure:
    """RQ3: the adoption mix per method and subset."""
    return adoption_figure(adoption_summary)


def plot_sequential(pass_at_k: pd.DataFrame) -> Figure:
    """RQ2: pass@1 of each level against the number of sequential edits."""
    return sequential_figure(pass_at_k)


def plot_failures(failure_decomposition: pd.DataFrame, error_taxonomy: pd.DataFrame) -> Figure:
    """RQ4: the Shapley parts and the error taxonomy per method."""
    return failure_figure(failure_decomposition, error_taxonomy)


def write_study_report(
    pass_at_k: pd.DataFrame,
    adoption_summary: pd.DataFrame,
    failure_decomposition: pd.DataFrame,
    error_taxonomy: pd.DataFrame,
    paired_comparison: pd.DataFrame,
    edit_metrics: pd.DataFrame,
    execution_results: pd.DataFrame,
    benchmark: pd.DataFrame,
    api_mapping: pd.DataFrame,
    model: dict[str, Any],
    generation: dict[str, Any],
    study: dict[str, Any],
) -> tuple[str, str]:
    """The self-contained HTML report and the same tables as Markdown."""
    run_info = {
        "model": model.get("name"),
        "model source": model.get("source"),
        "samples per problem": generation.get("n_samples"),
        "temperature": generation.get("temperature"),
        "max new tokens": generation.get("max_new_tokens"),
        "generation seed": generation.get("seed"),
        "study seed": study.get("seed"),
        "max APIs": study.get("max_apis"),
        "max problems per subset": study.get("max_problems_per_subset"),
        "specificity sample": study.get("specificity_sample"),
        "executed samples": len(execution_results),
        "benchmark items": len(benchmark),
        "APIs in the mapping": len(api_mapping),
    }
    fingerprints = {
        f"{name} fingerprint": fingerprint(frame)
        for name, frame in (
            ("benchmark", benchmark),
            ("api_mapping", api_mapping),
            ("execution_results", execution_results),
        )
    }
    return build_report(
        pass_at_k=pass_at_k,
        adoption_summary=adoption_summary,
        failure_decomposition=failure_decomposition,
        error_taxonomy=error_taxonomy,
        paired_comparison=paired_comparison,
        edit_metrics=edit_metrics,
        run_info=run_info,
        fingerprints=fingerprints,
    )
