"""The `instant` pipeline: one edit at a time from the original weights, per method namespace."""

from apiedit_kedro.pipelines.instant.pipeline import create_pipeline

__all__ = ["create_pipeline"]
