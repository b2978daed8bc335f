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
import secrets
import shutil
import signal
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
_QUEUE_DEPTH = 2
_MAX_STARTUP_DEATHS = 3
_START_ATTEMPTS = 3
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


def default_worker_count() -> int:
    return max(1, min(len(os.sched_getaffinity(0)), 4))


@dataclass
class _Worker:
    process: BaseProcess
    conn: Connection
    ready: bool = False  # sent its ready handshake; a death before it is a start-up failure


class SandboxStartupError(RuntimeError):
    """Sandbox workers keep dying before serving a sample."""


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

    def __init__(self, size: int) -> None:
        self.size = size
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
        self._workers = [self._start_worker() for _ in range(size)]
        self._startup_deaths = 0

    def _start_worker(self) -> _Worker:
        """Start one worker; a forkserver that died (or was killed) is restarted and retried."""
        last_error: BaseException | None = None
        for attempt in range(1, _START_ATTEMPTS + 1):
            parent_end, child_end = self._context.Pipe(duplex=True)
            process = self._context.Process(
                target=worker_module.serve,
                args=(child_end, self.base_dir),
                name="apiedit-sandbox-worker",
                daemon=True,
            )
            try:
                process.start()
            except (EOFError, OSError) as error:
                parent_end.close()
                child_end.close()
                logger.warning("sandbox: worker start %d failed (%r)", attempt, error)
                last_error = error
                continue
            child_end.close()
            return _Worker(process, parent_end)
        raise SandboxStartupError(
            f"could not start a sandbox worker in {_START_ATTEMPTS} attempts: the forkserver "
            f"keeps failing ({last_error!r})"
        )

    def worker_pids(self) -> list[int]:
        return [w.process.pid for w in self._workers if w.process.pid is not None]

    def _replace(self, dead: _Worker) -> None:
        with contextlib.suppress(Exception):
            dead.process.kill()
        _kill_orphaned_worker(dead.process.pid)
        dead.process.join(timeout=_SHUTDOWN_JOIN_S)
        dead.conn.close()
        self._startup_deaths = 0 if dead.ready else self._startup_deaths + 1
        if self._startup_deaths >= _MAX_STARTUP_DEATHS:
            raise SandboxStartupError(
                f"sandbox workers died {self._startup_deaths} times before serving a sample "
                f"(last exit code {dead.process.exitcode}). Under the forkserver start method "
                "the main module must be importable: run from a file or a notebook (with an "
                "`if __name__ == '__main__':` guard), not from stdin; see the worker's stderr."
            )
        self._workers[self._workers.index(dead)] = self._start_worker()

    def run(
        self, tasks: list[dict[str, Any]], on_result: Callable[[], None]
    ) -> list[dict[str, Any]]:
        """Run all tasks; results come back in task order. A dead worker costs its one sample.

        Each worker holds up to `_QUEUE_DEPTH` tasks, so it starts the next sample without
        waiting for this process to be scheduled (on a busy machine that hand-off took ms).
        Tasks queued behind the one a dead worker was running are resubmitted, not lost.
        """
        # A reply carries the batch id and request index it answers: anything else in a pipe
        # (a reply left over from an interrupted call, or a forged line) is discarded.
        batch_id = secrets.token_hex(8)
        results: list[dict[str, Any] | None] = [None] * len(tasks)
        pending = deque(range(len(tasks)))
        queues: dict[int, _Queue] = {}  # id(worker) -> its in-flight tasks, oldest first

        def fail_head(worker: _Worker, reason: str) -> None:
            queue = queues.pop(id(worker))
            index = queue.indexes.popleft()
            logger.warning(
                "sandbox worker pid %s lost request %d: %s", worker.process.pid, index, reason
            )
            results[index] = worker_module.failure_result(tasks[index], "sandbox_error", reason)
            pending.extendleft(reversed(queue.indexes))
            self._replace(worker)
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
                if worker.conn in ready:
                    try:
                        message = worker.conn.recv()
                    except (EOFError, OSError):
                        fail_head(worker, self._death_reason(worker))
                        continue
                    result = self._accept(worker, message, batch_id, queue.indexes[0])
                    if result is None:
                        continue
                    results[queue.indexes[0]] = result
                    queue.pop_head(tasks)
                    if not queue.indexes:
                        del queues[id(worker)]
                    on_result()
                elif worker.process.sentinel in ready:
                    fail_head(worker, self._death_reason(worker))
                elif time.monotonic() > queue.give_up:
                    fail_head(worker, "worker hung past the sample deadline; it was killed")
        return results  # type: ignore[return-value]

    @staticmethod
    def _accept(
        worker: _Worker, message: Any, batch_id: str, expected_index: int
    ) -> dict[str, Any] | None:
        """The result in `message` if it answers this batch's `expected_index`, else None."""
        if isinstance(message, tuple) and message[:1] == (worker_module.REPLY_READY,):
            worker.ready = True
            return None
        if (
            isinstance(message, tuple)
            and len(message) == 4
            and message[0] == worker_module.REPLY_RESULT
            and message[1] == batch_id
            and message[2] == expected_index
            and isinstance(message[3], dict)
        ):
            return message[3]
        logger.warning(
            "sandbox: discarded a reply from worker pid %s that does not answer request %d of "
            "this batch",
            worker.process.pid,
            expected_index,
        )
        return None

    def _fill(
        self,
        batch_id: str,
        tasks: list[dict[str, Any]],
        pending: deque[int],
        queues: dict[int, _Queue],
    ) -> None:
        for worker in list(self._workers):
            queue = queues.get(id(worker))
            if queue is None and pending and not worker.process.is_alive():
                # Died while idle (e.g. its forkserver was killed): no sample of it is lost.
                self._replace(worker)
                continue
            while pending and (queue is None or len(queue.indexes) < _QUEUE_DEPTH):
                index = pending.popleft()
                try:
                    worker.conn.send((batch_id, index, tasks[index]))
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

    def close(self, *, abort: bool = False) -> None:
        """Stop every worker; `abort` kills them at once instead of letting samples finish."""
        for worker in self._workers:
            with contextlib.suppress(OSError):
                if abort:
                    worker.process.kill()
                else:
                    worker.conn.send(None)
        for worker in self._workers:
            worker.process.join(timeout=_SHUTDOWN_JOIN_S)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(timeout=_SHUTDOWN_JOIN_S)
            worker.conn.close()
        self._workers = []
        shutil.rmtree(self.base_dir, ignore_errors=True)


def _kill_orphaned_worker(pid: int | None) -> None:
    """SIGKILL a worker that outlived its forkserver.

    When the forkserver dies, its workers are reported dead (exit code 255: the status channel
    closed) although they still run, orphaned. Only a process that is still a forkserver-started
    Python is killed, so a reused pid of an unrelated process is never touched.
    """
    if pid is None:
        return
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            started_by_forkserver = b"multiprocessing.forkserver" in cmdline.read()
    except OSError:
        return
    if started_by_forkserver:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


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


def shutdown_pool(*, abort: bool = False) -> None:
    """Stop the pool's workers (registered atexit; safe to call any time)."""
    pool, _PoolHolder.pool = _PoolHolder.pool, None
    if pool is not None and pool.owner_pid == os.getpid():
        pool.close(abort=abort)


atexit.register(shutdown_pool)
