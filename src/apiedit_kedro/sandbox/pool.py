"""The sandbox's pool of forkserver-started worker processes, reused across `execute` calls.

Hand-written rather than `multiprocessing.Pool`/`concurrent.futures`: a worker that dies must cost
exactly the one sample it was running (marked `sandbox_error`) and be replaced, which those pools
do not offer (a dead `ProcessPoolExecutor` worker breaks the whole executor). One sample is in
flight per worker; the main process never forks samples itself (a large parent forks slowly).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import multiprocessing
import os
import shutil
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

from apiedit_kedro.sandbox import worker as worker_module

logger = logging.getLogger(__name__)

# Beyond the sample's own deadline: compile, static scan, reap and IPC. Past it the worker is hung.
_HUNG_WORKER_GRACE_S = 30.0
_SHUTDOWN_JOIN_S = 2.0


def default_worker_count() -> int:
    return max(1, min(len(os.sched_getaffinity(0)), 4))


@dataclass
class _Worker:
    process: BaseProcess
    conn: Connection


class WorkerPool:
    """N worker processes started through an explicitly pinned forkserver context."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.owner_pid = os.getpid()
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload([worker_module.__name__])
        self.base_dir = tempfile.mkdtemp(prefix="apiedit-sandbox-")
        self._workers = [self._start_worker() for _ in range(size)]

    def _start_worker(self) -> _Worker:
        parent_end, child_end = self._context.Pipe(duplex=True)
        process = self._context.Process(
            target=worker_module.serve,
            args=(child_end, self.base_dir),
            name="apiedit-sandbox-worker",
            daemon=True,
        )
        process.start()
        child_end.close()
        return _Worker(process, parent_end)

    def worker_pids(self) -> list[int]:
        return [w.process.pid for w in self._workers if w.process.pid is not None]

    def _replace(self, dead: _Worker) -> None:
        with contextlib.suppress(Exception):
            dead.process.kill()
        dead.process.join(timeout=_SHUTDOWN_JOIN_S)
        dead.conn.close()
        self._workers[self._workers.index(dead)] = self._start_worker()

    def run(
        self, tasks: list[dict[str, Any]], on_result: Callable[[], None]
    ) -> list[dict[str, Any]]:
        """Run all tasks; results come back in task order. A dead worker costs its one sample."""
        results: list[dict[str, Any] | None] = [None] * len(tasks)
        pending = deque(range(len(tasks)))
        busy: dict[int, tuple[_Worker, int, float]] = {}  # id(worker) -> (worker, index, give_up)

        def lose(worker: _Worker, index: int, reason: str) -> None:
            logger.warning(
                "sandbox worker pid %s lost request %d: %s", worker.process.pid, index, reason
            )
            results[index] = worker_module.failure_result(tasks[index], "sandbox_error", reason)
            busy.pop(id(worker), None)
            self._replace(worker)
            on_result()

        while pending or busy:
            for worker in list(self._workers):
                if id(worker) in busy or not pending:
                    continue
                index = pending.popleft()
                give_up = time.monotonic() + tasks[index]["timeout_s"] + _HUNG_WORKER_GRACE_S
                try:
                    worker.conn.send((index, tasks[index]))
                except OSError:  # died while idle: nothing was lost, retry on a fresh worker
                    pending.appendleft(index)
                    self._replace(worker)
                    continue
                busy[id(worker)] = (worker, index, give_up)
            if not busy:
                continue
            nearest = min(give_up for _, _, give_up in busy.values())
            waitables = [w.conn for w, _, _ in busy.values()]
            waitables += [w.process.sentinel for w, _, _ in busy.values()]
            ready = set(wait(waitables, timeout=max(0.0, nearest - time.monotonic())))
            for worker, index, give_up in list(busy.values()):
                if worker.conn in ready:
                    try:
                        got_index, result = worker.conn.recv()
                    except (EOFError, OSError):
                        lose(worker, index, self._death_reason(worker))
                        continue
                    results[got_index] = result
                    busy.pop(id(worker))
                    on_result()
                elif worker.process.sentinel in ready:
                    lose(worker, index, self._death_reason(worker))
                elif time.monotonic() > give_up:
                    lose(worker, index, "worker hung past the sample deadline; it was killed")
        return results  # type: ignore[return-value]

    @staticmethod
    def _death_reason(worker: _Worker) -> str:
        worker.process.join(timeout=_SHUTDOWN_JOIN_S)
        return f"sandbox worker process died (exit code {worker.process.exitcode}) on this sample"

    def close(self) -> None:
        for worker in self._workers:
            with contextlib.suppress(OSError):
                worker.conn.send(None)
        for worker in self._workers:
            worker.process.join(timeout=_SHUTDOWN_JOIN_S)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(timeout=_SHUTDOWN_JOIN_S)
            worker.conn.close()
        self._workers = []
        shutil.rmtree(self.base_dir, ignore_errors=True)


class _PoolHolder:
    """The process-wide pool; a holder object instead of a rebound module global."""

    pool: WorkerPool | None = None


def get_pool(size: int) -> WorkerPool:
    """The process-wide pool, started lazily and resized when a different size is asked for."""
    pool = _PoolHolder.pool
    if pool is not None and pool.owner_pid != os.getpid():
        pool = None  # inherited through a fork: those workers belong to the parent
    if pool is not None and pool.size != size:
        pool.close()
        pool = None
    if pool is None:
        started = time.monotonic()
        pool = WorkerPool(size)
        logger.info("sandbox: started %d workers in %.2f s", size, time.monotonic() - started)
    _PoolHolder.pool = pool
    return pool


def shutdown_pool() -> None:
    """Stop the pool's workers (registered atexit; safe to call any time)."""
    pool, _PoolHolder.pool = _PoolHolder.pool, None
    if pool is not None and pool.owner_pid == os.getpid():
        pool.close()


atexit.register(shutdown_pool)
