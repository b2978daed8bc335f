"""`merge`: the study-level tables of a fanned-out run, recomputed from the union of its shards."""

from apiedit_kedro.pipelines.merge.pipeline import create_pipeline

__all__ = ["create_pipeline"]
