"""The worker pool: a worker that dies costs exactly its one sample and is replaced."""

from __future__ import annotations

import subprocess
import sys

import pytest
from sandbox_helpers import (
    ORDINARY_CODE,
    WORKERS,
    live_descendants_of_workers,
    ordinary_request,
    request,
    run,
)

from apiedit_kedro.sandbox.pool import get_pool

pytestmark = pytest.mark.timeout(60)

# The guard is not a security boundary: ctypes reaches the real kill(2) and shoots the worker.
KILL_MY_WORKER = (
    "import ctypes, os, time\nctypes.CDLL(None).kill(os.getppid(), 9)\ntime.sleep(0.5)\n"
)


def test_killed_worker_is_replaced_and_only_its_sample_is_lost():
    run([ordinary_request()])
    before = set(get_pool(WORKERS).worker_pids())
    requests = [ordinary_request(), request(KILL_MY_WORKER + ORDINARY_CODE, timeout_s=2.0)]
    requests += [ordinary_request() for _ in range(4)]
    results = run(requests)
    assert results[1]["error_type"] == "sandbox_error"
    assert "died" in results[1]["error_message"]
    assert [r["full_pass"] for r in results] == [True, False, True, True, True, True]
    after = set(get_pool(WORKERS).worker_pids())
    assert len(after) == WORKERS and after != before
    assert all(r["full_pass"] for r in run([ordinary_request()] * 4))
    assert live_descendants_of_workers() == []


def test_workers_that_cannot_start_raise_a_clear_error(tmp_path):
    # A script fed through stdin cannot be re-imported by forkserver workers: every worker dies
    # at start-up. The caller must get one clear error, not a batch of sandbox_error results.
    script = (
        "from apiedit_kedro.sandbox import SandboxStartupError, execute\n"
        "request = {'code': 'x = 1', 'tests': ['assert x == 1'], 'world': 'pristine', "
        "'timeout_s': 1.0}\n"
        "try:\n    execute([request] * 6, progress=False)\n"
        "except SandboxStartupError as error:\n    print('STARTUP-ERROR', error)\n"
    )
    completed = subprocess.run(
        [sys.executable, "-"],
        check=False,
        input=script,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert "STARTUP-ERROR" in completed.stdout, completed.stderr[-2000:]
    assert "not from stdin" in completed.stdout
