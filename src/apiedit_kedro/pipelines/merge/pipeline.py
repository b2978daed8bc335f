"""`merge`: union every shard's generations and edit logs, then recompute the study-level tables.

Executions reuse the evaluation nodes (and the execution cache), and pass@k and edit metrics are
computed from the union by the same metric functions as an unsharded run, so a sharded study gives
the unsharded study's tables. The adoption pipeline runs once more on the merged tables (its
outputs renamed `merged_<name>`), so the merged study has its own labels, decomposition and report.
"""

from functools import partial, update_wrapper

from kedro.pipeline import Node, Pipeline, pipeline

from apiedit_kedro.pipelines.adoption import create_pipeline as create_adoption_pipeline
from apiedit_kedro.pipelines.evaluation.nodes import (
    compute_pass_at_k,
    execute_generations,
    summarise_edit_metrics,
)
from apiedit_kedro.pipelines.merge.nodes import union_shard_outputs


def _union_node(name: str, regime: str) -> Node:
    function = update_wrapper(
        partial(union_shard_outputs, name=name, regime=regime), union_shard_outputs
    )
    return Node(
        function,
        inputs={"partitions": "shard_outputs", "shards": "params:merge.shards"},
        outputs=f"merged_{name}",
        name=f"union_{name}",
    )


def create_pipeline(**kwargs) -> Pipeline:
    unions = [
        _union_node(f"{regime}_{kind}", regime)
        for regime in ("instant", "sequential")
        for kind in ("generations", "edit_log")
    ]
    return (
        Pipeline(
            [
                *unions,
                Node(
                    execute_generations,
                    inputs=[
                        "merged_instant_generations",
                        "merged_sequential_generations",
                        "benchmark",
                        "api_mapping",
                        "execution_store",
                        "params:evaluation",
                    ],
                    outputs="merged_execution_results",
                    name="execute_merged_generations",
                ),
                Node(
                    compute_pass_at_k,
                    inputs=["merged_execution_results", "params:evaluation"],
                    outputs="merged_pass_at_k",
                    name="compute_merged_pass_at_k",
                ),
                Node(
                    summarise_edit_metrics,
                    inputs=["merged_instant_edit_log", "merged_sequential_edit_log"],
                    outputs="merged_edit_metrics",
                    name="summarise_merged_edit_metrics",
                ),
            ],
            tags=["merge"],
        )
        + _merged_adoption()
    )


def _merged_adoption() -> Pipeline:
    """The adoption pipeline on the merged tables; node names gain the `merged.` namespace."""
    adoption = create_adoption_pipeline()
    return pipeline(
        adoption,
        namespace="merged",
        inputs={
            "execution_results": "merged_execution_results",
            "pass_at_k": "merged_pass_at_k",
            "edit_metrics": "merged_edit_metrics",
            "benchmark": "benchmark",
            "api_mapping": "api_mapping",
        },
        outputs={name: f"merged_{name}" for name in adoption.all_outputs()},
        parameters={name for name in adoption.inputs() if name.startswith("params:")},
        tags=["merge"],
    )
