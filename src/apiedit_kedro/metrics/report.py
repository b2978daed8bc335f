"""The study report: figures (matplotlib) and one self-contained HTML page plus Markdown tables.

Sections: RQ1 (instant pass@1/3/5 per level and subset, one row per method), RQ2 (sequential
curves of each level against the number of edits, and their table), RQ3 (the adoption mix as
stacked bars and the new-API reference rate, also split into usage-enforced and rename-only
items), RQ4 (the error taxonomy and the Shapley parts of every pass-rate
change), the paired comparison with `none` and `prepend_doc`, the edit costs and token-level
metrics, and the run's scale, model, seeds and dataset fingerprints. Figures are embedded as
base64 PNG, so the HTML file needs nothing beside it.

The scale verdict is plain: a run with fewer than `MIN_PROBLEMS_TO_CONCLUDE` problems per
(regime, subset), or whose paired comparisons are all indistinguishable from 0, says that it
cannot support a conclusion.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: figures are only ever written to files
import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from apiedit_kedro.metrics.adoption import FAULTS, LABELS, NEW_API_REFERENCE
from apiedit_kedro.metrics.pass_at_k import LEVELS
from apiedit_kedro.metrics.taxonomy import FAILURE_CLASSES

MIN_PROBLEMS_TO_CONCLUDE = 30
SUBSETS = ("reliability", "generalization", "specificity")
_ADOPTION_STACK = (
    "correct_adoption",
    *(f"faulty_adoption/{f}" for f in FAULTS),
    "workaround",
    "deprecated_use",
    "other_failure",
)


def _method_order(methods: Sequence[str]) -> list[str]:
    first = [m for m in ("none", "prepend_doc") if m in set(methods)]
    return first + sorted(set(methods) - set(first))


# ----------------------------------------------------------------------------- figures


def adoption_figure(summary: pd.DataFrame) -> Figure:
    """RQ3: stacked bars of the adoption mix per method and subset (instant, all steps pooled)."""
    subsets = [s for s in SUBSETS if s in set(summary.get("subset", []))] or ["(none)"]
    figure, axes = plt.subplots(1, len(subsets), figsize=(5 * len(subsets), 4), squeeze=False)
    for axis, subset in zip(axes[0], subsets, strict=True):
        part = summary[(summary["subset"] == subset) & summary["measure"].isin(_ADOPTION_STACK)]
        if part.empty:
            axis.set_title(f"{subset}: no samples")
            continue
        pooled = part.groupby(["method", "measure"])[["count", "n_samples"]].sum().reset_index()
        table = pooled.pivot(index="method", columns="measure", values="count").fillna(0)
        table = table.reindex(_method_order(list(table.index)))
        table = table.reindex(columns=[m for m in _ADOPTION_STACK if m in table.columns])
        shares = table.div(table.sum(axis=1).where(lambda s: s > 0, 1), axis=0)
        shares.plot.bar(stacked=True, ax=axis, legend=False, width=0.8, colormap="tab10")
        axis.set_title(subset)
        axis.set_ylabel("share of samples")
        axis.set_ylim(0, 1)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        figure.legend(handles, labels, loc="lower center", ncol=4, fontsize="small")
    figure.suptitle("RQ3: adoption of the new API")
    figure.tight_layout(rect=(0, 0.12, 1, 0.95))
    return figure


def sequential_figure(pass_at_k: pd.DataFrame) -> Figure:
    """RQ2: pass@1 at each level against the number of edits, one line per method."""
    part = pass_at_k[(pass_at_k["regime"] == "sequential") & (pass_at_k["k"] == 1)]
    figure, axes = plt.subplots(1, len(LEVELS), figsize=(5 * len(LEVELS), 3.6), squeeze=False)
    for axis, level in zip(axes[0], LEVELS, strict=True):
        rows = part[part["level"] == level]
        # Pooled over subsets, weighted by their problems, so one line per method.
        for method in _method_order(list(rows["method"].unique())):
            lines = rows[rows["method"] == method]
            weighted = (
                lines.assign(mass=lines["value"] * lines["n_problems"])
                .groupby("edit_step")[["mass", "n_problems"]]
                .sum()
            )
            curve = weighted["mass"] / weighted["n_problems"].where(lambda s: s > 0, 1)
            axis.plot(curve.index, curve.to_numpy(), marker="o", label=method)
        axis.set_title(f"{level} pass@1")
        axis.set_xlabel("edits applied")
        axis.set_ylim(-0.02, 1.02)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        figure.legend(handles, labels, loc="lower center", ncol=7, fontsize="small")
    figure.suptitle("RQ2: sequential editing")
    figure.tight_layout(rect=(0, 0.1, 1, 0.93))
    return figure


def failure_figure(decomposition: pd.DataFrame, taxonomy: pd.DataFrame) -> Figure:
    """RQ4: the Shapley parts per method (instant, last step) and the error taxonomy."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
    parts = decomposition[decomposition["regime"] == "instant"]
    if parts.empty:
        left.set_title("no Shapley parts (no `none` baseline)")
    else:
        mean = parts.groupby("method")[["compile_part", "post_compile_part"]].mean()
        mean = mean.reindex(_method_order(list(mean.index)))
        mean.plot.bar(ax=left, stacked=True)
        left.axhline(0, color="black", linewidth=0.8)
        left.set_title("pass@1 change vs none: Shapley parts (instant)")
    if taxonomy.empty:
        right.set_title("no failures")
    else:
        shares = taxonomy.groupby(["method", "failure_class"])[["count"]].sum().reset_index()
        table = shares.pivot(index="method", columns="failure_class", values="count").fillna(0)
        table = table.reindex(_method_order(list(table.index)))
        table = table.reindex(columns=[c for c in FAILURE_CLASSES if c in table.columns])
        table = table.div(table.sum(axis=1).where(lambda s: s > 0, 1), axis=0)
        table.plot.bar(ax=right, stacked=True, colormap="tab10")
        right.set_ylim(0, 1)
        right.set_title("error taxonomy (share of failures)")
        right.legend(fontsize="x-small")
    figure.suptitle("RQ4: where edits fail")
    figure.tight_layout()
    return figure


def figure_png(figure: Figure) -> str:
    """The figure as a base64 PNG string (the figure is closed)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


# ----------------------------------------------------------------------------- tables


def _pooled(pass_at_k: pd.DataFrame, keys: Sequence[str]) -> pd.Series:
    """pass@k pooled over the groups not in `keys`, weighted by their problems."""
    pooled = (
        pass_at_k.assign(mass=pass_at_k["value"] * pass_at_k["n_problems"])
        .groupby(list(keys))[["mass", "n_problems"]]
        .sum()
    )
    return pooled["mass"] / pooled["n_problems"].where(lambda s: s > 0, 1)


def rq1_table(pass_at_k: pd.DataFrame) -> pd.DataFrame:
    """Instant pass@k: one row per method and subset, one column per level@k."""
    part = pass_at_k[pass_at_k["regime"] == "instant"]
    if part.empty:
        return pd.DataFrame()
    table = _pooled(part, ["method", "subset", "level", "k"]).unstack(["level", "k"])
    order = [
        (level, k)
        for level in LEVELS
        for k in sorted(part["k"].unique())
        if (level, k) in table.columns
    ]
    table = table.reindex(columns=order)
    table.columns = [f"{level}@{k}" for level, k in order]
    table = table.reset_index()
    table["method"] = pd.Categorical(
        table["method"], _method_order(list(table["method"])), ordered=True
    )
    table["subset"] = pd.Categorical(
        table["subset"], [s for s in SUBSETS if s in set(table["subset"])], ordered=True
    )
    return table.sort_values(["method", "subset"]).reset_index(drop=True)


def rq2_table(pass_at_k: pd.DataFrame) -> pd.DataFrame:
    """Sequential pass@1 per method and number of edits, one column per level."""
    part = pass_at_k[(pass_at_k["regime"] == "sequential") & (pass_at_k["k"] == 1)]
    if part.empty:
        return pd.DataFrame()
    table = _pooled(part, ["method", "edit_step", "level"]).unstack("level")
    table = table.reindex(columns=[level for level in LEVELS if level in table.columns])
    table.columns = [f"{level}@1" for level in table.columns]
    table = table.reset_index()
    table["method"] = pd.Categorical(
        table["method"], _method_order(list(table["method"])), ordered=True
    )
    return table.sort_values(["method", "edit_step"]).reset_index(drop=True)


def taxonomy_table(error_taxonomy: pd.DataFrame) -> pd.DataFrame:
    """Share of failed samples in each failure class per method (regimes and subsets pooled)."""
    if error_taxonomy.empty:
        return pd.DataFrame()
    counts = error_taxonomy.groupby(["method", "failure_class"])["count"].sum().unstack()
    counts = counts.reindex(columns=[c for c in FAILURE_CLASSES if c in counts.columns])
    failures = counts.sum(axis=1)
    table = counts.div(failures.where(failures > 0, 1), axis=0)
    table["failures"] = failures.astype(int)
    table = table.reindex(_method_order(list(table.index)))
    return table.reset_index()


def rq3_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Adoption shares per method and subset (pooled over regimes and steps) with counts."""
    if summary.empty:
        return pd.DataFrame()
    pooled = summary.groupby(["method", "subset", "measure"])[["count", "n_samples"]].sum()
    pooled["cell"] = [
        f"{count}/{n}" for count, n in zip(pooled["count"], pooled["n_samples"], strict=True)
    ]
    table = pooled["cell"].unstack("measure")
    measures = [*LABELS, *(f"faulty_adoption/{f}" for f in FAULTS), NEW_API_REFERENCE]
    table = table.reindex(columns=[m for m in measures if m in table.columns])
    table.columns.name = None
    methods = _method_order(list(table.index.get_level_values("method")))
    table = table.reset_index()
    table["method"] = pd.Categorical(table["method"], methods, ordered=True)
    return table.sort_values(["method", "subset"]).reset_index(drop=True)


USAGE_MEASURES = (
    "correct_adoption",
    "faulty_adoption/wrong_usage",
    "deprecated_use",
    "workaround",
    NEW_API_REFERENCE,
)


def rq3_usage_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Adoption counts per method on usage-enforced items apart from rename-only ones (pooled
    over regimes, steps and subsets): only on enforced items does adopting need the new usage."""
    if summary.empty:
        return pd.DataFrame()
    part = summary[summary["measure"].isin(USAGE_MEASURES)]
    pooled = part.groupby(["method", "usage_enforced", "measure"])[["count", "n_samples"]].sum()
    pooled["cell"] = [
        f"{count}/{n}" for count, n in zip(pooled["count"], pooled["n_samples"], strict=True)
    ]
    table = pooled["cell"].unstack("measure")
    table = table.reindex(columns=[m for m in USAGE_MEASURES if m in table.columns])
    table.columns.name = None
    table = table.reset_index()
    table["usage"] = table.pop("usage_enforced").map({True: "enforced", False: "rename only"})
    table = table[["method", "usage", *[m for m in USAGE_MEASURES if m in table.columns]]]
    table["method"] = pd.Categorical(
        table["method"], _method_order(list(table["method"].unique())), ordered=True
    )
    return table.sort_values(["method", "usage"]).reset_index(drop=True)


def markdown_table(frame: pd.DataFrame, float_format: str = "{:.3f}") -> str:
    """A GitHub-flavoured Markdown table of `frame` (floats rounded)."""
    if frame.empty:
        return "_(no rows)_\n"

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return "" if pd.isna(value) else float_format.format(value)
        return str(value).replace("|", "\\|")

    header = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


def fingerprint(frame: pd.DataFrame) -> str:
    """A short content hash of a table, to tell which dataset versions a report was made from."""
    hashed = pd.util.hash_pandas_object(frame.astype(str), index=False).to_numpy()
    return hashlib.sha256(hashed.tobytes()).hexdigest()[:12]


def scale_verdict(pass_at_k: pd.DataFrame, comparison: pd.DataFrame) -> str:
    """One plain sentence on whether the run's scale supports conclusions."""
    if pass_at_k.empty:
        return "This run produced no scored samples, so it supports no conclusion."
    problems = pass_at_k.groupby(["regime", "subset"])["n_problems"].max()
    smallest = int(problems.min())
    significant = int(comparison["significant"].sum()) if not comparison.empty else 0
    if smallest < MIN_PROBLEMS_TO_CONCLUDE:
        return (
            f"The scale of this run is too small to conclude anything: the smallest "
            f"(regime, subset) has {smallest} problem(s), fewer than "
            f"{MIN_PROBLEMS_TO_CONCLUDE}, and {significant} of {len(comparison)} paired "
            f"differences exclude 0. Read the numbers as a smoke test of the pipeline, not as "
            f"evidence about the methods."
        )
    if significant == 0:
        return (
            "No paired difference from a baseline excludes 0 at this scale: the run cannot "
            "tell any method from the baselines."
        )
    return (
        f"{significant} of {len(comparison)} paired differences from a baseline exclude 0 at "
        f"this scale (at least {smallest} problems per regime and subset)."
    )


# ----------------------------------------------------------------------------- documents


def build_report(
    *,
    pass_at_k: pd.DataFrame,
    adoption_summary: pd.DataFrame,
    failure_decomposition: pd.DataFrame,
    error_taxonomy: pd.DataFrame,
    paired_comparison: pd.DataFrame,
    edit_metrics: pd.DataFrame,
    run_info: Mapping[str, Any],
    fingerprints: Mapping[str, str],
) -> tuple[str, str]:
    """(self-contained HTML, Markdown) of the study report."""
    verdict = scale_verdict(pass_at_k, paired_comparison)
    instant = failure_decomposition[failure_decomposition["regime"] == "instant"]
    comparison = paired_comparison[paired_comparison["regime"] == "instant"]
    sections: list[tuple[str, str, pd.DataFrame, str | None]] = [
        (
            "RQ1: instant pass@k",
            "pass@k per method, subset and level (k <= samples per problem), pooled over "
            "the edited APIs.",
            rq1_table(pass_at_k),
            None,
        ),
        (
            "RQ2: sequential editing",
            "pass@1 of each level against the number of edits, pooled over subsets.",
            rq2_table(pass_at_k),
            figure_png(sequential_figure(pass_at_k)),
        ),
        (
            "RQ3: adoption",
            "count/samples of each adoption label per method and subset, and "
            "the new-API reference rate (samples whose completion mentions the new API at all).",
            rq3_table(adoption_summary),
            figure_png(adoption_figure(adoption_summary)),
        ),
        (
            "RQ3: adoption by usage change",
            "the same counts on usage-enforced items (the new name with the old usage fails in "
            "the item's world) apart from rename-only ones, where a rename alone passes.",
            rq3_usage_table(adoption_summary),
            None,
        ),
        (
            "RQ4: Shapley parts (instant, k = 1)",
            "change in pass@1 against `none` split into a "
            "compilation part and a post-compilation part; the parts sum to the change.",
            instant[
                [
                    "method",
                    "edit_step",
                    "subset",
                    "compile_rate",
                    "pass_rate",
                    "pass_change",
                    "compile_part",
                    "post_compile_part",
                    "n_problems",
                ]
            ],
            figure_png(failure_figure(failure_decomposition, error_taxonomy)),
        ),
        (
            "RQ4: error taxonomy",
            "share of the failed samples in each failure class (all "
            "regimes and subsets) and the number of failed samples.",
            taxonomy_table(error_taxonomy),
            None,
        ),
        (
            "Paired comparison (instant)",
            "pass@1 difference from `none` and `prepend_doc`, "
            "with a 95 % bootstrap interval paired by problem.",
            comparison[
                [
                    "method",
                    "reference",
                    "subset",
                    "level",
                    "difference",
                    "ci_low",
                    "ci_high",
                    "n_problems",
                    "significant",
                ]
            ],
            None,
        ),
        ("Edit costs and token-level metrics", "mean per edit request.", edit_metrics, None),
        (
            "Run",
            "scale, model, seeds and dataset fingerprints (content hashes).",
            pd.DataFrame(
                [{"key": k, "value": str(v)} for k, v in {**run_info, **fingerprints}.items()]
            ),
            None,
        ),
    ]
    markdown = ["# Study report", "", verdict, ""]
    body = [f"<h1>Study report</h1><p class='verdict'><strong>{html.escape(verdict)}</strong></p>"]
    for title, caption, table, png in sections:
        markdown += [f"## {title}", "", caption, "", markdown_table(table), ""]
        body.append(f"<h2>{html.escape(title)}</h2><p>{html.escape(caption)}</p>")
        if png:
            body.append(f"<img alt='{html.escape(title)}' src='data:image/png;base64,{png}'>")
        if not table.empty:
            rendered = table.to_html(
                index=False, float_format=lambda v: f"{v:.3f}", border=0, classes="table"
            )
            body.append(f"<div class='scroll'>{rendered}</div>")
    style = (
        "body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;font-size:0.85em;margin-bottom:1em}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
        "img{max-width:100%}.verdict{background:#fff3cd;padding:0.6em}.scroll{overflow-x:auto}"
    )
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Study report</title>"
        f"<style>{style}</style></head><body>{''.join(body)}</body></html>"
    )
    return page, "\n".join(markdown)
