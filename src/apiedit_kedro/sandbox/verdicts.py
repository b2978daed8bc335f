"""From what the child reported and how it ended to one `SampleResult`.

The rules are the package docstring's: stages in order (syntax -> static -> load -> setup ->
units), a unit without a verdict counts as failed, a full pass needs every counted unit, the
static scan nests `full_pass` under `compiles`, and a program that tampers with the harness (a
protocol violation, or introspection found by the static scan) never passes.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import Any

from apiedit_kedro.sandbox.protocol import (
    ERROR_TYPE_OF_CATEGORY,
    ChildRecords,
    SampleResult,
    StageVerdict,
    counts_json,
)

SANDBOX_FAILURE_STATUS = 70
PROGRAM_BROKE_OUT_STATUS = 71


@dataclass
class ChildExit:
    """How the child ended."""

    killed_at_deadline: bool
    exit_code: int  # negative = killed by that signal


def _error_type(verdict: StageVerdict) -> str:
    return ERROR_TYPE_OF_CATEGORY.get(verdict.category, verdict.exc_type or "Exception")


def _signal_failure(exit_code: int) -> tuple[str, str]:
    signum = -exit_code
    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = f"signal {signum}"
    if signum == signal.SIGXCPU:
        return "timeout", "CPU time limit (RLIMIT_CPU) exceeded"
    if signum == signal.SIGKILL:  # not ours: the kernel's OOM killer is the usual sender
        return "memory_limit", "killed by SIGKILL (out of memory?)"
    return "crash", f"child killed by {name}"


def _stage_reached(records: ChildRecords) -> str:
    if records.compiled is None:
        return "syntax"
    if records.scan is None:
        return "static"
    if records.load is None or not records.load.ok:
        return "load"
    return "tests"


def _runtime_failure(
    task: dict[str, Any], records: ChildRecords, ending: ChildExit
) -> tuple[str, str, str]:
    """(error_type, message, stage) for a sample that ran; ("", "", "") for a full pass."""
    stage = _stage_reached(records)
    if records.guard:
        return "guard_violation", f"blocked call: {', '.join(records.guard[:5])}", stage
    if ending.killed_at_deadline:
        where = {"syntax": "compiling the program", "static": "the static API scan"}
        what = where.get(stage, "the program")
        return (
            "timeout",
            f"killed at the {task['timeout_s']:g} s wall-clock deadline ({what})",
            stage,
        )
    if ending.exit_code < 0:
        error_type, message = _signal_failure(ending.exit_code)
        return error_type, message, stage
    if not records.done:
        if ending.exit_code == SANDBOX_FAILURE_STATUS or stage in ("syntax", "static"):
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
        if verdict is not None and not verdict.ok:
            return _error_type(verdict), f"{tag}: {verdict.exc_type}: {verdict.message}", tag
    for index, _source in task["units"]:
        verdict = records.units.get(index)
        if verdict is None:
            return "early_exit", f"unit {index}: no verdict", "tests"
        if not verdict.ok:
            return (
                _error_type(verdict),
                f"unit {index}: {verdict.exc_type}: {verdict.message}",
                "tests",
            )
    if not task["units"]:
        return "no_tests", "no non-constant assert units: nothing was checked", "tests"
    return "", "", ""


def assemble_result(
    task: dict[str, Any], records: ChildRecords, ending: ChildExit, isolation_layers: str
) -> SampleResult:
    """Turn the child's records and exit into the sample's verdict."""
    if records.compiled is not None and not records.compiled.ok:
        return SampleResult.failure(
            task["asserts_total"],
            "syntax_error",
            f"{records.compiled.exc_type}: {records.compiled.message}",
            stage="syntax",
            syntax_ok=False,
            isolation_layers=isolation_layers,
        )
    scan = records.scan
    if scan is not None and scan.failure:
        return SampleResult.failure(
            task["asserts_total"],
            "static_scan_failed",
            f"the static API scan could not finish: {scan.failure}",
            stage="static",
            isolation_layers=isolation_layers,
        )
    load_ok = records.load is not None and records.load.ok
    old_refs = scan.old_refs if scan is not None else 0
    new_refs = scan.new_refs if scan is not None else 0
    tampering = [*(scan.tamper if scan is not None else ()), *records.violations]
    removed = task["world"] == "edited" and old_refs > 0
    passed = [
        (records.units.get(index) or StageVerdict(False, "", "", "")).ok
        for index, _ in task["units"]
    ]
    error_type, message, stage = _runtime_failure(task, records, ending)
    raw_full_pass = error_type == ""
    if removed:
        error_type, stage = "removed_api", "static"
        message = f"references {old_refs} removed API name(s); " + (message or "tests passed")
    if tampering:
        error_type, stage = "tamper_suspect", "static" if scan and scan.tamper else stage
        message = "the program tampers with the sandbox: " + "; ".join(tampering[:5])
    unit_timeouts = any(v.category == "timeout" for v in records.units.values())
    return SampleResult(
        compiles=load_ok and not removed,
        syntax_ok=True,
        load_ok=load_ok,
        asserts_passed=sum(passed),
        asserts_total=task["asserts_total"],
        full_pass=raw_full_pass and load_ok and not removed and not tampering,
        raw_full_pass=raw_full_pass,
        error_type=error_type,
        error_message=message[:500],
        failed_stage=stage,
        unit_passed="".join("1" if ok else "0" for ok in passed),
        new_api_calls=sum(records.counts.values()),
        new_api_calls_by_api=counts_json(records.counts),
        old_api_refs=old_refs,
        new_api_refs=new_refs,
        timed_out=ending.killed_at_deadline or ending.exit_code == -signal.SIGXCPU or unit_timeouts,
        seconds=0.0,
        tamper_suspect=bool(tampering),
        isolation_layers=isolation_layers,
    )
