"""The editing regimes: `create_pipeline("instant")` and `create_pipeline("sequential")`."""

from apiedit_kedro.pipelines.editing.pipeline import create_pipeline

__all__ = ["create_pipeline"]
