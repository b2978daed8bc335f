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
