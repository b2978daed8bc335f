"""`execute`: validate a batch of sandbox requests, run it on the worker pool, log throughput."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from apiedit_kedro.sandbox.pool import default_worker_count, get_pool, shutdown_pool
from apiedit_kedro.sandbox.requests import prepare_tasks

logger = logging.getLogger(__name__)

PROGRESS_BAR_MIN_BATCH = 50


def execute(
    requests: Sequence[Mapping[str, Any]], *, workers: int | None = None, progress: bool = True
) -> list[dict[str, Any]]:
    """Run every request in the sandbox; one result dict per request, in request order.

    Every request is validated before any runs (`SandboxRequestError` names the request index
    and field). `workers` defaults to min(usable cores, 4); the pool persists across calls.
    See the package docstring for the request/result keys and the error_type vocabulary.
    """
    if workers is not None and (
        isinstance(workers, bool) or not isinstance(workers, int) or workers < 1
    ):
        raise ValueError(f"workers must be a positive int or None, got {workers!r}")
    tasks = prepare_tasks(requests)
    if not tasks:
        return []
    # Imported here, not at module level: workers import this package, and tqdm.auto pulls in
    # IPython when present, which made every per-sample fork ~1 ms slower.
    from tqdm.auto import tqdm

    size = workers or default_worker_count()
    pool = get_pool(size)
    started = time.monotonic()
    with tqdm(
        total=len(tasks),
        desc="sandbox",
        unit="sample",
        disable=not progress or len(tasks) < PROGRESS_BAR_MIN_BATCH,
    ) as bar:
        try:
            results = pool.run(tasks, lambda: bar.update(1))
        except BaseException:
            # Interrupted (Ctrl-C) or broken: samples still run and replies sit in the pipes.
            # Kill it all, so the next call starts a fresh pool instead of reading them.
            shutdown_pool(kill=True)
            raise
    elapsed = time.monotonic() - started
    logger.info(
        "sandbox: %d samples in %.2f s (%.1f samples/s, %d workers)",
        len(tasks),
        elapsed,
        len(tasks) / max(elapsed, 1e-9),
        size,
    )
    return results
