"""The `evaluation` pipeline: execute every generation in both worlds, then pass@k and edit metrics."""

from apiedit_kedro.pipelines.evaluation.pipeline import create_pipeline

__all__ = ["create_pipeline"]
