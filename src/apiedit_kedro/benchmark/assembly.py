"""The benchmark table: validated items split into subsets, with their worlds and references.

Each API's items are split (seeded) into reliability, whose contexts become edit requests, and
generalization, which the edit never sees. Specificity items are problems that use no catalogued
API. Every exclusion becomes a report row with its stage and reason.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from apiedit_kedro.benchmark.items import Exclusion, as_list, item_id
from apiedit_kedro.benchmark.settings import SynthesisSettings, TimeoutRule

SUBSETS = ("reliability", "generalization", "specificity")
REPORT_COLUMNS = ["record", "stage", "problem_id", "source", "api_id", "subset", "reason", "value"]
BENCHMARK_COLUMNS = [
    "item_id",
    "problem_id",
    "source",
    "subset",
    "api_id",
    "world_api_ids",
    "problem_api_ids",
    "test_api_ids",
    "usage_kind",
    "usage_enforced",
    "prompt",
    "prompt_format",
    "reference_old",
    "reference_new",
    "sequential_steps",
    "sequential_references",
    "tests",
    "test_setup",
    "entry_point",
    "timeout_s",
]


def report_row(record: str, stage: str, reason: str, **keys: Any) -> dict:
    row = dict.fromkeys(REPORT_COLUMNS, "")
    row.update(record=record, stage=stage, reason=reason, value=0)
    row.update(keys)
    return row


def exclusion_rows(stage: str, exclusions: Iterable[Exclusion]) -> list[dict]:
    return [
        report_row(
            "dropped_pair",
            stage,
            e.reason,
            problem_id=e.problem_id,
            source=e.source,
            api_id=e.api_id,
        )
        for e in exclusions
    ]


def timeout_seconds(reference_seconds: float, n_units: int, rule: TimeoutRule) -> float:
    """max(`min_unit_s` per unit, `factor` x the reference's run) + 1 s, capped.

    The measured run is rounded up to a power of two, so run-to-run jitter does not change the
    benchmark's bytes (only a reference whose runtime crosses a power of two would).
    """
    bucketed = 2.0 ** math.ceil(math.log2(max(reference_seconds, 1e-3)))
    budget = max(rule.min_unit_s * n_units, rule.factor * bucketed)
    return round(min(rule.cap_s, budget + 1.0), 2)


def split_items(api_id: str, problem_ids: list[str], seed: int, fraction: float) -> dict[str, str]:
    """Seeded reliability/generalization split of one API's items; both subsets non-empty."""
    rng = np.random.default_rng([seed, *api_id.encode()])
    order = sorted(problem_ids)
    rng.shuffle(order)
    n_reliability = min(len(order) - 1, max(1, round(len(order) * fraction)))
    return {
        pid: "reliability" if i < n_reliability else "generalization" for i, pid in enumerate(order)
    }


def failure_rows(validation: pd.DataFrame, sources: Mapping[str, str]) -> list[dict]:
    """Report rows for every check whose outcome was not the expected one (usage checks aside)."""
    rows = []
    failed = validation[~validation["ok"] & (validation["check"] != "usage_instant")]
    for row in failed.itertuples(index=False):
        expectation = "pass" if row.expect_pass else "fail"
        step = f" at step {row.step}" if row.check == "new_sequential" else ""
        rows.append(
            report_row(
                "dropped_problem" if row.check != "new_sequential" else "dropped_world",
                f"validation:{row.check}",
                f"expected to {expectation}{step}, got {row.error_type or 'a full pass'}: "
                f"{row.error_message}",
                problem_id=row.problem_id,
                source=sources[row.problem_id],
                api_id=row.api_id,
            )
        )
    return rows


def assemble(
    *,
    pool: pd.DataFrame,
    valid_items: pd.DataFrame,
    validation: pd.DataFrame,
    order: list[str],
    settings: SynthesisSettings,
) -> pd.DataFrame:
    """One row per item (edited subsets) and per specificity problem."""
    problems = pool.set_index("problem_id")
    pristine = validation[validation["check"] == "reference_pristine"].set_index("problem_id")
    usage = validation[(validation["check"] == "usage_instant") & validation["ok"]]
    enforced = set(zip(usage["problem_id"], usage["api_id"], strict=True))
    sequential = validation[(validation["check"] == "new_sequential") & validation["ok"]]
    steps_of: dict[str, list[tuple[int, str]]] = {}
    for row in sequential.sort_values("step").itertuples(index=False):
        steps_of.setdefault(row.problem_id, []).append((int(row.step), row.program))
    position = {api_id: index for index, api_id in enumerate(order)}
    rows = []
    for api_id, group in valid_items.groupby("api_id", sort=True):
        subsets = split_items(
            api_id, list(group["problem_id"]), settings.seed, settings.reliability_fraction
        )
        for item in group.sort_values("problem_id").itertuples(index=False):
            # a step evaluates the item only once its own API has been edited
            worlds = [(s, p) for s, p in steps_of.get(item.problem_id, []) if s > position[api_id]]
            rows.append(
                _row(
                    problems.loc[item.problem_id],
                    item.problem_id,
                    subset=subsets[item.problem_id],
                    api_id=api_id,
                    item=item,
                    enforced=(item.problem_id, api_id) in enforced,
                    worlds=worlds,
                    seconds=float(pristine.loc[item.problem_id, "seconds"]),
                    rule=settings.timeouts,
                )
            )
    specificity = validation[(validation["check"] == "specificity_edited") & validation["ok"]]
    for problem_id in sorted(specificity["problem_id"]):
        rows.append(
            _row(
                problems.loc[problem_id],
                problem_id,
                subset="specificity",
                api_id=None,
                item=None,
                enforced=False,
                worlds=[],
                seconds=float(pristine.loc[problem_id, "seconds"]),
                rule=settings.timeouts,
            )
        )
    benchmark = pd.DataFrame(rows, columns=BENCHMARK_COLUMNS)
    rank = benchmark["subset"].map(SUBSETS.index)
    benchmark = benchmark.assign(_rank=rank).sort_values(
        ["_rank", "api_id", "problem_id"], na_position="last"
    )
    return benchmark.drop(columns="_rank").reset_index(drop=True)


def _row(
    problem: pd.Series,
    problem_id: str,
    *,
    subset: str,
    api_id: str | None,
    item: Any,
    enforced: bool,
    worlds: list[tuple[int, str]],
    seconds: float,
    rule: TimeoutRule,
) -> dict:
    tests = as_list(problem["tests"])
    return {
        "item_id": item_id(problem_id, api_id),
        "problem_id": problem_id,
        "source": problem["source"],
        "subset": subset,
        "api_id": api_id,
        "world_api_ids": [api_id] if api_id else [],
        "problem_api_ids": as_list(item.problem_api_ids) if item is not None else [],
        "test_api_ids": as_list(item.test_api_ids) if item is not None else [],
        "usage_kind": item.usage_kind if item is not None else "",
        "usage_enforced": enforced,
        "prompt": problem["prompt"],
        "prompt_format": problem["prompt_format"],
        "reference_old": problem["reference_solution"],
        "reference_new": item.reference_new if item is not None else problem["reference_solution"],
        "sequential_steps": [step for step, _ in worlds],
        "sequential_references": [program for _, program in worlds],
        "tests": tests,
        "test_setup": problem["test_setup"],
        "entry_point": problem["entry_point"],
        "timeout_s": timeout_seconds(seconds, len(tests), rule),
    }
