"""Execute generations with the sandbox in the edited and the pristine world, resumably.

The edited world of a sample is the set of APIs the model had been edited for when it generated
(`world_api_ids` of the generation row: one API in the instant regime, every API edited so far in the
sequential one); the pristine world is the untouched standard library. Every finished execution is
stored under a hash of its request, so a re-run executes only what is missing; a `sandbox_error`
(the sandbox lost the sample, not the program's fault) is not final and is retried by a re-run.
API references are scored on the model's part of the program only: the HumanEval prompt prefix
is passed as `prompt_chars`. A generation is executed only in a world its item was validated in
(its instant world, or a sequential checkpoint world the benchmark lists for it); anything else
means the generations and the benchmark disagree, and is an error.
"""

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from apiedit_kedro.sandbox import RESULT_FIELDS, TRANSIENT_ERROR_TYPES, execute
from apiedit_kedro.study.contracts import GENERATION_KEYS
from apiedit_kedro.study.store import JsonStore

logger = logging.getLogger(__name__)

WORLDS = ("edited", "pristine")
# Generation columns carried into `execution_results` so that adoption labels can read the
# completion's AST and the sample's world without re-joining the generations.
STATIC_EVIDENCE_KEYS = ("completion", "program", "world_api_ids")


def _request_key(request: Mapping[str, Any]) -> str:
    payload = json.dumps(request, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def _mapping_records(api_mapping: pd.DataFrame) -> dict[str, dict[str, Any]]:
    records = {}
    for row in api_mapping.to_dict("records"):
        records[row["api_id"]] = {
            key: (
                value
                if isinstance(value, str | int | float | bool) or value is None
                else str(value)
            )
            for key, value in row.items()
        }
    return records


class WorldMismatchError(ValueError):
    """A generation was made in a world its benchmark item was never validated in."""


def _validated_worlds(benchmark: pd.DataFrame, api_mapping: pd.DataFrame):
    """A checker: raises WorldMismatchError unless a generation row's world was validated."""
    missing = {"item_id", "world_api_ids", "sequential_steps"} - set(benchmark.columns)
    if missing or "seq_order" not in api_mapping.columns:
        raise ValueError(
            f"the benchmark lacks {sorted(missing) or ['api_mapping.seq_order']}: it predates "
            "item-level worlds; re-run `kedro run --pipeline=synthesis`"
        )
    order = api_mapping.sort_values("seq_order")["api_id"].tolist()
    edited = benchmark[benchmark["api_id"].notna()]
    items = {(row.problem_id, row.api_id): row for row in edited.itertuples(index=False)}

    def check(row: Any, world: list[str]) -> None:
        if row.subset == "specificity" or not row.api_id:
            return  # validated with every API removed, so any world of edited APIs holds
        item = items.get((row.problem_id, row.api_id))
        if item is None:
            raise WorldMismatchError(
                f"generation for {row.problem_id} under {row.api_id} has no benchmark item; the "
                "generations and the benchmark come from different synthesis runs"
            )
        if row.regime == "sequential":
            steps = [int(step) for step in item.sequential_steps]
            expected = order[: int(row.edit_step)] if int(row.edit_step) in steps else None
        else:
            expected = [str(api_id) for api_id in item.world_api_ids]
        if world != expected:
            raise WorldMismatchError(
                f"{item.item_id}: generated in world {world} at {row.regime} step {row.edit_step}, "
                f"but validated only in {list(item.world_api_ids)} and at sequential steps "
                f"{list(item.sequential_steps)}; regenerate with the current benchmark"
            )

    return check


def build_requests(
    generations: pd.DataFrame,
    benchmark: pd.DataFrame,
    api_mapping: pd.DataFrame,
    *,
    default_timeout_s: float,
) -> list[dict[str, Any]]:
    """Two sandbox requests per generation row (edited world first, then pristine)."""
    problems = benchmark.drop_duplicates("problem_id").set_index("problem_id")
    mappings = _mapping_records(api_mapping)
    check_world = _validated_worlds(benchmark, api_mapping)
    requests = []
    for row in generations.itertuples(index=False):
        if row.problem_id not in problems.index:
            raise ValueError(
                f"generation for {row.problem_id} has no benchmark row; the generations and the "
                "benchmark come from different synthesis runs (pin them with --load-versions)"
            )
        problem = problems.loc[row.problem_id]
        world_ids = json.loads(row.world_api_ids)
        unknown = [api_id for api_id in world_ids if api_id not in mappings]
        if unknown:
            raise ValueError(f"generation rows name APIs missing from api_mapping: {unknown}")
        check_world(row, world_ids)
        timeout = problem.get("timeout_s")
        prompt = str(problem.get("prompt") or "")
        prompt_chars = len(prompt) if prompt and row.program.startswith(prompt) else 0
        for world in WORLDS:
            requests.append(
                {
                    "code": row.program,
                    "tests": [str(test) for test in problem["tests"]],
                    "setup": str(problem.get("test_setup") or ""),
                    "world": world,
                    "mappings": [mappings[api_id] for api_id in world_ids],
                    "timeout_s": float(timeout) if pd.notna(timeout) else default_timeout_s,
                    "prompt_chars": prompt_chars,
                }
            )
    return requests


def execute_cached(
    requests: Sequence[Mapping[str, Any]],
    store: JsonStore,
    *,
    workers: int | None = None,
    chunk_size: int = 256,
) -> list[dict[str, Any]]:
    """`sandbox.execute` for the requests not yet in `store`; all results in request order."""
    keys = [_request_key(request) for request in requests]
    known = store.get_many(keys)
    missing = [i for i, key in enumerate(keys) if key not in known]
    logger.info(
        "execution: %d requests, %d already executed, %d to run",
        len(requests),
        len(requests) - len(missing),
        len(missing),
    )
    for start in range(0, len(missing), chunk_size):
        chunk = missing[start : start + chunk_size]
        results = execute([requests[i] for i in chunk], workers=workers, progress=True)
        fresh = {keys[i]: result for i, result in zip(chunk, results, strict=True)}
        final = {
            key: result
            for key, result in fresh.items()
            if result["error_type"] not in TRANSIENT_ERROR_TYPES
        }
        if len(final) < len(fresh):
            logger.warning(
                "execution: %d sandbox errors not stored; a re-run retries them",
                len(fresh) - len(final),
            )
        store.put_many(final)
        known.update(fresh)
    return [known[key] for key in keys]


def execution_table(
    generations: pd.DataFrame, results: Sequence[Mapping[str, Any]]
) -> pd.DataFrame:
    """One row per generation: the edited-world verdict plus `pristine_*` columns."""
    rows = []
    for position, generation in enumerate(generations.to_dict("records")):
        edited, pristine = results[2 * position], results[2 * position + 1]
        row = {key: generation[key] for key in GENERATION_KEYS}
        row.update({key: generation[key] for key in STATIC_EVIDENCE_KEYS})
        row["world"] = "edited"
        row.update({field: edited[field] for field in RESULT_FIELDS})
        row["pristine_compiles"] = pristine["compiles"]
        row["pristine_full_pass"] = pristine["full_pass"]
        row["pristine_error_type"] = pristine["error_type"]
        rows.append(row)
    columns = [
        *GENERATION_KEYS,
        *STATIC_EVIDENCE_KEYS,
        "world",
        *RESULT_FIELDS,
        "pristine_compiles",
        "pristine_full_pass",
        "pristine_error_type",
    ]
    return pd.DataFrame(rows, columns=columns)
