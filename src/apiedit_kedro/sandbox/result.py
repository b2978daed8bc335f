"""The one result schema of a sandboxed sample: written once, used by the worker, pool and study."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

__all__ = ["SampleResult", "result_fields"]

ERROR_MESSAGE_LIMIT = 500


@dataclass(frozen=True)
class SampleResult:
    """What one sample did in one world (see the package docstring for each field's meaning)."""

    compiles: bool
    syntax_ok: bool
    load_ok: bool
    asserts_passed: int
    asserts_total: int
    full_pass: bool
    raw_full_pass: bool
    error_type: str
    error_message: str
    failed_stage: str
    unit_passed: str
    new_api_calls: int
    new_api_calls_by_api: str
    old_api_refs: int
    new_api_refs: int
    timed_out: bool
    tamper_suspect: bool
    seconds: float

    @classmethod
    def never_ran(
        cls, error_type: str, message: str, *, asserts_total: int, stage: str
    ) -> SampleResult:
        """A sample that never ran: it failed to compile or scan, or the sandbox failed."""
        return cls(
            compiles=False,
            syntax_ok=error_type != "syntax_error",
            load_ok=False,
            asserts_passed=0,
            asserts_total=asserts_total,
            full_pass=False,
            raw_full_pass=False,
            error_type=error_type,
            error_message=message[:ERROR_MESSAGE_LIMIT],
            failed_stage=stage,
            unit_passed="0" * asserts_total,
            new_api_calls=0,
            new_api_calls_by_api="{}",
            old_api_refs=0,
            new_api_refs=0,
            timed_out=False,
            tamper_suspect=False,
            seconds=0.0,
        )

    def to_record(self) -> dict[str, Any]:
        """The plain dict that crosses the pool's pipe and is stored in the executions cache."""
        return asdict(self)


def result_fields() -> tuple[str, ...]:
    """Every key of a result record, in schema order."""
    return tuple(field.name for field in fields(SampleResult))
