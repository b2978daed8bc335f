"""OS isolation around the sandbox's workers and their per-sample children, where the OS allows.

Layers, from the always-present to the ones this machine may refuse (`WorkerIsolation.layers`
lists the active ones; each result carries them in `isolation_layers`):

- `guard`, `limits`, `private_dir`: always. The reliability guard; resource limits whose hard
  limit is lowered to the soft one (a program cannot raise them back); a fresh `mkdtemp`
  directory per sample inside a pool directory only its owner can list.
- `parent_death`: the child is SIGKILLed by the kernel when its worker dies
  (`PR_SET_PDEATHSIG`), so a torn-down pool leaves no sample running.
- `network`: the worker enters a private network namespace (`unshare(CLONE_NEWNET)`): no
  interface but a down loopback, so even a socket built from the C base class connects nowhere.
- `readonly_fs`: the worker enters a private mount namespace in which every mount is read-only
  except the pool's scratch directory (`mount_setattr(MOUNT_ATTR_RDONLY, AT_RECURSIVE)`).
- `uid`: when the worker runs as root, each child drops to an unprivileged uid of its own worker
  (no supplementary groups, no new privileges), so it can neither kill its worker nor write
  anything it does not own. Only where the interpreter and its packages are readable by other
  users; here the interpreter lives under a `/root` that only root may enter.

A layer that the OS refuses is logged once per pool and reported, never fatal. Hand-written: the
calls are thin ctypes wrappers over unshare(2), mount(2), mount_setattr(2) and prctl(2), which
the standard library does not expose.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

_libc = ctypes.CDLL(None, use_errno=True)
_setgroups = os.setgroups
_chown = os.chown
_setresgid = os.setresgid
_setresuid = os.setresuid
_getppid = os.getppid
_os_exit = os._exit

ALWAYS_ON = ("guard", "limits", "private_dir", "parent_death")
_CLONE_NEWNS = 0x00020000
_CLONE_NEWNET = 0x40000000
_MS_BIND = 4096
_MS_REC = 16384
_MS_PRIVATE = 1 << 18
_AT_FDCWD = -100
_AT_RECURSIVE = 0x8000
_MOUNT_ATTR_RDONLY = 0x00000001
_SYS_MOUNT_SETATTR = 442  # the same number on x86_64 and the generic (arm64) syscall table
_PR_SET_PDEATHSIG = 1
_PR_SET_NO_NEW_PRIVS = 38
_UID_BASE = 2_000_000  # far above any account a distribution creates
_ORPHANED_STATUS = 72


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


@dataclass
class WorkerIsolation:
    """What a worker set up for its children; `sandbox_uid` None = no uid drop."""

    layers: list[str] = field(default_factory=lambda: list(ALWAYS_ON))
    unavailable: dict[str, str] = field(default_factory=dict)
    sandbox_uid: int | None = None

    def describe(self) -> str:
        return ",".join(self.layers)

    def report(self) -> dict[str, object]:
        return {"layers": list(self.layers), "unavailable": dict(self.unavailable)}


def _errno_text() -> str:
    number = ctypes.get_errno()
    return f"{os.strerror(number)} (errno {number})"


def _set_mount_attr(path: str, *, recursive: bool, read_only: bool) -> bool:
    attr = _MountAttr(
        attr_set=_MOUNT_ATTR_RDONLY if read_only else 0,
        attr_clr=0 if read_only else _MOUNT_ATTR_RDONLY,
    )
    flags = _AT_RECURSIVE if recursive else 0
    return (
        _libc.syscall(
            _SYS_MOUNT_SETATTR,
            _AT_FDCWD,
            path.encode(),
            flags,
            ctypes.byref(attr),
            ctypes.sizeof(attr),
        )
        == 0
    )


def _read_only_except(writable: str) -> str:
    """Enter a mount namespace where all but `writable` is read-only; "" or why it failed."""
    if _libc.unshare(_CLONE_NEWNS) != 0:
        return f"unshare(CLONE_NEWNS): {_errno_text()}"
    if _libc.mount(None, b"/", None, _MS_REC | _MS_PRIVATE, None) != 0:
        return f"making mounts private: {_errno_text()}"
    if _libc.mount(writable.encode(), writable.encode(), None, _MS_BIND, None) != 0:
        return f"bind-mounting {writable}: {_errno_text()}"
    if not _set_mount_attr("/", recursive=True, read_only=True):
        return f"mount_setattr read-only: {_errno_text()}"
    if not _set_mount_attr(writable, recursive=False, read_only=False):
        return f"mount_setattr writable {writable}: {_errno_text()}"
    return ""


def _unreadable_for_others() -> str:
    """The first directory on the interpreter's import path other users cannot enter, or ""."""
    roots = {Path(sys.prefix), Path(sys.base_prefix), Path(__file__).resolve().parents[2]}
    roots.update(Path(entry) for entry in sys.path if entry and os.path.isabs(entry))
    for root in sorted(roots):
        if not root.is_dir():
            continue
        resolved = root.resolve()
        for directory in reversed(resolved.parents):  # entered: needs search permission
            if not os.stat(directory).st_mode & stat.S_IXOTH:
                return str(directory)
        if os.stat(resolved).st_mode & (stat.S_IROTH | stat.S_IXOTH) != (
            stat.S_IROTH | stat.S_IXOTH
        ):  # listed by the import system: needs read permission too
            return str(resolved)
    return ""


def isolate_worker(scratch_dir: str, *, namespaces: bool = True) -> WorkerIsolation:
    """Call once in a fresh, single-threaded worker: enter what namespaces the OS allows.

    `namespaces=False` skips the network and mount namespaces (the benchmark measures them).
    """
    isolation = WorkerIsolation()
    if not namespaces:
        for layer in ("network", "readonly_fs"):
            isolation.unavailable[layer] = "turned off by the caller"
    elif _libc.unshare(_CLONE_NEWNET) == 0:
        isolation.layers.append("network")
    else:
        isolation.unavailable["network"] = f"unshare(CLONE_NEWNET): {_errno_text()}"
    problem = _read_only_except(scratch_dir) if namespaces else ""
    if problem:
        isolation.unavailable["readonly_fs"] = problem
    elif namespaces:
        isolation.layers.append("readonly_fs")
    if os.geteuid() != 0:
        isolation.unavailable["uid"] = "the worker is not root (already unprivileged)"
    elif blocked := _unreadable_for_others():
        isolation.unavailable["uid"] = (
            f"{blocked} is not searchable by other users and the interpreter needs it"
        )
    else:
        isolation.sandbox_uid = _UID_BASE + os.getpid() % 1_000_000
        isolation.layers.append("uid")
    return isolation


def prepare_sample_dir(path: str, isolation: WorkerIsolation) -> None:
    """Hand the sample's directory to the child's uid (the worker creates it as root)."""
    if isolation.sandbox_uid is not None:
        _chown(path, isolation.sandbox_uid, isolation.sandbox_uid)


def enter_child(isolation: WorkerIsolation, worker_pid: int) -> None:
    """In the forked child: drop privileges, then die with the worker (order matters)."""
    uid = isolation.sandbox_uid
    if uid is not None:
        _setgroups([])
        _setresgid(uid, uid, uid)
        _setresuid(uid, uid, uid)
        _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    # Set after the uid change, which clears it; then check the worker did not die before.
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if _getppid() != worker_pid:
        _os_exit(_ORPHANED_STATUS)


def log_layers(report: dict[str, object]) -> None:
    """Log a worker's `WorkerIsolation.report()` (the pool does it once per pool)."""
    logger.info("sandbox isolation layers active: %s", ",".join(report["layers"]))  # type: ignore[arg-type]
    for layer, reason in report["unavailable"].items():  # type: ignore[attr-defined]
        logger.info("sandbox isolation layer %s unavailable: %s", layer, reason)
