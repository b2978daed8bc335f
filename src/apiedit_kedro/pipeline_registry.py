"""Project pipelines: every package under `pipelines/` is discovered; `__default__` runs them all."""

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline


def register_pipelines() -> dict[str, Pipeline]:
    pipelines = find_pipelines(raise_errors=True)
    # `merge` unions the shards of a `kedro fanout` run; it is never part of a one-machine run.
    pipelines["__default__"] = sum(
        (pipeline for name, pipeline in pipelines.items() if name != "merge"), Pipeline([])
    )
    return pipelines
