"""The OS isolation layers, each exercised in a real forked process of its own.

The pool tests show the layers this machine grants at work on whole samples; here each layer's
mechanism is checked directly, including the unprivileged uid, which the pool only uses where
the interpreter is readable by other users (not on a machine whose Python lives under /root).
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from apiedit_kedro.sandbox.isolation import WorkerIsolation, enter_child, isolate_worker

pytestmark = pytest.mark.timeout(60)


def in_forked_child(probe) -> dict:
    """Run `probe()` in a fork of this process; return the dict it returned."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        try:
            outcome = probe()
        except BaseException as error:  # reported, not raised: this is a forked pytest
            outcome = {"error": repr(error)}
        os.write(write_fd, json.dumps(outcome).encode())
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd) as reader:
        data = reader.read()
    os.waitpid(pid, 0)
    return json.loads(data)


def _attempt(action) -> str:
    try:
        action()
    except OSError as error:
        return type(error).__name__
    return "done"


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping to another uid needs root")
def test_the_unprivileged_uid_can_neither_write_root_files_nor_kill_its_worker(tmp_path: Path):
    victim = tmp_path / "root-owned.txt"
    victim.write_text("root")
    victim.chmod(0o644)
    tmp_path.chmod(0o755)
    parent = os.getpid()

    def probe() -> dict:
        enter_child(WorkerIsolation(sandbox_uid=2_000_123), parent)
        return {
            "uid": os.getuid(),
            "groups": os.getgroups(),
            "write": _attempt(lambda: victim.write_text("changed")),
            "create": _attempt(lambda: (tmp_path / "new.txt").write_text("x")),
            "kill": _attempt(lambda: os.kill(parent, 0)),
            "regain_root": _attempt(lambda: os.setuid(0)),
        }

    outcome = in_forked_child(probe)
    assert outcome == {
        "uid": 2_000_123,
        "groups": [],
        "write": "PermissionError",
        "create": "PermissionError",
        "kill": "PermissionError",
        "regain_root": "PermissionError",
    }
    assert victim.read_text() == "root"


def test_a_child_dies_with_its_worker():
    read_fd, write_fd = os.pipe()
    middle = os.fork()
    if middle == 0:  # the "worker": forks a "sample" that sleeps, then dies at once
        worker = os.getpid()
        sample = os.fork()
        if sample == 0:
            enter_child(WorkerIsolation(), worker)  # exits at once if the worker is gone
            signal.pause()
            os._exit(0)
        os.write(write_fd, str(sample).encode())
        os._exit(0)
    os.close(write_fd)
    sample_pid = int(os.read(read_fd, 64))
    os.close(read_fd)
    os.waitpid(middle, 0)
    for _ in range(200):
        try:
            state = Path(f"/proc/{sample_pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            break
        if state == "Z":
            break
        time.sleep(0.01)
    else:
        pytest.fail(f"the sample {sample_pid} outlived its worker")


def test_namespaces_cut_the_network_and_freeze_the_filesystem(tmp_path: Path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    outside = tmp_path / "outside.txt"
    outside.write_text("untouched")

    def probe() -> dict:
        isolation = isolate_worker(str(scratch))
        import socket

        def connect() -> None:
            with socket.create_connection(("127.0.0.1", 9), timeout=1):
                pass

        return {
            "layers": isolation.layers,
            "unavailable": isolation.unavailable,
            "outside": _attempt(lambda: outside.write_text("changed")),
            "inside": _attempt(lambda: (scratch / "ok.txt").write_text("ok")),
            "network": _attempt(connect),
        }

    outcome = in_forked_child(probe)
    assert outside.read_text() == "untouched"
    if "readonly_fs" in outcome["layers"]:
        assert outcome["outside"] == "OSError" and outcome["inside"] == "done", outcome
    if "network" in outcome["layers"]:
        assert outcome["network"] == "OSError", outcome
    for layer, reason in outcome["unavailable"].items():  # a missing layer says why
        assert layer in ("network", "readonly_fs", "uid") and reason, outcome
