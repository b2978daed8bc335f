"""The `adoption` pipeline: adoption labels, failure decomposition, error taxonomy, study report."""

from apiedit_kedro.pipelines.adoption.pipeline import create_pipeline

__all__ = ["create_pipeline"]
