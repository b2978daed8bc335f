"""Benchmark items: one per (problem, API it uses), each rewritten for exactly its own world.

A problem that uses several catalogued APIs yields one item per API. The item's instant world
removes only that API, so its expected solution rewrites only that API; a sequential world removes
every API edited by then, so the problem is rewritten for the catalogued APIs it uses that lie in
that world (`program_for_world`).

Prompts stay as the original benchmark wrote them: a HumanEval item keeps its prompt verbatim, and
its expected solution is that prompt followed by the rewritten body. An item whose prompt itself
uses (not only annotates with) an API of its world is dropped, since the model would be shown a
removed API it cannot avoid.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from apiedit_kedro.apis.mapping import ApiMapping
from apiedit_kedro.apis.references import count_api_references, resolve_references
from apiedit_kedro.apis.rewrite import RewriteError, rewrite_program

ITEM_COLUMNS = [
    "item_id",
    "problem_id",
    "api_id",
    "usage_kind",
    "reference_new",
    "renamed_only",
    "problem_api_ids",
    "test_api_ids",
]


def as_list(value: Any) -> list:
    """Parquet round trips turn list cells into numpy arrays; the engine works with plain lists."""
    if value is None:
        return []
    if isinstance(value, np.ndarray):
        return value.tolist()
    return list(value)


def item_id(problem_id: str, api_id: str | None) -> str:
    return f"{problem_id}@{api_id}" if api_id else problem_id


@dataclass(frozen=True)
class Exclusion:
    """Why a (problem, API) pair, or a problem in a world, is not a benchmark item."""

    problem_id: str
    source: str
    api_id: str
    reason: str


def prompt_uses(prompt: str, mappings: Sequence[ApiMapping]) -> list[str]:
    """APIs among `mappings` that a Python prompt references outside annotations.

    `from m import name` counts: it raises ImportError in a world without `m.name`.
    """
    try:
        references = resolve_references(prompt)
    except SyntaxError:
        return []
    used = count_api_references(references, list(mappings)).old
    return sorted(api for api, count in used.items() if count)


def program_for_world(problem: Any, mappings: Sequence[ApiMapping]) -> str:
    """The problem's reference rewritten for `mappings` with its prompt left verbatim.

    Raises RewriteError when a reference cannot be rewritten mechanically, or when the rewrite
    would have to change what the prompt does (a prompt that calls a removed API).
    """
    return _rewrite(problem, mappings)[0]


def _rewrite(problem: Any, mappings: Sequence[ApiMapping]) -> tuple[str, list[str]]:
    """(program, APIs it references beyond an import statement)."""
    if not mappings:
        return str(problem.reference_solution), []
    prompt = str(problem.prompt) if problem.prompt_in_reference else ""
    result = rewrite_program(
        str(problem.reference_solution), list(mappings), prefix_length=len(prompt)
    )
    if not prompt:
        return result.source, result.referenced_apis
    uses = prompt_uses(prompt, mappings)
    if uses:
        raise RewriteError(
            f"the prompt itself uses {uses}; it must stay as the benchmark wrote it, so the item "
            "cannot exist in a world without them"
        )
    # import and annotation changes inside the prompt are dropped: annotations are never
    # evaluated and an unused import of a module is harmless
    return prompt + result.source[len(result.prefix) :], result.referenced_apis


def _renamed_only(problem: Any, mapping: ApiMapping, reference: str) -> str | None:
    """The item's program with the new name but the old usage, or None when they coincide."""
    if mapping.usage.get("usage") == "same":
        return None
    plain = replace(mapping, usage={"usage": "same"})
    try:
        renamed = program_for_world(problem, [plain])
    except RewriteError:
        return None
    return None if renamed == reference else renamed


def plan_items(
    pool: pd.DataFrame, api_usages: pd.DataFrame, mappings: Mapping[str, ApiMapping]
) -> tuple[pd.DataFrame, list[Exclusion]]:
    """Every (problem, catalogued API used by its solution) pair that can be rewritten alone."""
    catalogued = api_usages[api_usages["catalogued"] & api_usages["api"].isin(list(mappings))]
    in_solution = catalogued[catalogued["where"] == "solution"].groupby("problem_id")["api"]
    in_tests = catalogued[catalogued["where"] == "tests"].groupby("problem_id")["api"]
    solution_apis = in_solution.apply(sorted).to_dict()
    test_apis = in_tests.apply(sorted).to_dict()
    rows, excluded = [], []
    for problem in pool.itertuples(index=False):
        apis, tests = (
            solution_apis.get(problem.problem_id, []),
            test_apis.get(problem.problem_id, []),
        )
        for api_id in apis:
            reason, reference = None, None
            if api_id in tests:
                reason = "the problem's tests reference this API, so they would break in its world"
            else:
                try:
                    reference, referenced = _rewrite(problem, [mappings[api_id]])
                except RewriteError as error:
                    reason = str(error)
                else:
                    if api_id not in referenced:
                        reason = "the solution only imports this API and never uses it"
            if reason is not None:
                excluded.append(Exclusion(problem.problem_id, problem.source, api_id, reason))
                continue
            rows.append(
                {
                    "item_id": item_id(problem.problem_id, api_id),
                    "problem_id": problem.problem_id,
                    "api_id": api_id,
                    "usage_kind": mappings[api_id].usage["usage"],
                    "reference_new": reference,
                    "renamed_only": _renamed_only(problem, mappings[api_id], reference),
                    "problem_api_ids": list(apis),
                    "test_api_ids": list(tests),
                }
            )
    return pd.DataFrame(rows, columns=ITEM_COLUMNS), excluded
