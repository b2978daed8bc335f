"""The `sequential` pipeline: edits accumulate in `seq_order`, scored at checkpoints."""

from apiedit_kedro.pipelines.sequential.pipeline import create_pipeline

__all__ = ["create_pipeline"]
