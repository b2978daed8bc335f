"""Project hooks: per-node wall-clock timing.

Each node's duration is logged when it finishes, so a long run shows where its time went.
"""

import logging
import time

from kedro.framework.hooks import hook_impl
from kedro.pipeline import Node

logger = logging.getLogger(__name__)


class NodeTimingHooks:
    """Logs how long every node took (per process; safe under the sequential runner)."""

    def __init__(self) -> None:
        self._started: dict[str, float] = {}

    @hook_impl
    def before_node_run(self, node: Node) -> None:
        self._started[node.name] = time.perf_counter()

    @hook_impl
    def after_node_run(self, node: Node) -> None:
        started = self._started.pop(node.name, None)
        if started is not None:
            logger.info("node %s finished in %.2f s", node.name, time.perf_counter() - started)


class MissingInputError(RuntimeError):
    """A pipeline's input that another pipeline makes has not been made yet."""


class MissingInputHooks:
    """Fails a run at once when an input that another registered pipeline produces is missing.

    Without this, `kedro run --pipeline=adoption` on a fresh data root would fail only when the
    first node loads `execution_results`, with a versioning error that does not say how to make it.
    """

    @hook_impl
    def before_pipeline_run(self, pipeline, catalog) -> None:
        from kedro.framework.project import pipelines

        producers: dict[str, str] = {}
        for name, registered in pipelines.items():
            if name == "__default__":
                continue
            for output in registered.all_outputs():
                producers.setdefault(output, name)
        missing = [
            dataset
            for dataset in sorted(pipeline.inputs())
            if dataset in producers and dataset in catalog and not catalog.exists(dataset)
        ]
        if missing:
            commands = sorted({f"`kedro run --pipeline={producers[d]}`" for d in missing})
            raise MissingInputError(
                f"this run needs {', '.join(missing)}, which no earlier run has made under this "
                f"data root; make it first with {' and '.join(commands)} (or run the whole study "
                "with `kedro run`)"
            )
