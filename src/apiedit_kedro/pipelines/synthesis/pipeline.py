"""Wiring of the `synthesis` pipeline (see this folder's README.md for the datasets and choices)."""

from kedro.pipeline import Node, Pipeline

from apiedit_kedro.pipelines.synthesis import nodes


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                nodes.build_api_candidates,
                "api_catalog",
                "api_candidates",
                name="validate_api_catalog",
            ),
            Node(
                nodes.normalise_problems,
                ["humaneval_raw", "mbpp_raw", "params:synthesis.max_problems_per_source"],
                "problems",
                name="normalise_problems",
            ),
            Node(
                nodes.detect_usages,
                ["problems", "api_candidates"],
                "api_usages",
                name="detect_api_usages",
            ),
            Node(
                nodes.plan_benchmark_items,
                [
                    "problems",
                    "api_usages",
                    "api_candidates",
                    "params:synthesis.excluded_mbpp_ids",
                ],
                ["item_candidates", "rewrite_report"],
                name="plan_benchmark_items",
            ),
            Node(
                nodes.validate_in_sandbox,
                ["problems", "item_candidates", "api_usages", "api_candidates", "params:synthesis"],
                "validation_results",
                name="validate_in_sandbox",
            ),
            Node(
                nodes.assemble_benchmark,
                [
                    "problems",
                    "item_candidates",
                    "validation_results",
                    "api_candidates",
                    "params:synthesis",
                ],
                ["benchmark", "api_mapping", "validation_report"],
                name="assemble_benchmark",
            ),
            Node(
                nodes.build_requests,
                ["benchmark", "api_mapping", "params:synthesis"],
                "edit_requests",
                name="build_edit_requests",
            ),
            Node(
                nodes.summarise_synthesis,
                [
                    "benchmark",
                    "api_mapping",
                    "rewrite_report",
                    "validation_report",
                    "params:synthesis.study_counts",
                ],
                "synthesis_report",
                name="summarise_synthesis",
            ),
        ],
        tags=["synthesis"],
    )
