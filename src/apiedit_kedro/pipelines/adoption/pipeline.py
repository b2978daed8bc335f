"""Adoption: labels, summaries, failure decomposition, taxonomy, plots and the study report.

Reads only stored datasets (`execution_results`, `pass_at_k`, `edit_metrics`, `benchmark`,
`api_mapping`), so `kedro run --pipeline=adoption` regenerates the report without rerunning
anything upstream.
"""

from kedro.pipeline import Node, Pipeline

from apiedit_kedro.pipelines.adoption.nodes import (
    classify_errors,
    compare_with_baselines,
    decompose_failures,
    label_adoption,
    plot_adoption,
    plot_failures,
    plot_sequential,
    summarise_adoption,
    write_study_report,
)


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                label_adoption,
                inputs=["execution_results", "benchmark", "api_mapping"],
                outputs="adoption_labels",
                name="label_adoption",
            ),
            Node(
                summarise_adoption,
                inputs=["adoption_labels", "params:adoption"],
                outputs="adoption_summary",
                name="summarise_adoption",
            ),
            Node(
                decompose_failures,
                inputs="execution_results",
                outputs="failure_decomposition",
                name="decompose_failures",
            ),
            Node(
                classify_errors,
                inputs=["execution_results", "api_mapping"],
                outputs="error_taxonomy",
                name="classify_errors",
            ),
            Node(
                compare_with_baselines,
                inputs=["execution_results", "params:adoption"],
                outputs="paired_comparison",
                name="compare_with_baselines",
            ),
            Node(plot_adoption, "adoption_summary", "adoption_plot", name="plot_adoption"),
            Node(plot_sequential, "pass_at_k", "sequential_plot", name="plot_sequential"),
            Node(
                plot_failures,
                ["failure_decomposition", "error_taxonomy"],
                "failure_plot",
                name="plot_failures",
            ),
            Node(
                write_study_report,
                inputs=[
                    "pass_at_k",
                    "adoption_summary",
                    "failure_decomposition",
                    "error_taxonomy",
                    "paired_comparison",
                    "edit_metrics",
                    "execution_results",
                    "benchmark",
                    "api_mapping",
                    "params:model",
                    "params:generation",
                    "params:study",
                ],
                outputs=["study_report", "study_report_markdown"],
                name="write_study_report",
            ),
        ],
        tags=["adoption"],
    )
