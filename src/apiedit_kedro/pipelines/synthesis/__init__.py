"""The `synthesis` pipeline: API catalogue + HumanEval/MBPP -> validated benchmark and edit requests."""

from apiedit_kedro.pipelines.synthesis.pipeline import create_pipeline

__all__ = ["create_pipeline"]
