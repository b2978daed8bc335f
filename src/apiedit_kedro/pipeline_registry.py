"""Project pipelines, registered explicitly; `__default__` runs all but `merge`.

Explicit registration (not `find_pipelines`) makes an unknown `--pipeline` name a Kedro error that
names the closest registered pipelines, instead of an ImportError about a module that does not
exist.
"""

from kedro.pipeline import Pipeline

from apiedit_kedro.pipelines import adoption, editing, evaluation, merge, synthesis


def register_pipelines() -> dict[str, Pipeline]:
    pipelines = {
        "synthesis": synthesis.create_pipeline(),
        "instant": editing.create_pipeline("instant"),
        "sequential": editing.create_pipeline("sequential"),
        "evaluation": evaluation.create_pipeline(),
        "adoption": adoption.create_pipeline(),
        # `merge` unions the shards of a `kedro fanout` run; it is never part of a one-machine run.
        "merge": merge.create_pipeline(),
    }
    pipelines["__default__"] = sum(
        (pipeline for name, pipeline in pipelines.items() if name != "merge"), Pipeline([])
    )
    return pipelines
