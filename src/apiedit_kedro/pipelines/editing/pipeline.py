"""The `instant` and `sequential` pipelines: one template per regime, instantiated under one
namespace per method.

Shared inputs (the benchmark, the model card, the caches) stay un-prefixed; `params:hparams`
becomes `params:<method>.hparams` and the outputs become `<method>.<regime>_generations` and
`<method>.<regime>_edit_log`.
"""

from functools import partial, update_wrapper

from kedro.pipeline import Node, Pipeline

from apiedit_kedro.pipelines.editing.nodes import run_regime
from apiedit_kedro.study.regimes import STUDY_METHODS

SHARED_INPUTS = {
    "benchmark",
    "problems",
    "edit_requests",
    "api_mapping",
    "generation_cache",
    "state_store",
    "covariance_dir",
}
SHARED_PARAMETERS = {
    "params:model",
    "params:generation",
    "params:study",
    "params:covariance",
    "params:api_shard",
}


def regime_template(regime: str, method: str) -> Pipeline:
    """The un-namespaced pipeline of one method in one regime."""
    run = update_wrapper(partial(run_regime, regime, method), run_regime)
    return Pipeline(
        [
            Node(
                run,
                inputs={
                    "benchmark": "benchmark",
                    "problems": "problems",
                    "edit_requests": "edit_requests",
                    "api_mapping": "api_mapping",
                    "model_card": "params:model",
                    "generation": "params:generation",
                    "hparams": "params:hparams",
                    "study": "params:study",
                    "covariance_settings": "params:covariance",
                    "api_shard": "params:api_shard",
                    "generation_cache": "generation_cache",
                    "state_store": "state_store",
                    "covariance_dir": "covariance_dir",
                },
                outputs=[f"{regime}_generations", f"{regime}_edit_log"],
                name=f"run_{regime}_editing",
            )
        ]
    )


def create_pipeline(regime: str, **kwargs) -> Pipeline:
    """Every method's namespace for one regime (`instant` or `sequential`)."""
    return sum(
        (
            Pipeline(
                regime_template(regime, method),
                namespace=method,
                inputs=SHARED_INPUTS,
                parameters=SHARED_PARAMETERS,
                tags=[method, regime],
            )
            for method in STUDY_METHODS
        ),
        Pipeline([]),
    )
