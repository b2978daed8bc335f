"""The study report's tables, scale verdict and self-contained HTML, on hand-built tables."""

import re

import pandas as pd

from apiedit_kedro.metrics.report import (
    build_report,
    markdown_table,
    rq1_table,
    rq2_table,
    rq3_usage_table,
    scale_verdict,
)


def _pass_at_k(n_problems: int) -> pd.DataFrame:
    rows = []
    for method, value in (("none", 0.5), ("rome", 0.25)):
        for subset in ("reliability", "specificity"):
            for level in ("compile", "partial", "full"):
                for regime in ("instant", "sequential"):
                    rows.append(
                        {
                            "model": "m",
                            "method": method,
                            "regime": regime,
                            "edit_step": 1,
                            "subset": subset,
                            "level": level,
                            "k": 1,
                            "value": value,
                            "n_problems": n_problems,
                        }
                    )
    return pd.DataFrame(rows)


def _comparison(significant: bool) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "model": "m",
                "regime": "instant",
                "edit_step": 1,
                "subset": "reliability",
                "method": "rome",
                "reference": "none",
                "level": "full",
                "pass_at_1": 0.25,
                "pass_at_1_reference": 0.5,
                "difference": -0.25,
                "ci_low": -0.4,
                "ci_high": -0.1 if significant else 0.1,
                "n_problems": 40,
                "significant": significant,
            }
        ]
    )


def test_scale_verdict_says_plainly_when_nothing_can_be_concluded():
    assert "too small to conclude anything" in scale_verdict(_pass_at_k(2), _comparison(False))
    assert "cannot tell any method" in scale_verdict(_pass_at_k(40), _comparison(False))
    assert scale_verdict(_pass_at_k(40), _comparison(True)).startswith("1 of 1 paired")


def test_rq1_has_one_row_per_method_and_subset_with_baselines_first():
    table = rq1_table(_pass_at_k(3))
    assert list(table["method"].astype(str)) == ["none", "none", "rome", "rome"]
    assert {"compile@1", "partial@1", "full@1"} <= set(table.columns)
    assert table.loc[2, "full@1"] == 0.25


def test_rq2_lists_every_edit_step_of_the_sequential_regime_only():
    table = rq2_table(_pass_at_k(3))
    assert list(table["method"].astype(str)) == ["none", "rome"]
    assert list(table["edit_step"]) == [1, 1]
    assert table.loc[1, "full@1"] == 0.25


def test_rq3_usage_table_keeps_enforced_and_rename_only_counts_apart():
    rows = []
    # rome: 3/4 correct on enforced items (4 samples in two regimes), 1/6 on rename-only items
    for enforced, regime, count, n in (
        (True, "instant", 2, 2),
        (True, "sequential", 1, 2),
        (False, "instant", 1, 6),
    ):
        for measure in ("correct_adoption", "deprecated_use", "other_failure"):
            rows.append(
                {
                    "model": "m",
                    "method": "rome",
                    "regime": regime,
                    "edit_step": 1,
                    "subset": "reliability",
                    "usage_enforced": enforced,
                    "measure": measure,
                    "count": count if measure == "correct_adoption" else 0,
                    "n_samples": n,
                }
            )
    table = rq3_usage_table(pd.DataFrame(rows)).set_index("usage")
    assert table.loc["enforced", "correct_adoption"] == "3/4"
    assert table.loc["rename only", "correct_adoption"] == "1/6"
    assert table.loc["enforced", "deprecated_use"] == "0/4"
    assert "other_failure" not in table.columns


def test_markdown_table_escapes_and_rounds():
    text = markdown_table(pd.DataFrame({"a|b": ["x|y"], "v": [1 / 3]}))
    assert text.splitlines() == ["| a|b | v |", "|---|---|", "| x\\|y | 0.333 |"]


def test_report_html_embeds_everything():
    empty = pd.DataFrame(
        columns=[
            "model",
            "method",
            "regime",
            "edit_step",
            "subset",
            "usage_enforced",
            "measure",
            "count",
            "n_samples",
            "share",
            "ci_low",
            "ci_high",
            "failure_class",
            "compile_part",
            "post_compile_part",
            "compile_rate",
            "pass_rate",
            "pass_change",
            "n_problems",
        ]
    )
    page, markdown = build_report(
        pass_at_k=_pass_at_k(2),
        adoption_summary=empty,
        failure_decomposition=empty,
        error_taxonomy=empty,
        paired_comparison=_comparison(False),
        edit_metrics=pd.DataFrame({"method": ["rome"], "edit_seconds": [1.5]}),
        run_info={"model": "m"},
        fingerprints={"benchmark fingerprint": "abc"},
    )
    assert page.count("data:image/png;base64,") == 3
    assert not re.search(r"""(src|href)=['"](?!data:)""", page)
    assert "benchmark fingerprint" in markdown and "| rome | 1.500 |" in markdown
