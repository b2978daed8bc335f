"""Kedro project settings.

The method list that shapes the DAG lives in code (`pipelines.methods`), not in parameters:
parameters are node inputs, not DAG inputs.
"""

from kedro.config import OmegaConfigLoader

from apiedit_kedro.hooks import NodeTimingHooks

HOOKS = (NodeTimingHooks(),)

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    "config_patterns": {
        "parameters": ["parameters*", "parameters*/**", "**/parameters*"],
        "globals": ["globals*", "globals*/**"],
    },
}
