"""A sandbox worker process: receives samples, forks one child per sample, supervises and reaps it.

Hand-written (no maintained library supervises fork-per-sample children with streamed verdicts).
The worker is started by the pool through the forkserver with the standard-library modules that
samples commonly use already imported (before any limit exists), enters the OS isolation layers
this machine allows (`isolation`), installs the reliability guard once for all its children,
prepares the edited world once per mapping set, then forks one child per sample (the child
compiles and scans the program itself, under the deadline). It enforces the wall-clock deadline
by SIGKILLing the child's process group and always reaps, also when supervising fails: it is a
child subreaper, so descendants orphaned by the kill are reaped here too and no zombie stays.

It only supervises: the records and messages are `protocol`'s, the verdict rules `verdicts`'.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import gc
import importlib
import logging
import math
import os
import random
import secrets
import select
import shutil
import signal
import sys
import time
from typing import Any

from apiedit_kedro.apis.world import remember_library_modules
from apiedit_kedro.sandbox.child import (
    ChildPlan,
    harness_module_names,
    prepare_harness_hiding,
    run_child,
    vm_size_bytes,
)
from apiedit_kedro.sandbox.guard import prepare_guard
from apiedit_kedro.sandbox.isolation import (
    WorkerIsolation,
    isolate_worker,
    prepare_sample_dir,
)
from apiedit_kedro.sandbox.protocol import (
    ChildRecords,
    ProtocolError,
    SampleResult,
    parse_records,
    parse_task,
    ready_message,
    result_message,
    sandbox_error,
)
from apiedit_kedro.sandbox.scan import compile_program, scan_program
from apiedit_kedro.sandbox.verdicts import ChildExit, assemble_result

logger = logging.getLogger(__name__)

# Private handles, captured before the worker installs the guard over the public names.
_fork = os.fork
_kill = os.kill
_killpg = os.killpg
_mkdir = os.mkdir
_rmdir = os.rmdir
_pidfd_open = os.pidfd_open
# libc's fork through PyDLL (the GIL stays held across the call); see _fork_child.
_libc_fork = ctypes.PyDLL(None, use_errno=True).fork

FILE_SIZE_LIMIT_BYTES = 64 * 1024 * 1024
_PIPE_CAPTURE_LIMIT = 4 * 1024 * 1024
_PIPE_BUFFER_BYTES = 1024 * 1024
_REAP_GRACE_S = 2.0
_WORLD_CACHE_SIZE = 64
_PR_SET_CHILD_SUBREAPER = 36
# Programs up to this size are compiled and scanned here, before the fork: in the child the
# same work costs 3-5x more (its allocations fault in copy-on-write pages). Larger ones are
# compiled and scanned in the child, under the sample's deadline (a 4 MB function took minutes).
IN_WORKER_SOURCE_LIMIT = 64 * 1024

# Imported once per worker so children start warm and before RLIMIT_AS applies. Not numpy: its
# ~100 extra memory mappings made every fork ~0.5 ms slower, and it imports fine in a child
# under the address-space limit (tested).
PRELOAD_MODULES = [
    "array",
    "bisect",
    "cmath",
    "collections",
    "copy",
    "dataclasses",
    "datetime",
    "decimal",
    "fractions",
    "functools",
    "hashlib",
    "heapq",
    "itertools",
    "json",
    "math",
    "operator",
    "random",
    "re",
    "statistics",
    "string",
    "textwrap",
    "typing",
    "unicodedata",
    "ctypes",
    "apiedit_kedro.apis.mapping",
    "apiedit_kedro.apis.world",
    "apiedit_kedro.apis.references",
]


class _WorkerState:
    """Set once by `prepare_worker`; the defaults describe the sandbox driven in-process."""

    prepared = False
    raw_fork = False
    isolation = WorkerIsolation()


def prepare_worker(base_dir: str, os_namespaces: bool = True) -> WorkerIsolation:
    """One-time worker set-up: subreaper, thread caps, pre-imports, isolation, guard."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        logger.warning("prctl(PR_SET_CHILD_SUBREAPER) failed; orphaned grandchildren go to init")
    for name in PRELOAD_MODULES:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    _TEMP_DIRS.base = os.path.realpath(base_dir)
    _WorkerState.isolation = isolate_worker(_TEMP_DIRS.base, namespaces=os_namespaces)
    guard = prepare_guard()
    guard.arm(_worker_hit_guard, _TEMP_DIRS.base)
    guard.install()
    prepare_harness_hiding(guard)
    _WorkerState.prepared = True
    _WorkerState.raw_fork = _thread_count() == 1
    # Move everything imported so far out of the collector's reach: a collection in a forked
    # child would otherwise touch (copy-on-write) every object page of the worker.
    gc.collect()
    gc.freeze()
    return _WorkerState.isolation


def _thread_count() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return 0


def _fork_child() -> int:
    """fork(2) for one sample; in a single-threaded prepared worker, without Python's hooks.

    `os.fork` runs the interpreter's at-fork machinery (lock re-initialisation for threads that
    do not exist here, threading/logging hooks): measured in this worker it tripled the time
    until the child ran (1.8 ms vs 0.6 ms). A worker never starts threads, so that machinery has
    nothing to repair; the one hook with a visible effect, reseeding `random`, is replayed.
    Anywhere else (a threaded process, the sandbox driven in-process) `os.fork` is used.
    """
    if not _WorkerState.raw_fork:
        return _fork()
    pid = _libc_fork()
    if pid < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))
    if pid == 0:
        random.seed()  # what os.fork's at-fork hook does: children must not share a sequence
    return pid


def _worker_hit_guard(name: str) -> None:
    logger.error("sandbox worker itself called guarded %s (a sandbox bug)", name)


def serve(conn: Any, base_dir: str, os_namespaces: bool = True) -> None:
    """Worker main loop (module-level so the forkserver can start it): one sample at a time.

    Announces itself once set up (only a worker that dies before that is a start-up failure),
    then answers every task with a result tagged with the task's batch id and index.
    """
    isolation = prepare_worker(base_dir, os_namespaces)
    conn.send(ready_message(os.getpid(), isolation.report()))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the driver went away
            return
        if message is None:
            return
        try:
            batch_id, index, task = parse_task(message)
        except ProtocolError:
            logger.exception("sandbox worker got a malformed message; stopping")
            return
        try:
            record = run_sample(task)
        except Exception as exc:
            logger.exception("sandbox worker failed on request %d", index)
            record = sandbox_error(task, f"{type(exc).__name__}: {exc}")
        conn.send(result_message(batch_id, index, record))


_MAPPING_CACHE: dict[str, list[Any]] = {}
_WORLD_CACHE: dict[str, Any] = {}


def _parsed_mappings(task: dict[str, Any]) -> list[Any]:
    key = task["mapping_key"]
    if key not in _MAPPING_CACHE:
        from apiedit_kedro.apis.mapping import parse_mappings
        from apiedit_kedro.apis.world import api_locations

        if len(_MAPPING_CACHE) >= _WORLD_CACHE_SIZE:  # sequential runs grow the mapping set
            _MAPPING_CACHE.clear()
            _WORLD_CACHE.clear()
        parsed = parse_mappings(task["mappings"])
        for mapping in parsed:  # cached here, so every child's static scan starts warm
            api_locations(mapping)
        _MAPPING_CACHE[key] = parsed
    return _MAPPING_CACHE[key]


def _prepared_world(task: dict[str, Any]) -> Any:
    """The edited world for this task, prepared once per worker (imports, code generation)."""
    if task["world"] != "edited" or not task["mappings"]:
        return None
    key = task["mapping_key"]
    if key not in _WORLD_CACHE:
        from apiedit_kedro.apis.world import prepare_world

        _WORLD_CACHE[key] = prepare_world(_parsed_mappings(task))
    return _WORLD_CACHE[key]


class _CodeCache:
    """Compiled setup/unit code, shared by all samples of a problem (children inherit it)."""

    def __init__(self, limit: int = 2048) -> None:
        self._limit = limit
        self._codes: dict[str, Any] = {}

    def get(self, source: str) -> Any:
        code = self._codes.get(source)
        if code is None:
            if len(self._codes) >= self._limit:
                self._codes.clear()
            # dont_inherit: this module's own future imports must not leak into test code.
            code = self._codes[source] = compile(source, "<test>", "exec", dont_inherit=True)
        return code


_CODE_CACHE = _CodeCache()


class _TempDirs:
    """Per-sample working directories with unguessable names under the pool's base directory.

    A sample that leaves its directory empty (the common case) costs one mkdir and one rmdir.
    """

    def __init__(self) -> None:
        self.base = ""

    def create(self, isolation: WorkerIsolation) -> str:
        path = os.path.join(self.base, f"s-{secrets.token_hex(8)}")
        _mkdir(path, 0o700)
        prepare_sample_dir(path, isolation)
        return path

    @staticmethod
    def remove(path: str) -> None:
        try:
            _rmdir(path)
        except OSError:
            shutil.rmtree(path, ignore_errors=True)


_TEMP_DIRS = _TempDirs()


class _HarnessModules:
    """The harness's module names, recomputed only when sys.modules grew or shrank."""

    names: tuple[str, ...] = ()
    seen = -1


def _harness_modules() -> tuple[str, ...]:
    if len(sys.modules) != _HarnessModules.seen:
        _HarnessModules.names = harness_module_names()
        _HarnessModules.seen = len(sys.modules)
    return _HarnessModules.names


def run_sample(task: dict[str, Any]) -> dict[str, Any]:
    """Fork, supervise, reap; return the result record for one request."""
    started = time.monotonic()
    isolation = _WorkerState.isolation
    mappings = tuple(_parsed_mappings(task)) if task["mappings"] else ()
    program = findings = None
    if len(task["code"]) <= IN_WORKER_SOURCE_LIMIT:
        try:
            program = compile_program(task["code"])
        except (SyntaxError, ValueError, OverflowError, RecursionError, MemoryError) as exc:
            result = SampleResult.failure(
                task["asserts_total"],
                "syntax_error",
                f"{type(exc).__name__}: {exc}",
                stage="syntax",
                syntax_ok=False,
                isolation_layers=isolation.describe(),
            )
            result.seconds = time.monotonic() - started
            return result.to_record()
        findings = scan_program(task["code"], program, mappings, prompt_chars=task["prompt_chars"])
    world = _prepared_world(task)
    remember_library_modules()  # here, once, rather than in every child
    temp_dir = _TEMP_DIRS.create(isolation)
    try:
        plan = ChildPlan(
            code=task["code"],
            program=program,
            findings=findings,
            harness_modules=_harness_modules(),
            setup=_CODE_CACHE.get(task["setup"]) if task["setup"] else None,
            units=tuple((index, _CODE_CACHE.get(source)) for index, source in task["units"]),
            world=world,
            mappings=mappings,
            prompt_chars=task["prompt_chars"],
            unit_timeout_s=task["unit_timeout_s"],
            timeout_s=task["timeout_s"],
            memory_limit_bytes=task["memory_limit_bytes"],
            file_size_limit_bytes=FILE_SIZE_LIMIT_BYTES,
            temp_dir=temp_dir,
            worker_vm_size_bytes=vm_size_bytes(),
            isolation=isolation,
            worker_pid=os.getpid(),
        )
        records, ending = _fork_and_supervise(plan, task)
    finally:
        _TEMP_DIRS.remove(temp_dir)
    result = assemble_result(task, records, ending, isolation.describe())
    result.seconds = time.monotonic() - started
    return result.to_record()


def _fork_and_supervise(plan: ChildPlan, task: dict[str, Any]) -> tuple[ChildRecords, ChildExit]:
    """Fork the child and collect its records; it is killed and reaped whatever happens here."""
    nonce = secrets.token_hex(16)
    read_fd, write_fd = os.pipe()
    pid = 0
    try:
        _enlarge_pipe(write_fd)
        deadline = time.monotonic() + plan.timeout_s
        pid = _fork_child()
        if pid == 0:  # child: drop every inherited descriptor (e.g. the pool's connection) first
            os.close(read_fd)
            os.closerange(3, write_fd)
            os.closerange(write_fd + 1, 1 << 16)
            run_child(plan, write_fd, nonce)
        os.close(write_fd)
        write_fd = -1
        captured, killed = _collect(pid, read_fd, deadline)
    finally:
        if pid > 0:
            _kill_group(pid)
            exit_code = _reap(pid)
        for fd in (read_fd, write_fd):
            if fd >= 0:
                os.close(fd)
    unit_ids = [index for index, _ in task["units"]]
    records = parse_records(captured, nonce, unit_ids, has_setup=bool(task["setup"]))
    return records, ChildExit(killed, exit_code)


def _kill_group(pid: int) -> None:
    # The child leads its own group after setsid; killing the pid too covers a child that left
    # the group (via ctypes) or was killed before its setsid. It is unreaped, so no pid reuse.
    for kill, target in ((_killpg, pid), (_kill, pid)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            kill(target, signal.SIGKILL)


def _enlarge_pipe(fd: int) -> None:
    """Room for every record of a sample, so the worker need not read while the child runs."""
    for size in (_PIPE_BUFFER_BYTES, 256 * 1024):
        try:
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, size)
            return
        except OSError:
            continue


def _collect(pid: int, read_fd: int, deadline: float) -> tuple[bytes, bool]:
    """Wait for the child's exit or the deadline, kill its group, then read its records.

    The worker sleeps in one poll on a pidfd instead of reading records as they come: Python
    code running in the worker while the child lives copies shared pages (copy-on-write) and
    cost ~0.9 ms per sample. Records already sit in the enlarged pipe, so they survive a kill.
    """
    pidfd = _pidfd_open(pid)
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        remaining = deadline - time.monotonic()
        exited = remaining > 0 and bool(poller.poll(max(1, math.ceil(remaining * 1000))))
    finally:
        os.close(pidfd)
    # Kill the whole group (also after a normal exit: stray descendants must not outlive it).
    _kill_group(pid)
    os.set_blocking(read_fd, False)
    chunks: list[bytes] = []
    size = 0
    while size < _PIPE_CAPTURE_LIMIT:
        try:
            chunk = os.read(read_fd, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks), not exited


def _reap(pid: int) -> int:
    """Reap the child, then its descendants (reparented here: the worker is a subreaper).

    In a prepared worker every child is a sample's, so it reaps any child and kills strays
    that left the sample's process group. Elsewhere (the sandbox driven in-process, e.g. by a
    test) it only touches the sample's own process group, never the host's other children.
    """
    _, status = os.waitpid(pid, 0)
    exit_code = os.waitstatus_to_exitcode(status)
    target = -1 if _WorkerState.prepared else -pid
    give_up = time.monotonic() + _REAP_GRACE_S
    while True:
        try:
            reaped, _ = os.waitpid(target, os.WNOHANG)
        except ChildProcessError:
            break
        if reaped:
            continue
        if time.monotonic() > give_up:
            logger.warning("sandbox: descendants of pid %d still alive after the kill", pid)
            break
        if _WorkerState.prepared:
            for stray in _own_children():
                with contextlib.suppress(ProcessLookupError):
                    _kill(stray, signal.SIGKILL)
        time.sleep(0.001)
    return exit_code


def _own_children() -> list[int]:
    """Live children of this process (descendants that escaped the group kill via setsid)."""
    me = str(os.getpid())
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == me:
            children.append(int(entry))
    return children
