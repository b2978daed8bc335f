"""Request builders and process-hygiene checks shared by the sandbox tests (real processes)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from apiedit_kedro.sandbox import execute
from apiedit_kedro.sandbox.pool import get_pool

WORKERS = 2  # one pool size for the whole suite, so the pool is started once

ORDINARY_CODE = "def add_one(x):\n    return x + 1\n"
ORDINARY_TESTS = ["assert add_one(1) == 2", "assert add_one(-1) == 0"]


def request(
    code: str,
    tests: list[str] | None = None,
    *,
    world: str = "pristine",
    mappings: list[dict] | None = None,
    timeout_s: float = 1.0,
    setup: str = "",
    **extra: Any,
) -> dict[str, Any]:
    return {
        "code": code,
        "tests": ORDINARY_TESTS if tests is None else tests,
        "setup": setup,
        "world": world,
        "mappings": mappings or [],
        "timeout_s": timeout_s,
        **extra,
    }


def mapping(old: str, new: str, kind: str = "relocate", usage: dict | None = None) -> dict:
    """An api_mapping record: `old` (its own api_id) replaced by `new`."""
    return {
        "api_id": old,
        "old_qualname": old,
        "new_qualname": new,
        "kind": kind,
        "old_signature": "",
        "new_signature": "",
        "doc": f"{new} replaces {old}.",
        "impl": json.dumps(usage or {"usage": "same"}),
    }


def ordinary_request(**kwargs: Any) -> dict[str, Any]:
    return request(ORDINARY_CODE, **kwargs)


def run(requests: list[dict[str, Any]], workers: int = WORKERS) -> list[dict[str, Any]]:
    return execute(requests, workers=workers, progress=False)


def live_descendants_of_workers() -> list[tuple[int, str]]:
    """(pid, state) of every process whose parent is a pool worker: must be empty between runs."""
    workers = {str(pid) for pid in get_pool(WORKERS).worker_pids()}
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] in workers:
            found.append((int(entry), fields[0]))
    return found
