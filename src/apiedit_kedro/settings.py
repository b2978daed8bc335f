"""Kedro project settings.

The method list that shapes the DAG lives in code (`pipelines.methods`), not in parameters:
parameters are node inputs, not DAG inputs.
"""

from kedro.config import OmegaConfigLoader

from apiedit_kedro.hooks import MissingInputHooks, NodeTimingHooks
from apiedit_kedro.study.selection import shard_tag

HOOKS = (NodeTimingHooks(), MissingInputHooks())

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # An environment holds only what differs from base: its parameter blocks deep-merge into base's.
    "merge_strategy": {"parameters": "soft"},
    "config_patterns": {
        "parameters": ["parameters*", "parameters*/**", "**/parameters*"],
        "globals": ["globals*", "globals*/**"],
    },
    # `${shard_tag:2/8}` -> "shard_2_of_8": the path segment that keeps API shards apart.
    "custom_resolvers": {"shard_tag": shard_tag},
}
