"""Adoption labels: did a sample adopt the new API, work around it, or fail trying (RQ3)?

One label per sample of an *edited item* (reliability and generalization; specificity items have
no new API to adopt). The evidence is of two kinds:

- static, from the AST of the model's completion only (the lines of the program from the first
  line of the completion on; the benchmark's prompt prefix is not the model's). References are
  resolved by `apis.references` (imports, aliases, star imports, scoping), so `import re as r;
  r.substitute_v2(...)` is a reference to `re.substitute_v2` and a local variable named like the
  API is not. A completion that does not parse gives no static evidence at all.
  - *new-API reference*: the completion references the item's new API;
  - *removed-API reference*: it references any API removed in the item's world;
  - *old usage form*: a call of the new API whose literal argument shape (the number of
    positional arguments and the keyword names; calls with `*args`/`**kwargs` are not judged)
    the new signature rejects while the old signature accepts it, e.g. `re.substitute_v2(p, r, s)`
    for the keyword-only `re.substitute_v2(*, pattern, replacement, text)`. A pure reordering of
    positional arguments has the same shape in both usages and is left to the dynamic evidence.
- dynamic, from the sandbox's run in the edited world: `full_pass`, `compiles`, the per-API call
  counter `new_api_calls_by_api` (calls that the new signature accepted) and the first failure's
  `error_type`/`error_message`.
  - *new-API exception*: the first failure is a Python exception (not an assertion, a timeout or
    a harness verdict) and either its message names the new API (`name(` or `name()`, as the
    new API's signature errors do) or the new API had been called at least once. The sandbox
    reports no traceback, so an exception raised after an accepted call of the new API is
    attributed to that call: this over-counts misuse when the program fails elsewhere later.

Rules, applied in this order (the first that holds gives the label):

1. `correct_adoption`: full pass in the edited world and the new API was called (counter > 0).
2. `workaround`: full pass without calling the new API.
3. `deprecated_use`: not a full pass and the completion references a removed API (in the edited
   world that alone fails the sample, so it is the cause whatever else the program does).
4. `faulty_adoption`: not a full pass and the completion references the new API. `fault`:
   - `compile`: the program does not compile (its top level fails);
   - `wrong_usage`: it compiles and the old usage form is found or a new-API exception is the
     failure;
   - `test_failure`: otherwise (it runs, uses the new API as written, and a test fails).
5. `other_failure`: every other sample (no reference to either API, or nothing parsable).

The item's world (which APIs are removed) is read in one place, `item_world`.
"""

from __future__ import annotations

import ast
import inspect
import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import pandas as pd

from apiedit_kedro.apis.mapping import ApiMapping, build_new_callable, parse_mappings
from apiedit_kedro.apis.references import count_api_references, resolve_references
from apiedit_kedro.apis.world import api_locations
from apiedit_kedro.metrics.intervals import wilson_interval
from apiedit_kedro.study.contracts import GENERATION_KEYS

LABELS = (
    "correct_adoption",
    "faulty_adoption",
    "workaround",
    "deprecated_use",
    "other_failure",
)
FAULTS = ("compile", "wrong_usage", "test_failure")
EDITED_SUBSETS = ("reliability", "generalization")

# Columns of `execution_results` the labels read (beyond the generation keys).
REQUIRED_COLUMNS = (
    *GENERATION_KEYS,
    "completion",
    "program",
    "world_api_ids",
    "compiles",
    "full_pass",
    "error_type",
    "error_message",
    "new_api_calls_by_api",
)

# error_type words the sandbox uses for verdicts that are not an exception of the program.
NON_EXCEPTION_ERRORS = frozenset(
    {
        "",
        "syntax_error",
        "static_scan_failed",
        "tamper_suspect",
        "removed_api",
        "guard_violation",
        "timeout",
        "memory_limit",
        "crash",
        "early_exit",
        "no_tests",
        "sandbox_error",
        "AssertionError",
    }
)


class MissingColumnsError(ValueError):
    """A table lacks columns a metric needs; the message names them."""


def require_columns(frame: pd.DataFrame, columns: Sequence[str], *, table: str, hint: str) -> None:
    """Raise `MissingColumnsError` naming every column of `columns` missing from `frame`."""
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise MissingColumnsError(f"{table} lacks the columns {', '.join(missing)}; {hint}")


@dataclass(frozen=True)
class StaticEvidence:
    """What the completion's AST says about one item's APIs."""

    parsed: bool
    new_refs: int
    removed_refs: int
    old_usage_form: bool


def item_world(row: Mapping[str, Any]) -> tuple[str, ...]:
    """The api_ids removed in the world the sample was executed in.

    Today the generation row carries it (`world_api_ids`, JSON: the item's API in the instant
    regime, every API edited so far in the sequential one); the item's own API is always in it.
    """
    raw = row.get("world_api_ids")
    ids = json.loads(raw) if isinstance(raw, str) and raw else []
    api_id = row.get("api_id")
    if isinstance(api_id, str) and api_id and api_id not in ids:
        ids.append(api_id)
    return tuple(ids)


def completion_first_line(program: str, completion: str) -> int:
    """The 1-based line of `program` on which the model's completion starts."""
    if completion and program.endswith(completion):
        prefix = program[: len(program) - len(completion)]
        return prefix.count("\n") + 1
    # The program is not prompt + completion (e.g. a chat answer used whole): all of it is scored.
    return 1


@lru_cache(maxsize=256)
def _signatures(mapping: ApiMapping) -> tuple[inspect.Signature | None, inspect.Signature | None]:
    new = inspect.signature(build_new_callable(mapping, mapping.old_object()))
    try:
        old = inspect.signature(mapping.old_object())
    except (TypeError, ValueError):
        old = None
    return new, old


def _accepts(signature: inspect.Signature | None, positional: int, keywords: Sequence[str]) -> bool:
    if signature is None:
        return True  # unknown: do not claim the shape is wrong for it
    try:
        signature.bind(*([None] * positional), **dict.fromkeys(keywords))
    except TypeError:
        return False
    return True


def _call_name(node: ast.Call) -> str | None:
    func = node.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def static_evidence(
    program: str, completion: str, item: ApiMapping, removed: Sequence[ApiMapping]
) -> StaticEvidence:
    """References to the item's new API and to the removed APIs in the completion, and whether
    a call of the new API has the old usage's argument shape."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)
            tree = ast.parse(program)
            references = resolve_references(tree)
    except (SyntaxError, ValueError, RecursionError):
        return StaticEvidence(parsed=False, new_refs=0, removed_refs=0, old_usage_form=False)
    first_line = completion_first_line(program, completion)
    scored = [ref for ref in references if ref.lineno >= first_line]
    counted = count_api_references(scored, [item, *[m for m in removed if m != item]])
    new_refs = counted.new.get(item.api_id, 0)
    removed_refs = sum(counted.old.get(mapping.api_id, 0) for mapping in removed)

    locations = api_locations(item).new
    call_lines = {
        ref.lineno
        for ref in scored
        if ref.is_call and any(ref.qualname == target for target in locations)
    }
    old_form = False
    if call_lines:
        new_signature, old_signature = _signatures(item)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and node.lineno in call_lines
                and _call_name(node) == item.new_name
            ):
                if any(isinstance(arg, ast.Starred) for arg in node.args) or any(
                    keyword.arg is None for keyword in node.keywords
                ):
                    continue
                keywords = [keyword.arg for keyword in node.keywords if keyword.arg]
                positional = len(node.args)
                if not _accepts(new_signature, positional, keywords) and _accepts(
                    old_signature, positional, keywords
                ):
                    old_form = True
                    break
    return StaticEvidence(
        parsed=True, new_refs=new_refs, removed_refs=removed_refs, old_usage_form=old_form
    )


def new_api_exception(row: Mapping[str, Any], item: ApiMapping, calls: int) -> bool:
    """The first failure is a Python exception raised in or by a call of the new API (see the
    module docstring for what the sandbox lets us see)."""
    error_type = str(row.get("error_type") or "")
    if error_type in NON_EXCEPTION_ERRORS:
        return False
    message = str(row.get("error_message") or "")
    return calls > 0 or f"{item.new_name}(" in message


def _calls(row: Mapping[str, Any], api_id: str) -> int:
    raw = row.get("new_api_calls_by_api")
    counts = json.loads(raw) if isinstance(raw, str) and raw else {}
    return int(counts.get(api_id, 0))


def label_sample(row: Mapping[str, Any], mappings: Mapping[str, ApiMapping]) -> dict[str, Any]:
    """The label, fault and evidence of one execution row of an edited item."""
    item = mappings[row["api_id"]]
    removed = [mappings[api_id] for api_id in item_world(row)]
    evidence = static_evidence(str(row["program"]), str(row["completion"]), item, removed)
    calls = _calls(row, item.api_id)
    exception = new_api_exception(row, item, calls)
    fault = ""
    if bool(row["full_pass"]):
        label = "correct_adoption" if calls > 0 else "workaround"
    elif evidence.removed_refs > 0:
        label = "deprecated_use"
    elif evidence.new_refs > 0:
        label = "faulty_adoption"
        if not bool(row["compiles"]):
            fault = "compile"
        elif evidence.old_usage_form or exception:
            fault = "wrong_usage"
        else:
            fault = "test_failure"
    else:
        label = "other_failure"
    return {
        "label": label,
        "fault": fault,
        "parsed": evidence.parsed,
        "references_new_api": evidence.new_refs > 0,
        "new_api_refs_item": evidence.new_refs,
        "removed_api_refs_item": evidence.removed_refs,
        "old_usage_form": evidence.old_usage_form,
        "new_api_calls_item": calls,
        "new_api_exception": exception,
    }


def label_executions(executions: pd.DataFrame, api_mapping: pd.DataFrame) -> pd.DataFrame:
    """One labelled row per sample of an edited item (see the module docstring for the rules)."""
    require_columns(
        executions,
        REQUIRED_COLUMNS,
        table="execution_results",
        hint="re-create it with `kedro run --pipeline=evaluation`",
    )
    mappings = {
        mapping.api_id: mapping for mapping in parse_mappings(api_mapping.to_dict("records"))
    }
    edited = executions[
        executions["subset"].isin(EDITED_SUBSETS) & executions["api_id"].notna()
    ].reset_index(drop=True)
    unknown = sorted(set(edited["api_id"]) - set(mappings))
    if unknown:
        raise ValueError(f"execution_results name APIs missing from api_mapping: {unknown}")
    keys = [*GENERATION_KEYS, "compiles", "full_pass", "error_type"]
    labels = [label_sample(row, mappings) for row in edited.to_dict("records")]
    labelled = pd.concat(
        [edited[keys].reset_index(drop=True), pd.DataFrame(labels, index=edited.index)], axis=1
    )
    if labelled.empty:
        return pd.DataFrame(columns=[*keys, "label", "fault"])
    return labelled


# Columns of `benchmark` that `with_usage_change` reads; a caller checks them before labelling.
BENCHMARK_USAGE_COLUMNS = ("problem_id", "api_id", "subset", "usage_kind", "usage_enforced")


def with_usage_change(labels: pd.DataFrame, benchmark: pd.DataFrame) -> pd.DataFrame:
    """`labels` with each item's `usage_kind` and `usage_enforced` from the benchmark.

    An enforced item is one whose new name called with the old usage fails in the item's world,
    so adopting it needs the new usage too; on the others a rename alone passes, and the adoption
    mix of the two kinds answers different questions.
    """
    require_columns(
        benchmark,
        BENCHMARK_USAGE_COLUMNS,
        table="benchmark",
        hint="re-create it with `kedro run --pipeline=synthesis`",
    )
    items = benchmark.loc[
        benchmark["subset"].isin(EDITED_SUBSETS) & benchmark["api_id"].notna(),
        [c for c in BENCHMARK_USAGE_COLUMNS if c != "subset"],
    ].drop_duplicates(["problem_id", "api_id"])
    merged = labels.merge(items, on=["problem_id", "api_id"], how="left", validate="many_to_one")
    unknown = merged.loc[merged["usage_enforced"].isna(), ["problem_id", "api_id"]]
    if len(unknown):
        first = unknown.iloc[0]
        raise ValueError(
            f"{len(unknown)} labelled samples have no edited benchmark item (e.g. "
            f"{first['problem_id']} with {first['api_id']}); the executions and the benchmark "
            "come from different synthesis runs"
        )
    return merged.assign(usage_enforced=merged["usage_enforced"].astype(bool))


SUMMARY_GROUP_COLUMNS = ("model", "method", "regime", "edit_step", "subset", "usage_enforced")
NEW_API_REFERENCE = "new_api_reference"


def summary_measures() -> tuple[str, ...]:
    """The measures of `adoption_summary`, in report order."""
    return (
        *LABELS,
        *(f"faulty_adoption/{fault}" for fault in FAULTS),
        NEW_API_REFERENCE,
    )


def adoption_summary(labels: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Count, share and Wilson interval of each label (and fault, and the new-API reference
    rate: the share of samples whose completion references the new API at all) per group; the
    groups split usage-enforced items from rename-only ones."""
    columns = [
        *SUMMARY_GROUP_COLUMNS,
        "measure",
        "count",
        "n_samples",
        "share",
        "ci_low",
        "ci_high",
    ]
    rows = []
    if labels.empty:
        return pd.DataFrame(columns=columns)
    require_columns(
        labels,
        SUMMARY_GROUP_COLUMNS,
        table="adoption_labels",
        hint="label with `label_executions` and add the items' usage with `with_usage_change`",
    )
    for key, group in labels.groupby(list(SUMMARY_GROUP_COLUMNS), sort=True, dropna=False):
        n = len(group)
        counts = {label: int((group["label"] == label).sum()) for label in LABELS}
        for fault in FAULTS:
            counts[f"faulty_adoption/{fault}"] = int(
                ((group["label"] == "faulty_adoption") & (group["fault"] == fault)).sum()
            )
        counts[NEW_API_REFERENCE] = int(group["references_new_api"].astype(bool).sum())
        for measure in summary_measures():
            low, high = wilson_interval(counts[measure], n, confidence)
            rows.append(
                {
                    **dict(zip(SUMMARY_GROUP_COLUMNS, key, strict=True)),
                    "measure": measure,
                    "count": counts[measure],
                    "n_samples": n,
                    "share": counts[measure] / n,
                    "ci_low": low,
                    "ci_high": high,
                }
            )
    return pd.DataFrame(rows, columns=columns)
