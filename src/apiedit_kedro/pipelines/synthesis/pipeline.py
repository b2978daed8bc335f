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
                nodes.rewrite_references,
                ["problems", "api_usages", "api_candidates", "params:synthesis"],
                ["rewritten_references", "rewrite_report"],
                name="rewrite_references",
            ),
            Node(
                nodes.validate_in_sandbox,
                [
                    "problems",
                    "rewritten_references",
                    "api_usages",
                    "api_candidates",
                    "params:synthesis",
                ],
                "validation_results",
                name="validate_in_sandbox",
            ),
            Node(
                nodes.assemble_benchmark,
                {
                    "problems": "problems",
                    "rewritten": "rewritten_references",
                    "api_usages": "api_usages",
                    "validation": "validation_results",
                    "api_candidates": "api_candidates",
                    "params": "params:synthesis",
                },
                ["benchmark", "api_mapping", "validation_report"],
                name="assemble_benchmark",
            ),
            Node(
                nodes.build_edit_requests,
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
