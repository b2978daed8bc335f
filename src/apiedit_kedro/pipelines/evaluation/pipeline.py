"""Evaluation: `<method>.execution_results` per method namespace, then the combined tables."""

from kedro.pipeline import Node, Pipeline

from apiedit_kedro.pipelines.evaluation.nodes import (
    combine_execution_results,
    compute_pass_at_k,
    execute_generations,
    summarise_edit_metrics,
)
from apiedit_kedro.study.regimes import STUDY_METHODS


def execution_template() -> Pipeline:
    return Pipeline(
        [
            Node(
                execute_generations,
                inputs=[
                    "instant_generations",
                    "sequential_generations",
                    "benchmark",
                    "api_mapping",
                    "execution_store",
                    "params:evaluation",
                ],
                outputs="execution_results",
                name="execute_generations",
            )
        ]
    )


def create_pipeline(**kwargs) -> Pipeline:
    per_method = sum(
        (
            Pipeline(
                execution_template(),
                namespace=method,
                inputs={"benchmark", "api_mapping", "execution_store"},
                parameters={"params:evaluation"},
                tags=[method, "evaluation"],
            )
            for method in STUDY_METHODS
        ),
        Pipeline([]),
    )
    report = Pipeline(
        [
            Node(
                combine_execution_results,
                inputs=[f"{method}.execution_results" for method in STUDY_METHODS],
                outputs="execution_results",
                name="combine_execution_results",
            ),
            Node(
                compute_pass_at_k,
                inputs=["execution_results", "params:evaluation"],
                outputs="pass_at_k",
                name="compute_pass_at_k",
            ),
            Node(
                summarise_edit_metrics,
                inputs=[
                    f"{method}.{regime}_edit_log"
                    for method in STUDY_METHODS
                    for regime in ("instant", "sequential")
                ],
                outputs="edit_metrics",
                name="summarise_edit_metrics",
            ),
        ],
        tags=["report"],
    )
    return per_method + report
