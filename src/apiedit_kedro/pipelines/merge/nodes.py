"""Nodes of the `merge` pipeline: union the shards' outputs, never average shard tables."""

import re
from collections.abc import Callable, Mapping

import pandas as pd

from apiedit_kedro.study.selection import shard_tag

# <shard>/<method>/<name>.parquet/<version>/<name>  (suffix stripped by the partitioned dataset)
_PARTITION = re.compile(
    r"^(?P<shard>[^/]+)/(?P<method>[^/]+)/(?P<name>[^/]+)\.parquet/(?P<version>[^/]+)/"
)


def _shard_folders(regime: str, shards: int) -> set[str]:
    # Sequential jobs are never sharded; instant jobs write one folder per shard.
    if regime == "sequential" or shards == 1:
        return {"all"}
    return {shard_tag(f"{index}/{shards}") for index in range(1, shards + 1)}


def union_shard_outputs(
    partitions: Mapping[str, Callable[[], pd.DataFrame]], name: str, regime: str, shards: int
) -> pd.DataFrame:
    """The newest version of `<method>/<name>` in every shard folder of the run, concatenated."""
    folders = _shard_folders(regime, shards)
    newest: dict[tuple[str, str], tuple[str, str]] = {}
    for partition_id in partitions:
        match = _PARTITION.match(partition_id.replace("\\", "/"))
        if not match or match["name"] != name or match["shard"] not in folders:
            continue
        key = (match["shard"], match["method"])
        if key not in newest or match["version"] > newest[key][0]:
            newest[key] = (match["version"], partition_id)
    missing = folders - {shard for shard, _ in newest}
    if missing:
        raise ValueError(
            f"merge: no {name} in {sorted(missing)}; run every job of the fan-out first "
            f"(kedro fanout ... resumes the missing ones)"
        )
    frames = [partitions[partition_id]() for _, partition_id in sorted(newest.values())]
    return pd.concat([frame for frame in frames if not frame.empty], ignore_index=True)
