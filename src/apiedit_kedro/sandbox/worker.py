"""A sandbox worker process: receives samples, forks one child per sample, supervises and reaps it.

Hand-written (no maintained library supervises fork-per-sample children with streamed verdicts).
The worker is started by the pool through the forkserver with the standard-library modules that
samples commonly use already imported (before any limit exists), installs the reliability guard
once for all its children, compiles the program and runs the static API scan itself (both
world-independent), prepares the edited world once per mapping set, then forks. It enforces the
wall-clock deadline by SIGKILLing the child's process group and always reaps: it is a child
subreaper, so descendants orphaned by the kill are reaped here too and no zombie stays behind.
"""

from __future__ import annotations
import __future__

import ast
import contextlib
import ctypes
import fcntl
import gc
import importlib
import json
import logging
import math
import os
import random
import secrets
import select
import shutil
import signal
import time
from dataclasses import dataclass
from typing import Any

from apiedit_kedro.sandbox.child import (
    SANDBOX_FAILURE_STATUS,
    ChildPlan,
    prepare_guard,
    run_child,
    vm_size_bytes,
)
from apiedit_kedro.sandbox.protocol import Records, parse_records
from apiedit_kedro.sandbox.result import ERROR_MESSAGE_LIMIT, SampleResult

logger = logging.getLogger(__name__)

# The first element of every message a worker sends to the pool.
REPLY_READY = "ready"
REPLY_RESULT = "result"

# Private handles, captured before the worker installs the guard over the public names.
_fork = os.fork
_kill = os.kill
_killpg = os.killpg
_mkdir = os.mkdir
_rmdir = os.rmdir
_WORKER_STATE = {"prepared": False, "raw_fork": False}
# libc's fork through PyDLL (the GIL stays held across the call); see _fork_child.
_libc_fork = ctypes.PyDLL(None, use_errno=True).fork

FILE_SIZE_LIMIT_BYTES = 64 * 1024 * 1024
_PIPE_CAPTURE_LIMIT = 4 * 1024 * 1024
_PIPE_BUFFER_BYTES = 1024 * 1024
_REAP_GRACE_S = 2.0
_WORLD_CACHE_SIZE = 64
_PR_SET_CHILD_SUBREAPER = 36
# The static scan runs in the worker, outside the child's limits: a huge or deeply nested
# program must not stall the worker (a 4 MB program once took 29.5 s to scan).
STATIC_SCAN_DEADLINE_S = 2.0
_PEP563_FLAG = __future__.annotations.compiler_flag
# poll(2) takes a C int of milliseconds; request validation caps timeouts far below this anyway.
_MAX_POLL_MS = 2**31 - 1

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


def prepare_worker(base_dir: str) -> None:
    """One-time worker set-up: subreaper, thread caps, pre-imports, guard; SIGINT to the parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
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
    os.makedirs(_TEMP_DIRS.base, exist_ok=True)
    guard = prepare_guard()
    guard.arm(_worker_hit_guard, _TEMP_DIRS.base)
    guard.install()
    _WORKER_STATE["prepared"] = True
    _WORKER_STATE["raw_fork"] = _thread_count() == 1
    # Move everything imported so far out of the collector's reach: a collection in a forked
    # child would otherwise touch (copy-on-write) every object page of the worker.
    gc.collect()
    gc.freeze()


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
    if not _WORKER_STATE["raw_fork"]:
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


def serve(conn: Any, base_dir: str) -> None:
    """Worker main loop (module-level so the forkserver can start it): one sample at a time.

    The ready handshake tells the pool that start-up is over: a worker that dies before it is a
    start-up failure, one that dies after it was killed by the sample it was running.
    """
    prepare_worker(base_dir)
    conn.send((REPLY_READY, os.getpid()))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the driver went away
            return
        if message is None:
            return
        batch_id, index, task = message
        try:
            result = run_sample(task)
        except Exception as exc:
            logger.exception("sandbox worker failed on request %d", index)
            result = failure_result(task, "sandbox_error", f"{type(exc).__name__}: {exc}")
        conn.send((REPLY_RESULT, batch_id, index, result))


@dataclass
class _Exit:
    """How the child ended."""

    killed_at_deadline: bool
    exit_code: int  # negative = killed by that signal


_MAPPING_CACHE: dict[str, list[Any]] = {}
_WORLD_CACHE: dict[str, Any] = {}


def _parsed_mappings(task: dict[str, Any]) -> list[Any]:
    key = task["mapping_key"]
    if key not in _MAPPING_CACHE:
        from apiedit_kedro.apis.mapping import parse_mappings

        if len(_MAPPING_CACHE) >= _WORLD_CACHE_SIZE:  # sequential runs grow the mapping set
            _MAPPING_CACHE.clear()
            _WORLD_CACHE.clear()
        _MAPPING_CACHE[key] = parse_mappings(task["mappings"])
    return _MAPPING_CACHE[key]


def _prepared_world(task: dict[str, Any]) -> Any:
    """The edited world for this task, prepared once per worker (imports, code generation)."""
    if task["world"] != "edited" or not task["mappings"]:
        return None
    key = task["mapping_key"]
    if key not in _WORLD_CACHE:
        from apiedit_kedro.apis.world import prepare_world

        mappings = _parsed_mappings(task)
        _WORLD_CACHE[key] = prepare_world(mappings)
    return _WORLD_CACHE[key]


def _static_refs(task: dict[str, Any]) -> tuple[int, int]:
    if not task["mappings"]:
        return 0, 0
    from apiedit_kedro.apis.references import find_api_references

    # The whole program is resolved (imports in the prompt give names their meaning), but only
    # references from `scored_from_line` on count: the prompt is the benchmark's, not the model's.
    refs = find_api_references(
        task["code"], _parsed_mappings(task), from_line=task.get("scored_from_line", 1)
    )
    return sum(refs.old.values()), sum(refs.new.values())


def failure_result(task: dict[str, Any], error_type: str, message: str) -> dict[str, Any]:
    """The record of a sample that never ran (syntax error, sandbox failure)."""
    stage = "syntax" if error_type == "syntax_error" else "sandbox"
    return SampleResult.never_ran(
        error_type, message, asserts_total=task.get("asserts_total", 0), stage=stage
    ).to_record()


def compile_program(source: str, filename: str) -> Any:
    """Compile sandboxed code with PEP 563 semantics, chosen here and nowhere inherited.

    Annotations are never evaluated: a HumanEval signature such as ``-> int`` must not fail
    when the world removed ``int``, and the static scan does not count annotations as uses.
    ``dont_inherit`` keeps this module's own future imports out of the program.
    """
    return compile(source, filename, "exec", flags=_PEP563_FLAG, dont_inherit=True)


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
            code = self._codes[source] = compile_program(source, "<test>")
        return code


_CODE_CACHE = _CodeCache()


class _TempDirs:
    """Per-sample working directories under the pool's base directory (the pool removes it).

    A sample that leaves its directory empty (the common case) costs one mkdir and one rmdir.
    """

    def __init__(self) -> None:
        self.base = ""
        self._counter = 0

    def create(self) -> str:
        os.makedirs(self.base, exist_ok=True)  # recreated if something removed it
        self._counter += 1
        # A random part, like mkdtemp's: a sample must not be able to pre-create the next ones.
        name = f"{os.getpid()}-{self._counter}-{secrets.token_hex(8)}"
        path = os.path.join(self.base, name)
        _mkdir(path, 0o700)
        return path

    @staticmethod
    def remove(path: str) -> None:
        try:
            _rmdir(path)
        except OSError:
            shutil.rmtree(path, ignore_errors=True)


_TEMP_DIRS = _TempDirs()


def run_sample(task: dict[str, Any]) -> dict[str, Any]:
    """Compile, scan, fork, supervise, reap; return the result record for one request."""
    started = time.monotonic()
    try:
        program = compile_program(task["code"], "<solution>")
    except (SyntaxError, ValueError, OverflowError, RecursionError, MemoryError) as exc:
        result = failure_result(task, "syntax_error", f"{type(exc).__name__}: {exc}")
        result["seconds"] = time.monotonic() - started
        return result
    try:
        with _deadline(min(task["timeout_s"], STATIC_SCAN_DEADLINE_S)):
            old_refs, new_refs = _static_refs(task)
            tamper_suspect = bool(tamper_markers(task["code"]))
    except (_ScanDeadline, RecursionError, MemoryError) as exc:
        # No verdict on removed-API use is possible, so the sample cannot count as compiling.
        reason = "deadline" if isinstance(exc, _ScanDeadline) else type(exc).__name__
        result = SampleResult.never_ran(
            "static_scan_failed",
            f"static scan aborted: {reason}",
            asserts_total=task["asserts_total"],
            stage="static",
        ).to_record()
        result["seconds"] = time.monotonic() - started
        return result
    temp_dir = _TEMP_DIRS.create()
    try:
        plan = ChildPlan(
            program=program,
            setup=_CODE_CACHE.get(task["setup"]) if task["setup"] else None,
            units=[(index, _CODE_CACHE.get(source)) for index, source in task["units"]],
            world=_prepared_world(task),
            unit_timeout_s=task["unit_timeout_s"],
            timeout_s=task["timeout_s"],
            memory_limit_bytes=task["memory_limit_bytes"],
            file_size_limit_bytes=FILE_SIZE_LIMIT_BYTES,
            temp_dir=temp_dir,
            worker_vm_size_bytes=vm_size_bytes(),
        )
        records, ending = _fork_and_supervise(plan, task["timeout_s"])
    finally:
        _TEMP_DIRS.remove(temp_dir)
    result = assemble_result(task, records, ending, old_refs, new_refs, tamper_suspect)
    result["seconds"] = time.monotonic() - started
    return result


class _ScanDeadline(Exception):
    """The static scan of one program ran past its deadline."""


@contextlib.contextmanager
def _deadline(seconds: float):
    """Raise `_ScanDeadline` inside the block after `seconds` (SIGALRM; the worker is 1 thread)."""

    def expire(signum, frame):
        raise _ScanDeadline

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# Names through which a program can reach the harness's frames, closures, objects or memory,
# i.e. rewrite its own verdict. Verdicts made inside the program's process can never be fully
# tamper-proof; a program that uses these is flagged and does not count as a pass.
_TAMPER_ATTRIBUTES = frozenset(
    {
        "_getframe",
        "settrace",
        "setprofile",
        "get_objects",
        "get_referrers",
        "get_referents",
        "__closure__",
        "__globals__",
        "__code__",
        "f_back",
        "f_globals",
        "f_locals",
        "f_builtins",
        "gi_frame",
        "cr_frame",
        "tb_frame",
        "__subclasses__",
        "__mro__",
    }
)
_TAMPER_MODULES = frozenset(
    {"gc", "ctypes", "_ctypes", "inspect", "apiedit_kedro", "_posixsubprocess"}
)


def tamper_markers(code: str) -> list[str]:
    """The introspection routes the program's source names (attribute, import or name)."""
    found = []
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Attribute) and node.attr in _TAMPER_ATTRIBUTES:
            found.append(node.attr)
        elif isinstance(node, ast.Name) and node.id in _TAMPER_ATTRIBUTES:
            found.append(node.id)
        elif isinstance(node, ast.Constant) and node.value in _TAMPER_ATTRIBUTES:
            found.append(node.value)  # getattr(frame, "f_back")
        elif isinstance(node, ast.Import | ast.ImportFrom):
            modules = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            modules.append(getattr(node, "module", None) or "")
            found += [m for m in modules if m.split(".")[0] in _TAMPER_MODULES]
    return found


def _fork_and_supervise(plan: ChildPlan, timeout_s: float) -> tuple[Records, _Exit]:
    nonce = secrets.token_hex(16)
    read_fd, write_fd = os.pipe()
    _enlarge_pipe(write_fd)
    deadline = time.monotonic() + timeout_s
    pid = _fork_child()
    if pid == 0:  # child: drop every inherited descriptor (e.g. the pool's connection) first
        os.close(read_fd)
        os.closerange(3, write_fd)
        os.closerange(write_fd + 1, 1 << 16)
        run_child(plan, write_fd, nonce)
    os.close(write_fd)
    try:
        captured, killed = _collect(pid, read_fd, deadline)
    except BaseException:
        # Whatever went wrong while waiting, the child must not outlive this sample: a live
        # child could still write into a pipe that a later sample's supervisor reads.
        _kill_group(pid)
        _reap(pid)
        raise
    finally:
        os.close(read_fd)
    exit_code = _reap(pid)
    planned = {index for index, _code in plan.units}
    return parse_records(captured, nonce, planned), _Exit(killed, exit_code)


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
    pidfd = os.pidfd_open(pid)
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        remaining_ms = min(math.ceil((deadline - time.monotonic()) * 1000), _MAX_POLL_MS)
        exited = remaining_ms > 0 and bool(poller.poll(max(1, remaining_ms)))
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
    target = -1 if _WORKER_STATE["prepared"] else -pid
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
        if _WORKER_STATE["prepared"]:
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


_EXCEPTION_CATEGORIES = {
    "MemoryError": "memory_limit",
    "SystemExit": "early_exit",
    "GuardViolation": "guard_violation",
    "UnitTimeout": "timeout",
}


def _category(exc_name: str) -> str:
    return _EXCEPTION_CATEGORIES.get(exc_name, exc_name or "Exception")


def _runtime_failure(task: dict[str, Any], records: Records, ending: _Exit) -> tuple[str, str, str]:
    """(error_type, message, stage) for a sample that ran; ("", "", "") for a full pass."""
    stage = "load" if records.load is None or not records.load[0] else "tests"
    if records.malformed:
        return (
            "tamper_suspect",
            f"the harness's records were tampered with: {'; '.join(records.malformed[:3])}",
            stage,
        )
    if records.guard:
        return "guard_violation", f"blocked call: {', '.join(records.guard[:5])}", stage
    if ending.killed_at_deadline:
        return "timeout", f"killed at the {task['timeout_s']:g} s wall-clock deadline", stage
    if ending.exit_code < 0:
        signum = -ending.exit_code
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = f"signal {signum}"
        if signum == signal.SIGXCPU:
            return "timeout", "CPU time limit (RLIMIT_CPU) exceeded", stage
        if signum == signal.SIGKILL:  # not ours: the kernel's OOM killer is the usual sender
            return "memory_limit", "killed by SIGKILL (out of memory?)", stage
        return "crash", f"child killed by {name}", stage
    if not records.done:
        if ending.exit_code == SANDBOX_FAILURE_STATUS:
            return (
                "sandbox_error",
                "the sandbox failed inside the child before the program ran",
                stage,
            )
        return (
            "early_exit",
            f"process exited (status {ending.exit_code}) before the tests ended",
            stage,
        )
    for tag, verdict in (("load", records.load), ("setup", records.setup)):
        if verdict is not None and not verdict[0]:
            return _category(verdict[1]), f"{tag}: {verdict[1]}: {verdict[2]}", tag
    for index, _source in task["units"]:
        ok, exc_name, text = records.units.get(index, (False, "", "no verdict"))
        if not ok:
            return _category(exc_name), f"unit {index}: {exc_name}: {text}", "tests"
    if not task["units"]:
        return "no_tests", "no non-constant assert units: nothing was checked", "tests"
    return "", "", ""


def assemble_result(
    task: dict[str, Any],
    records: Records,
    ending: _Exit,
    old_refs: int,
    new_refs: int,
    tamper_suspect: bool = False,
) -> dict[str, Any]:
    """Turn the child's records and exit into the result record (see the package docstring)."""
    tamper_suspect = tamper_suspect or bool(records.malformed)
    load_ok = records.load is not None and records.load[0]
    removed = task["world"] == "edited" and old_refs > 0
    passed = [records.units.get(index, (False, "", ""))[0] for index, _ in task["units"]]
    error_type, message, stage = _runtime_failure(task, records, ending)
    raw_full_pass = error_type == ""
    if removed:
        error_type, stage = "removed_api", "static"
        message = f"references {old_refs} removed API name(s); " + (message or "tests passed")
    unit_timeouts = any(v[1] == "UnitTimeout" for v in records.units.values())
    full_pass = raw_full_pass and load_ok and not removed
    if tamper_suspect and full_pass:
        full_pass = False
        error_type, stage = "tamper_suspect", "static"
        message = "passed, but the program's source introspects the harness"
    return SampleResult(
        compiles=load_ok and not removed,
        syntax_ok=True,
        load_ok=load_ok,
        asserts_passed=sum(passed),
        asserts_total=task["asserts_total"],
        full_pass=full_pass,
        raw_full_pass=raw_full_pass,
        error_type=error_type,
        error_message=message[:ERROR_MESSAGE_LIMIT],
        failed_stage=stage,
        unit_passed="".join("1" if ok else "0" for ok in passed),
        new_api_calls=sum(records.counts.values()),
        new_api_calls_by_api=json.dumps(records.counts, sort_keys=True),
        old_api_refs=old_refs,
        new_api_refs=new_refs,
        timed_out=ending.killed_at_deadline or ending.exit_code == -signal.SIGXCPU or unit_timeouts,
        tamper_suspect=tamper_suspect,
        seconds=0.0,
    ).to_record()
