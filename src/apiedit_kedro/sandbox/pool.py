"""The sandbox's pool of forkserver-started worker processes, reused across `execute` calls.

Hand-written rather than `multiprocessing.Pool`/`concurrent.futures`: a worker that dies must cost
exactly the one sample it was running (marked `sandbox_error`) and be replaced, which those pools
do not offer (a dead `ProcessPoolExecutor` worker breaks the whole executor). Only workers that
die before their ready message count towards `SandboxStartupError`. One sample is in
flight per worker; the main process never forks samples itself (a large parent forks slowly).
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
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
from apiedit_kedro.sandbox.isolation import log_layers
from apiedit_kedro.sandbox.protocol import (
    READY,
    ProtocolError,
    parse_reply,
    sandbox_error,
    task_message,
)

logger = logging.getLogger(__name__)

# Beyond the sample's own deadline: compile, static scan, reap and IPC. Past it the worker is hung.
_HUNG_WORKER_GRACE_S = 30.0
_SHUTDOWN_JOIN_S = 2.0
_QUEUE_DEPTH = 2
_MAX_STARTUP_DEATHS = 3
_MAX_RESUBMISSIONS = 2
_BASE_PREFIX = "apiedit-sandbox-"


def scratch_root() -> str | None:
    """Where per-sample directories go: a tmpfs when there is one.

    On this project's ext4 (mounted with `discard`) a mkdir+rmdir pair took ~3.4 ms, more
    than a whole sample; on /dev/shm it takes microseconds. None = the default temp dir.
    """
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK) else None


def _remove_stale_base_dirs(root: str) -> None:
    """Remove base dirs left by sandbox drivers that died without their atexit clean-up."""
    for entry in os.listdir(root):
        if not entry.startswith(_BASE_PREFIX):
            continue
        owner = entry[len(_BASE_PREFIX) :].split("-", 1)[0]
        if owner.isdigit() and not os.path.exists(f"/proc/{owner}"):
            shutil.rmtree(os.path.join(root, entry), ignore_errors=True)


def _is_alive(pid: int | None) -> bool:
    """True for a running process (not a zombie); the pool's workers are not its children."""
    if pid is None:
        return False
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def default_worker_count() -> int:
    return max(1, min(len(os.sched_getaffinity(0)), 4))


@dataclass
class _Worker:
    process: BaseProcess
    conn: Connection
    ready: bool = False  # sent its ready message: only an unready worker's death is a start-up one


class SandboxStartupError(RuntimeError):
    """Sandbox workers keep dying before they are ready to serve a sample."""


def _give_up(task: dict[str, Any]) -> float:
    return time.monotonic() + task["timeout_s"] + _HUNG_WORKER_GRACE_S


@dataclass
class _Queue:
    """The tasks sent to one worker and not answered yet; the head is the one it is running."""

    worker: _Worker
    indexes: deque[int]
    give_up: float  # when the head task's worker counts as hung

    def pop_head(self, tasks: list[dict[str, Any]]) -> None:
        self.indexes.popleft()
        if self.indexes:
            self.give_up = _give_up(tasks[self.indexes[0]])


class WorkerPool:
    """N worker processes started through an explicitly pinned forkserver context."""

    def __init__(self, size: int, *, os_namespaces: bool = True) -> None:
        self.size = size
        self.os_namespaces = os_namespaces
        self.owner_pid = os.getpid()
        self._context = multiprocessing.get_context("forkserver")
        # Workers are forked from the forkserver with these already imported: a replacement
        # worker starts warm. (The forkserver itself never installs the guard.)
        self._context.set_forkserver_preload(
            [worker_module.__name__, *worker_module.PRELOAD_MODULES]
        )
        root = scratch_root() or tempfile.gettempdir()
        _remove_stale_base_dirs(root)
        self.base_dir = tempfile.mkdtemp(prefix=f"{_BASE_PREFIX}{os.getpid()}-", dir=root)
        # Others (a sample's unprivileged uid) may enter it but not list it: sample directory
        # names are random, so one sample cannot find or pre-create another's.
        os.chmod(self.base_dir, 0o711)
        self._batch_ids = itertools.count(1)
        self._startup_deaths = 0
        self.isolation: dict[str, Any] | None = None  # the first ready worker's report
        self._workers: list[_Worker] = []
        for _ in range(size):
            self._workers.append(self._start_worker())

    def _start_worker(self) -> _Worker:
        while True:
            parent_end, child_end = self._context.Pipe(duplex=True)
            process = self._context.Process(
                target=worker_module.serve,
                args=(child_end, self.base_dir, self.os_namespaces),
                name="apiedit-sandbox-worker",
                daemon=True,
            )
            try:
                process.start()
            except (EOFError, OSError) as error:  # e.g. the forkserver died while forking
                parent_end.close()
                self._count_startup_death(f"{type(error).__name__}: {error}")
                continue
            finally:
                child_end.close()
            return _Worker(process, parent_end)

    def _count_startup_death(self, reason: str) -> None:
        self._startup_deaths += 1
        logger.warning("sandbox worker failed to start (%s)", reason)
        if self._startup_deaths >= _MAX_STARTUP_DEATHS:
            raise SandboxStartupError(
                f"sandbox workers died {self._startup_deaths} times before they were ready "
                f"(last: {reason}). Under the forkserver start method the main module must be "
                "importable: run from a file or a notebook (with an "
                "`if __name__ == '__main__':` guard), not from stdin; see the worker's stderr."
            )

    def worker_pids(self) -> list[int]:
        return [w.process.pid for w in self._workers if w.process.pid is not None]

    def _replace(self, dead: _Worker) -> None:
        with contextlib.suppress(Exception):
            dead.process.kill()
        dead.process.join(timeout=_SHUTDOWN_JOIN_S)
        dead.conn.close()
        if not dead.ready:
            self._count_startup_death(f"exit code {dead.process.exitcode}")
        self._workers[self._workers.index(dead)] = self._start_worker()

    def _on_ready(self, worker: _Worker, report: Any) -> None:
        worker.ready = True
        self._startup_deaths = 0
        if self.isolation is None and isinstance(report, dict):
            self.isolation = report
            log_layers(report)

    def run(
        self, tasks: list[dict[str, Any]], on_result: Callable[[], None]
    ) -> list[dict[str, Any]]:
        """Run all tasks; results come back in task order. A dead worker costs its one sample.

        Each worker holds up to `_QUEUE_DEPTH` tasks, so it starts the next sample without
        waiting for this process to be scheduled (on a busy machine that hand-off took ms).
        Every task carries this call's batch id: a reply from an earlier, interrupted call is
        discarded, never taken for a verdict. Tasks queued behind the one a dead worker was
        running are resubmitted, not lost; a worker that dies before it is ready loses nothing.
        """
        batch_id = next(self._batch_ids)
        results: list[dict[str, Any] | None] = [None] * len(tasks)
        pending = deque(range(len(tasks)))
        queues: dict[int, _Queue] = {}  # id(worker) -> its in-flight tasks, oldest first
        retries = [0] * len(tasks)

        def lose(worker: _Worker, reason: str, *, its_fault: bool = False) -> None:
            """Replace `worker`; its running sample is lost only if the worker really died.

            A worker still alive when its sentinel fires lost its forkserver (whose pipe the
            sentinel is), not its sample: everything it held is resubmitted. A hung or
            misbehaving worker (`its_fault`) loses its running sample whatever its state.
            """
            queue = queues.pop(id(worker), None)
            indexes = queue.indexes if queue is not None else deque()
            lost = its_fault or not _is_alive(worker.process.pid)
            if indexes and not lost:
                retries[indexes[0]] += 1
                lost = retries[indexes[0]] > _MAX_RESUBMISSIONS  # never loop on one sample
            if worker.ready and indexes and lost:
                index = indexes.popleft()
                logger.warning(
                    "sandbox worker pid %s lost request %d: %s", worker.process.pid, index, reason
                )
                results[index] = sandbox_error(tasks[index], reason)
                on_result()
            pending.extendleft(reversed(indexes))
            self._replace(worker)

        def receive(worker: _Worker) -> bool:
            """Handle every message waiting from `worker`; False if it is gone."""
            while True:
                try:
                    if not worker.conn.poll():
                        return True
                    kind, first, second, record = parse_reply(worker.conn.recv())
                except (EOFError, OSError):
                    lose(worker, self._death_reason(worker))
                    return False
                except ProtocolError as error:
                    reason = f"sandbox worker broke the protocol ({error}); it was killed"
                    lose(worker, reason, its_fault=True)
                    return False
                if kind == READY:
                    self._on_ready(worker, second)
                    continue
                queue = queues.get(id(worker))
                if first != batch_id or queue is None or second != queue.indexes[0]:
                    logger.warning(
                        "sandbox: discarded a stale reply (batch %s, request %s)", first, second
                    )
                    continue
                results[second] = record
                queue.pop_head(tasks)
                if not queue.indexes:
                    del queues[id(worker)]
                on_result()

        while pending or queues:
            self._fill(batch_id, tasks, pending, queues)
            if not queues:
                continue
            nearest = min(queue.give_up for queue in queues.values())
            waitables = [q.worker.conn for q in queues.values()]
            waitables += [q.worker.process.sentinel for q in queues.values()]
            ready = set(wait(waitables, timeout=max(0.0, nearest - time.monotonic())))
            for queue in list(queues.values()):
                worker = queue.worker
                if worker.conn in ready and not receive(worker):
                    continue
                if id(worker) not in queues:
                    continue
                if worker.process.sentinel in ready:
                    if receive(worker) and id(worker) in queues:
                        lose(worker, self._death_reason(worker))
                elif time.monotonic() > queue.give_up:
                    reason = "worker hung past the sample deadline; it was killed"
                    lose(worker, reason, its_fault=True)
        return results  # type: ignore[return-value]

    def _fill(
        self,
        batch_id: int,
        tasks: list[dict[str, Any]],
        pending: deque[int],
        queues: dict[int, _Queue],
    ) -> None:
        for worker in list(self._workers):
            queue = queues.get(id(worker))
            while pending and (queue is None or len(queue.indexes) < _QUEUE_DEPTH):
                index = pending.popleft()
                try:
                    worker.conn.send(task_message(batch_id, index, tasks[index]))
                except OSError:  # died while idle: nothing of it was lost, retry elsewhere
                    pending.appendleft(index)
                    if queue is None:
                        self._replace(worker)
                    break
                if queue is None:
                    queue = queues[id(worker)] = _Queue(worker, deque(), 0.0)
                    queue.give_up = _give_up(tasks[index])
                queue.indexes.append(index)

    @staticmethod
    def _death_reason(worker: _Worker) -> str:
        worker.process.join(timeout=_SHUTDOWN_JOIN_S)
        return f"sandbox worker process died (exit code {worker.process.exitcode}) on this sample"

    def close(self, *, kill: bool = False) -> None:
        """Stop the workers: politely, or at once (`kill`, after an interrupted call)."""
        if not kill:
            for worker in self._workers:
                with contextlib.suppress(OSError):
                    worker.conn.send(None)
        for worker in self._workers:
            if kill:
                with contextlib.suppress(Exception):
                    worker.process.kill()
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


def get_pool(size: int, *, os_namespaces: bool | None = None) -> WorkerPool:
    """The process-wide pool, started lazily and restarted when a different size is asked for.

    `os_namespaces=False` starts workers without the network and mount namespaces (to measure
    what they cost); None keeps the running pool's setting (a new pool enters them).
    """
    pool = _PoolHolder.pool
    if pool is not None and pool.owner_pid != os.getpid():
        pool = None  # inherited through a fork: those workers belong to the parent
    if pool is not None and (
        pool.size != size or (os_namespaces is not None and pool.os_namespaces != os_namespaces)
    ):
        pool.close()
        pool = None
    if pool is None:
        started = time.monotonic()
        pool = WorkerPool(size, os_namespaces=os_namespaces is not False)
        logger.info("sandbox: started %d workers in %.2f s", size, time.monotonic() - started)
    _PoolHolder.pool = pool
    return pool


def shutdown_pool(*, kill: bool = False) -> None:
    """Stop the pool's workers (registered atexit; safe to call any time).

    `kill` stops them at once, without letting running samples finish: what `execute` does
    when it is interrupted, so the next call starts from clean pipes.
    """
    pool, _PoolHolder.pool = _PoolHolder.pool, None
    if pool is not None and pool.owner_pid == os.getpid():
        pool.close(kill=kill)


atexit.register(shutdown_pool)
