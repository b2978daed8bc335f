"""Verdicts belong to their own batch: interrupted calls, dying workers and forkservers, caps.

Every test drives the real pool (forkserver workers, forked children); nothing is mocked.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from multiprocessing import forkserver

import pytest
from sandbox_helpers import ORDINARY_CODE, WORKERS, ordinary_request, request, run

from apiedit_kedro.sandbox import SandboxRequestError
from apiedit_kedro.sandbox.pool import get_pool
from apiedit_kedro.sandbox.requests import MAX_TIMEOUT_S
from apiedit_kedro.study.execution import execute_cached
from apiedit_kedro.study.store import JsonStore

pytestmark = pytest.mark.timeout(120)

# ctypes reaches the real kill(2) past the guard and shoots the worker running the sample.
KILL_MY_WORKER = (
    "import ctypes, os, time\nctypes.CDLL(None).kill(os.getppid(), 9)\ntime.sleep(0.5)\n"
)
SLOW_CORRECT = "import time\ntime.sleep(0.4)\n" + ORDINARY_CODE
WRONG_CODE = "def add_one(x):\n    return x\n"


class _Interrupted(BaseException):
    """Raised from a signal handler, like a Ctrl-C in a notebook."""


def _interrupt_after(seconds: float) -> None:
    def handler(signum, frame):
        raise _Interrupted

    signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)


def test_an_interrupted_batch_leaves_no_verdict_for_the_next_one():
    run([ordinary_request()])
    previous = signal.getsignal(signal.SIGALRM)
    try:
        _interrupt_after(0.6)
        with pytest.raises(_Interrupted):
            run([request(SLOW_CORRECT, timeout_s=5.0) for _ in range(8)])
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    results = run([request(WRONG_CODE) for _ in range(4)])
    assert [r["full_pass"] for r in results] == [False] * 4
    assert all(r["error_type"] == "AssertionError" for r in results), results
    assert all(r["full_pass"] for r in run([ordinary_request() for _ in range(4)]))


def test_ten_worker_killing_samples_in_a_row_cost_only_themselves():
    requests = [ordinary_request()]
    requests += [request(KILL_MY_WORKER + ORDINARY_CODE, timeout_s=2.0) for _ in range(10)]
    requests += [ordinary_request() for _ in range(3)]
    results = run(requests)
    assert results[0]["full_pass"] and all(r["full_pass"] for r in results[11:])
    for result in results[1:11]:
        assert result["error_type"] == "sandbox_error"
        assert "died" in result["error_message"]
    assert len(get_pool(WORKERS).worker_pids()) == WORKERS


def test_a_killed_forkserver_is_restarted_and_the_next_batch_runs():
    run([ordinary_request()])
    pid = forkserver._forkserver._forkserver_pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.2)
    requests = [request(KILL_MY_WORKER + ORDINARY_CODE, timeout_s=2.0)]
    requests += [ordinary_request() for _ in range(3)]
    results = run(requests)
    assert results[0]["error_type"] == "sandbox_error"
    assert [r["full_pass"] for r in results[1:]] == [True] * 3


def test_timeouts_are_capped_before_any_sample_runs():
    with pytest.raises(SandboxRequestError, match=r"request 1, field 'timeout_s'.*cap of 3600"):
        run([ordinary_request(), ordinary_request(timeout_s=1e7)])
    with pytest.raises(SandboxRequestError, match="unit_timeout_s"):
        run([ordinary_request(unit_timeout_s=MAX_TIMEOUT_S * 2)])
    assert run([ordinary_request(timeout_s=MAX_TIMEOUT_S)])[0]["full_pass"]


def test_sandbox_errors_are_not_cached_as_final(tmp_path):
    store = JsonStore(tmp_path / "executions.sqlite")
    killer = request(KILL_MY_WORKER + ORDINARY_CODE, timeout_s=2.0)
    results = execute_cached([killer, ordinary_request()], store, workers=WORKERS)
    assert results[0]["error_type"] == "sandbox_error" and results[1]["full_pass"]
    with sqlite3.connect(tmp_path / "executions.sqlite") as connection:
        rows = connection.execute("SELECT value FROM entries").fetchall()
    assert len(rows) == 1 and '"full_pass": true' in rows[0][0], rows
