"""Validation of every item in the worlds where it is evaluated, batched through the sandbox.

Stage 1, per item (problem P, API A) in its instant world {A}:
- `reference_pristine`: P's original solution passes its tests with nothing removed;
- `new_instant`: the item's expected solution passes in {A};
- `old_instant`: the original solution fails in {A} (A really is gone);
- `new_pristine`: the expected solution fails with nothing removed (it really needs the new API);
- `usage_instant`: the new name with the old usage fails in {A}. This one never drops an item; it
  labels it `usage_enforced`. APIs whose usage is unchanged, and calls the usage change does not
  touch, have no such program and are not enforced.
An API survives with at least `min_items_per_api` items passing the four checks; the survivors get
their seeded sequential order (`sequential_order`).

Stage 2, the sequential checkpoint worlds (the first s APIs of that order, for every validated
step s): `new_sequential` runs P rewritten for the catalogued APIs it uses in that world, once per
(P, s) where one of P's items has been edited by step s. Specificity problems (no catalogued API in
their solution or tests) must pass with every surviving API removed (`specificity_edited`); they
reference none of those APIs, so a world that removes fewer of them cannot reach them either.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from apiedit_kedro.apis.mapping import ApiMapping
from apiedit_kedro.apis.rewrite import RewriteError
from apiedit_kedro.benchmark.items import Exclusion, as_list, program_for_world
from apiedit_kedro.benchmark.settings import SandboxRun, SynthesisSettings
from apiedit_kedro.sandbox import TRANSIENT_ERROR_TYPES, execute
from apiedit_kedro.study.selection import checkpoints

logger = logging.getLogger(__name__)

INSTANT_CHECKS = ("new_instant", "old_instant", "new_pristine")
VALIDATION_COLUMNS = [
    "problem_id",
    "api_id",
    "check",
    "step",
    "expect_pass",
    "full_pass",
    "ok",
    "error_type",
    "error_message",
    "asserts_passed",
    "asserts_total",
    "seconds",
    "program",
]


def validated_steps(n_apis: int, all_steps_up_to: int) -> list[int]:
    """Sequential steps whose worlds are validated: 1, 2, 4, … and n, plus every step up to a cap."""
    return sorted(set(checkpoints(n_apis)) | set(range(1, min(n_apis, all_steps_up_to) + 1)))


def sequential_order(api_ids: Sequence[str], seed: int) -> list[str]:
    """The seeded order in which the sequential regime edits the APIs."""
    ordered = sorted(api_ids)
    return [ordered[i] for i in np.random.default_rng(seed).permutation(len(ordered))]


def _problem(problems: pd.DataFrame, problem_id: str) -> Any:
    """One pool problem as a row tuple (`problems` is indexed by problem_id, the column kept)."""
    return next(problems.loc[[problem_id]].itertuples(index=False))


class _Batch:
    """Checks and their sandbox requests, run in one `execute` call."""

    def __init__(self, run: SandboxRun) -> None:
        self.run, self.checks, self.requests = run, [], []

    def add(
        self,
        problem: Any,
        *,
        api_id: str,
        check: str,
        code: str,
        world: Sequence[ApiMapping],
        expect_pass: bool,
        step: int = 0,
        keep_program: bool = False,
    ) -> None:
        self.checks.append(
            {
                "problem_id": problem.problem_id,
                "api_id": api_id,
                "check": check,
                "step": step,
                "expect_pass": expect_pass,
                "program": code if keep_program else "",
            }
        )
        self.requests.append(
            {
                "code": code,
                "tests": [str(test) for test in as_list(problem.tests)],
                "setup": str(problem.test_setup),
                "world": "edited" if world else "pristine",
                "mappings": [mapping.to_record() for mapping in world],
                "timeout_s": self.run.timeout_s,
                "unit_timeout_s": self.run.unit_timeout_s,
            }
        )

    def execute(self) -> pd.DataFrame:
        if not self.requests:
            return pd.DataFrame(columns=VALIDATION_COLUMNS)
        results = execute(self.requests, workers=self.run.workers, progress=False)
        results = self._retry_transient(results)
        rows = []
        for check, result in zip(self.checks, results, strict=True):
            passed = bool(result["full_pass"])
            rows.append(
                {
                    **check,
                    "full_pass": passed,
                    "ok": passed == check["expect_pass"],
                    "error_type": str(result["error_type"]),
                    "error_message": str(result["error_message"])[:300],
                    "asserts_passed": int(result["asserts_passed"]),
                    "asserts_total": int(result["asserts_total"]),
                    "seconds": float(result["seconds"]),
                }
            )
        return pd.DataFrame(rows, columns=VALIDATION_COLUMNS)

    def _retry_transient(self, results: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Run sandbox failures (not the program's fault) once more; refuse what fails again.

        An item whose check failed because the sandbox did would be dropped from the benchmark
        for a reason that has nothing to do with it, so synthesis stops instead.
        """
        again = [i for i, r in enumerate(results) if r["error_type"] in TRANSIENT_ERROR_TYPES]
        if not again:
            return results
        logger.warning("validation: %d sandbox failures, running them once more", len(again))
        retried = execute(
            [self.requests[i] for i in again], workers=self.run.workers, progress=False
        )
        results = list(results)
        for index, result in zip(again, retried, strict=True):
            results[index] = result
        failed = [i for i in again if results[i]["error_type"] in TRANSIENT_ERROR_TYPES]
        if failed:
            first = self.checks[failed[0]]
            raise SandboxValidationError(
                f"{len(failed)} of {len(results)} validation runs failed inside the sandbox, "
                f"twice (first: {first['problem_id']} / {first['api_id']} / {first['check']}: "
                f"{results[failed[0]]['error_message']}); the benchmark would lose those items "
                "for a reason that is not theirs. Check the sandbox on this machine "
                "(pytest tests/sandbox) and re-run the synthesis"
            )
        return results


class SandboxValidationError(RuntimeError):
    """Validation runs failed because the sandbox did, not because of the item."""


def validate_instant(
    pool: pd.DataFrame, items: pd.DataFrame, mappings: Mapping[str, ApiMapping], run: SandboxRun
) -> pd.DataFrame:
    """Stage 1: the pristine reference of every pool problem and each item's instant checks."""
    problems = pool.set_index("problem_id", drop=False)
    batch = _Batch(run)
    for problem in pool.itertuples(index=False):
        batch.add(
            problem,
            api_id="",
            check="reference_pristine",
            code=str(problem.reference_solution),
            world=[],
            expect_pass=True,
        )
    for item in items.itertuples(index=False):
        problem = _problem(problems, item.problem_id)
        world = [mappings[item.api_id]]
        for check, code, in_world, expect in (
            ("new_instant", item.reference_new, world, True),
            ("old_instant", str(problem.reference_solution), world, False),
            ("new_pristine", item.reference_new, [], False),
        ):
            batch.add(
                problem,
                api_id=item.api_id,
                check=check,
                code=code,
                world=in_world,
                expect_pass=expect,
            )
        if isinstance(item.renamed_only, str) and item.renamed_only:
            batch.add(
                problem,
                api_id=item.api_id,
                check="usage_instant",
                code=item.renamed_only,
                world=world,
                expect_pass=False,
            )
    logger.info("validation stage 1: %d sandbox runs", len(batch.requests))
    return batch.execute()


def instant_valid_items(
    items: pd.DataFrame, stage_one: pd.DataFrame, min_items_per_api: int
) -> tuple[pd.DataFrame, set[str]]:
    """Items passing every stage-1 check, restricted to APIs with enough of them."""
    pristine = stage_one[stage_one["check"] == "reference_pristine"]
    pristine_ok = set(pristine.loc[pristine["ok"], "problem_id"])
    checks = stage_one[stage_one["check"].isin(INSTANT_CHECKS)]
    failures = checks[~checks["ok"]]
    failed = set(zip(failures["problem_id"], failures["api_id"], strict=True))
    keep = [
        row.problem_id in pristine_ok and (row.problem_id, row.api_id) not in failed
        for row in items.itertuples(index=False)
    ]
    valid = items[keep]
    counts = valid.groupby("api_id").size()
    surviving = set(counts[counts >= min_items_per_api].index)
    return valid[valid["api_id"].isin(surviving)].reset_index(drop=True), surviving


def validate_sequential(
    pool: pd.DataFrame,
    valid_items: pd.DataFrame,
    order: Sequence[str],
    specificity_ids: Sequence[str],
    mappings: Mapping[str, ApiMapping],
    settings: SynthesisSettings,
) -> pd.DataFrame:
    """Stage 2: each problem in every validated checkpoint world after one of its APIs is edited.

    A world the problem cannot be rewritten for (its tests use a removed API, or the rewrite is not
    mechanical) is a failed `new_sequential` check at step -1, with the reason as its message.
    """
    problems = pool.set_index("problem_id", drop=False)
    position = {api_id: index for index, api_id in enumerate(order)}
    batch, excluded = _Batch(settings.validation), []
    steps = validated_steps(len(order), settings.all_sequential_steps_up_to)
    for problem_id, group in valid_items.groupby("problem_id", sort=True):
        problem = _problem(problems, problem_id)
        first_edit = min(position[api_id] for api_id in group["api_id"]) + 1
        problem_apis = set(as_list(group["problem_api_ids"].iloc[0]))
        test_apis = set(as_list(group["test_api_ids"].iloc[0]))
        for step in (s for s in steps if s >= first_edit):
            world = [mappings[api_id] for api_id in order[:step]]
            removed = sorted(problem_apis & set(order[:step]))
            reason = None
            if test_apis & set(order[:step]):
                reason = (
                    f"its tests use {sorted(test_apis & set(order[:step]))}, removed by step {step}"
                )
            else:
                try:
                    program = program_for_world(problem, [mappings[a] for a in removed])
                except RewriteError as error:
                    reason = f"step {step}: {error}"
            if reason is not None:
                excluded.append(Exclusion(problem_id, problem.source, ",".join(removed), reason))
                continue
            batch.add(
                problem,
                api_id=",".join(removed),
                check="new_sequential",
                code=program,
                world=world,
                expect_pass=True,
                step=step,
                keep_program=True,
            )
    full_world = [mappings[api_id] for api_id in order]
    for problem_id in specificity_ids:
        problem = _problem(problems, problem_id)
        batch.add(
            problem,
            api_id="",
            check="specificity_edited",
            code=str(problem.reference_solution),
            world=full_world,
            expect_pass=True,
            step=len(order),
        )
    logger.info(
        "validation stage 2: %d sandbox runs over %d checkpoint worlds",
        len(batch.requests),
        len(steps),
    )
    not_rewritable = pd.DataFrame(
        [
            {
                "problem_id": e.problem_id,
                "api_id": e.api_id,
                "check": "new_sequential",
                "step": -1,
                "expect_pass": True,
                "full_pass": False,
                "ok": False,
                "error_type": "not rewritable",
                "error_message": e.reason[:300],
                "asserts_passed": 0,
                "asserts_total": 0,
                "seconds": 0.0,
                "program": "",
            }
            for e in excluded
        ],
        columns=VALIDATION_COLUMNS,
    )
    frames = [frame for frame in (batch.execute(), not_rewritable) if not frame.empty]
    return pd.concat(frames, ignore_index=True) if frames else not_rewritable
