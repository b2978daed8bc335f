"""Which edit requests and problems a run covers: API shards, the default scale, specificity samples."""

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

SUBSETS = ("reliability", "generalization", "specificity")


class StudyConfigError(ValueError):
    """A study parameter that cannot select work (bad shard spec, unknown method, …)."""


def parse_shard(spec: str) -> tuple[int, int]:
    """`"K/N"` (1 ≤ K ≤ N) -> (K, N); `"1/1"` is the whole catalogue."""
    try:
        index_text, count_text = str(spec).split("/")
        index, count = int(index_text), int(count_text)
    except ValueError:
        index = count = 0
    if not 1 <= index <= count:
        raise StudyConfigError(
            f"api_shard must look like K/N with 1 <= K <= N (e.g. --params=api_shard=2/8), "
            f"got {spec!r}"
        )
    return index, count


def shard_tag(spec: str) -> str:
    """A path segment naming a shard, so that shards write separate outputs."""
    index, count = parse_shard(spec)
    return "all" if count == 1 else f"shard_{index}_of_{count}"


def select_edit_requests(
    edit_requests: pd.DataFrame, *, shard: str, max_apis: int | None
) -> pd.DataFrame:
    """All edit requests of one shard's APIs, in `seq_order`, capped at `max_apis` APIs (None: all).

    APIs are dealt round-robin over shards in `seq_order`, so every shard is a spread of the
    sequence; the cap applies after sharding. An API's requests always travel together: the
    instant edit of an API applies all of them.
    """
    index, count = parse_shard(shard)
    ordered = edit_requests.sort_values(["seq_order", "edit_id"], kind="stable")
    apis = list(dict.fromkeys(ordered["api_id"]))[index - 1 :: count]
    if max_apis is not None:
        apis = apis[: int(max_apis)]
    if not apis:
        raise StudyConfigError(
            f"api_shard {shard} with max_apis={max_apis} selects no API out of "
            f"{ordered['api_id'].nunique()}"
        )
    return ordered[ordered["api_id"].isin(apis)].reset_index(drop=True)


def requests_by_api(requests: pd.DataFrame) -> list[tuple[str, list[dict[str, Any]]]]:
    """(api_id, its requests) in `seq_order`."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for request in requests.sort_values(["seq_order", "edit_id"], kind="stable").to_dict("records"):
        grouped.setdefault(request["api_id"], []).append(request)
    return list(grouped.items())


def problems_for_api(
    benchmark: pd.DataFrame, api_id: str, max_per_subset: int | None, *, step: int | None = None
) -> pd.DataFrame:
    """The API's reliability and generalization items (first `max_per_subset` of each).

    With `step`, only items validated in the sequential world after `step` APIs were edited.
    """
    rows = []
    for subset in SUBSETS[:2]:
        chosen = benchmark[(benchmark["api_id"] == api_id) & (benchmark["subset"] == subset)]
        chosen = chosen.sort_values("problem_id", kind="stable")
        if max_per_subset is not None:
            chosen = chosen.head(int(max_per_subset))
        if step is not None:
            chosen = chosen[[step in list(steps) for steps in chosen["sequential_steps"]]]
        rows.append(chosen)
    return pd.concat(rows, ignore_index=True)


def edited_item_ids(benchmark: pd.DataFrame, api_id: str, max_per_subset: int | None) -> set[str]:
    """The reliability items of the API that a run evaluates: their requests are what it edits."""
    chosen = problems_for_api(benchmark, api_id, max_per_subset)
    return set(chosen.loc[chosen["subset"] == "reliability", "item_id"])


def specificity_sample(benchmark: pd.DataFrame, size: int | None, seed: int) -> pd.DataFrame:
    """A fixed seeded sample of specificity problems, generated after every edit."""
    pool = benchmark[benchmark["subset"] == "specificity"].sort_values("problem_id", kind="stable")
    if size is None or size >= len(pool):
        return pool.reset_index(drop=True)
    picks = np.sort(np.random.default_rng(seed).choice(len(pool), size=int(size), replace=False))
    return pool.iloc[picks].reset_index(drop=True)


def checkpoints(n_edits: int) -> list[int]:
    """Sequential checkpoints: after 1, 2, 4, 8, … edits and after the last one."""
    steps, step = [], 1
    while step < n_edits:
        steps.append(step)
        step *= 2
    return [*steps, n_edits]


def scale_value(study: Mapping[str, Any], key: str) -> int | None:
    """An optional positive integer from the `study` parameters (null means no limit)."""
    value = study.get(key)
    if value is None:
        return None
    if int(value) < 1:
        raise StudyConfigError(f"study.{key} must be a positive integer or null, got {value!r}")
    return int(value)
