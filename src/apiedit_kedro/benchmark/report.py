"""`synthesis_report`: the benchmark's counts next to the study's, and every exclusion."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from apiedit_kedro.benchmark.assembly import REPORT_COLUMNS, SUBSETS, report_row


def _api_family(api_id: str) -> str:
    return "builtin" if api_id.startswith("builtins.") else "module"


def summarise(
    benchmark: pd.DataFrame,
    api_mapping: pd.DataFrame,
    exclusions: pd.DataFrame,
    study_counts: Mapping[str, int],
) -> pd.DataFrame:
    """Count rows (record `count`) keyed by what they count in `reason`, then the exclusions."""
    rows = []

    def count(reason: str, value: int, **keys: str) -> None:
        rows.append(report_row("count", "benchmark", reason, value=int(value), **keys))

    for subset in SUBSETS:
        part = benchmark[benchmark["subset"] == subset]
        for source in ("humaneval", "mbpp"):
            count("items", (part["source"] == source).sum(), subset=subset, source=source)
        count("items", len(part), subset=subset, source="all")
        if subset in study_counts:
            rows.append(
                report_row(
                    "study_count",
                    "study",
                    "problems (arXiv 2511.03182 v1)",
                    subset=subset,
                    value=int(study_counts[subset]),
                )
            )
    count("items", len(benchmark), subset="all", source="all")
    edited = benchmark[benchmark["subset"] != "specificity"]
    count("distinct problems in edited items", edited["problem_id"].nunique())
    for kind, part in edited.groupby("usage_kind"):
        count("items by usage kind", len(part), subset=str(kind))
        count("usage-enforced items by usage kind", part["usage_enforced"].sum(), subset=str(kind))
    count("usage-enforced items", edited["usage_enforced"].sum())
    count("rename-only items (usage not enforced)", (~edited["usage_enforced"]).sum())
    families = edited["api_id"].map(_api_family)
    for family in ("builtin", "module"):
        count("items by API family", (families == family).sum(), subset=family)
        count(
            "validated APIs by family",
            (api_mapping["api_id"].map(_api_family) == family).sum(),
            subset=family,
        )
    per_api = edited.groupby("api_id").size()
    for stat, value in (
        ("min", per_api.min()),
        ("median", per_api.median()),
        ("max", per_api.max()),
    ):
        count(f"items per API ({stat})", round(float(value)))
    count("validated APIs", len(api_mapping))
    count("validated APIs that change the usage", api_mapping["changes_usage"].sum())
    if "apis" in study_counts:
        rows.append(
            report_row(
                "study_count",
                "study",
                "APIs (arXiv 2511.03182 v1)",
                value=int(study_counts["apis"]),
            )
        )
    for api in api_mapping.itertuples(index=False):
        rows.append(
            report_row(
                "validated_api",
                "benchmark",
                api.kind,
                api_id=api.api_id,
                value=int(api.n_reliability + api.n_generalization),
            )
        )
    report = pd.concat([pd.DataFrame(rows, columns=REPORT_COLUMNS), exclusions], ignore_index=True)
    report["value"] = report["value"].astype(int)
    return report.astype({c: str for c in REPORT_COLUMNS if c != "value"})
