"""The sandbox's one result schema and its two wire protocols.

- `SampleResult`: the verdict of one request, the only place its fields are listed; `to_record()`
  gives the plain dict that `execute` returns and the study stores.
- The child -> worker line protocol: one line per event on a pipe, each line prefixed with a
  per-sample random nonce (so printed text cannot pass for a record), tab-separated, tabs,
  newlines and backslashes in text escaped::

      <nonce> S ok|fail <exc_type> <message>                 compiling the program
      <nonce> R <old> <new> <findings> <failure>             the static scan (old/new API refs,
                                                             tampering found, why it stopped)
      <nonce> L ok|fail <category> <exc_type> <message>      the program's top level (load)
      <nonce> P ok|fail <category> <exc_type> <message>      setup code
      <nonce> U <i> ok|fail <category> <exc_type> <message>  test unit i, as soon as it ends
      <nonce> G <name>                                       a guarded call was attempted
      <nonce> C <api>=<n>,...                                new-API call counts so far
      <nonce> D                                              every stage ran to the end

  `category` is decided in the child by the identity of the exception's class, never by its name
  (a program can name its own class `UnitTimeout`): one of `CATEGORIES`.
  `parse_records` checks the structure against what the worker sent: one compile record first,
  then one scan record, exactly one load record, a setup record only when there is setup code, one record per expected unit id in plan
  order, `D` last. Any deviation is a protocol violation: the sample is counted as tampered with.
- The pool <-> worker messages: every task and every reply carries the pool's per-call batch id
  and the sample's index, so a reply left in a pipe by an interrupted call can never be taken for
  a verdict of the current one; a worker announces itself with a ready message once it is set up.

Hand-written: the protocol is this package's own.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

MESSAGE_LIMIT = 500

# Errors that say nothing about the program: a re-run must retry the sample, never cache them.
TRANSIENT_ERROR_TYPES = frozenset({"sandbox_error"})

CATEGORY_EXCEPTION = "exception"
CATEGORY_TIMEOUT = "timeout"
CATEGORY_MEMORY = "memory"
CATEGORY_EXIT = "exit"
CATEGORY_GUARD = "guard"
CATEGORIES = frozenset(
    {CATEGORY_EXCEPTION, CATEGORY_TIMEOUT, CATEGORY_MEMORY, CATEGORY_EXIT, CATEGORY_GUARD}
)
ERROR_TYPE_OF_CATEGORY = {
    CATEGORY_TIMEOUT: "timeout",
    CATEGORY_MEMORY: "memory_limit",
    CATEGORY_EXIT: "early_exit",
    CATEGORY_GUARD: "guard_violation",
}


@dataclass
class SampleResult:
    """The verdict on one sandbox request (the package docstring documents every field)."""

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
    seconds: float
    tamper_suspect: bool
    isolation_layers: str

    def to_record(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in RESULT_FIELDS}

    @classmethod
    def failure(
        cls,
        asserts_total: int,
        error_type: str,
        message: str,
        *,
        stage: str,
        syntax_ok: bool = True,
        timed_out: bool = False,
        tamper_suspect: bool = False,
        old_api_refs: int = 0,
        new_api_refs: int = 0,
        isolation_layers: str = "",
    ) -> SampleResult:
        """A sample that never ran its program (syntax error, scan limit, sandbox failure)."""
        return cls(
            compiles=False,
            syntax_ok=syntax_ok,
            load_ok=False,
            asserts_passed=0,
            asserts_total=asserts_total,
            full_pass=False,
            raw_full_pass=False,
            error_type=error_type,
            error_message=message[:MESSAGE_LIMIT],
            failed_stage=stage,
            unit_passed="0" * asserts_total,
            new_api_calls=0,
            new_api_calls_by_api="{}",
            old_api_refs=old_api_refs,
            new_api_refs=new_api_refs,
            timed_out=timed_out,
            seconds=0.0,
            tamper_suspect=tamper_suspect,
            isolation_layers=isolation_layers,
        )


RESULT_FIELDS = tuple(item.name for item in fields(SampleResult))


def sandbox_error(task: dict[str, Any], message: str) -> dict[str, Any]:
    """The record for a sample the sandbox lost (worker death, internal error)."""
    return SampleResult.failure(
        task.get("asserts_total", 0), "sandbox_error", message, stage="sandbox"
    ).to_record()


# ------------------------------------------------------------------ child -> worker records


def escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")[:MESSAGE_LIMIT]


def _unescape(text: str) -> str:
    out: list[str] = []
    characters = iter(text)
    for character in characters:
        if character != "\\":
            out.append(character)
            continue
        following = next(characters, "")
        out.append({"n": "\n", "t": "\t"}.get(following, following))
    return "".join(out)


def encode_stage(tag: str, ok: bool, category: str, exc_type: str, message: str) -> str:
    """The body of an L/P/U record (tag "L", "P" or "U\\t<i>"), text already escaped."""
    return f"{tag}\t{'ok' if ok else 'fail'}\t{category}\t{exc_type}\t{message}"


def encode_counts(counts: dict[str, int]) -> str:
    return "C\t" + ",".join(f"{api}={number}" for api, number in counts.items())


def encode_line(nonce: str, body: str) -> bytes:
    return f"{nonce}\t{body}\n".encode("utf-8", "replace")


@dataclass(frozen=True)
class StageVerdict:
    ok: bool
    category: str  # "" when ok, else one of CATEGORIES
    exc_type: str
    message: str


@dataclass(frozen=True)
class ScanRecord:
    old_refs: int
    new_refs: int
    tamper: tuple[str, ...]  # the introspection found in the program, one finding each
    failure: str  # why the scan could not finish; "" when it did


def encode_compiled(ok: bool, exc_type: str = "", message: str = "") -> str:
    return f"S\t{'ok' if ok else 'fail'}\t{exc_type}\t{message}"


def encode_scan(old_refs: int, new_refs: int, tamper: Sequence[str], failure: str) -> str:
    findings = ",".join(escape(item).replace(",", ";") for item in tamper)
    return f"R\t{old_refs}\t{new_refs}\t{findings}\t{escape(failure)}"


@dataclass
class ChildRecords:
    """What the child reported, with every structural problem found in it."""

    compiled: StageVerdict | None = None
    scan: ScanRecord | None = None
    load: StageVerdict | None = None
    setup: StageVerdict | None = None
    units: dict[int, StageVerdict] = field(default_factory=dict)
    guard: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    done: bool = False
    violations: list[str] = field(default_factory=list)


def _stage_verdict(fields_: list[str]) -> StageVerdict | None:
    if len(fields_) != 4 or fields_[0] not in ("ok", "fail"):
        return None
    ok = fields_[0] == "ok"
    category = fields_[1]
    if (ok and category) or (not ok and category not in CATEGORIES):
        return None
    return StageVerdict(ok, category, _unescape(fields_[2]), _unescape(fields_[3]))


class _RecordChecker:
    """Accepts records in the only order an honest child writes them."""

    def __init__(self, unit_ids: Sequence[int], has_setup: bool) -> None:
        self.records = ChildRecords()
        self._expected_units = list(unit_ids)
        self._has_setup = has_setup

    def _violation(self, text: str) -> None:
        if len(self.records.violations) < 5:
            self.records.violations.append(text)

    def _stages_open(self) -> bool:
        """True while the child may still send stage records (load ok, setup ok if any)."""
        records = self.records
        if records.done:
            return False
        if records.load is None or not records.load.ok:
            return False
        return not self._has_setup or (records.setup is not None and records.setup.ok)

    def accept(self, kind: str, rest: list[str]) -> None:
        records = self.records
        if records.done:
            self._violation(f"record {kind!r} after the end record")
        elif kind == "S":
            self._accept_compiled(rest)
        elif kind == "R":
            self._accept_scan(rest)
        elif kind == "L":
            verdict = _stage_verdict(rest)
            if verdict is None or records.load is not None or records.scan is None:
                self._violation("a malformed, repeated or early load record")
            else:
                records.load = verdict
        elif kind == "P":
            self._accept_setup(rest)
        elif kind == "U":
            self._accept_unit(rest)
        elif kind == "G" and len(rest) == 1:
            records.guard.append(_unescape(rest[0]))
        elif kind == "C" and len(rest) == 1:
            records.counts = _parse_counts(rest[0])
        elif kind == "D" and not rest:
            self._accept_done()
        else:
            self._violation(f"an unknown or malformed record {kind!r}")

    def _accept_compiled(self, rest: list[str]) -> None:
        if len(rest) != 3 or rest[0] not in ("ok", "fail") or self.records.compiled is not None:
            self._violation("a malformed or repeated compile record")
            return
        self.records.compiled = StageVerdict(rest[0] == "ok", "", rest[1], _unescape(rest[2]))

    def _accept_scan(self, rest: list[str]) -> None:
        records = self.records
        compiled = records.compiled is not None and records.compiled.ok
        if (
            len(rest) != 4
            or not (rest[0].isdigit() and rest[1].isdigit())
            or records.scan is not None
            or not compiled
        ):
            self._violation("a malformed, repeated or early scan record")
            return
        findings = tuple(_unescape(item) for item in rest[2].split(",") if item)
        records.scan = ScanRecord(int(rest[0]), int(rest[1]), findings, _unescape(rest[3]))

    def _accept_setup(self, rest: list[str]) -> None:
        records = self.records
        verdict = _stage_verdict(rest)
        load_ok = records.load is not None and records.load.ok
        if verdict is None or not self._has_setup or records.setup is not None or not load_ok:
            self._violation("an unexpected setup record")
        else:
            records.setup = verdict

    def _accept_unit(self, rest: list[str]) -> None:
        verdict = _stage_verdict(rest[1:]) if rest else None
        expected = self._expected_units[0] if self._expected_units else None
        if verdict is None or not self._stages_open() or rest[0] != str(expected):
            self._violation(f"an unexpected unit record (expected unit {expected})")
            return
        self._expected_units.pop(0)
        self.records.units[int(rest[0])] = verdict

    def _accept_done(self) -> None:
        records = self.records
        compile_failed = records.compiled is not None and not records.compiled.ok
        scan_failed = records.scan is not None and bool(records.scan.failure)
        finished = (
            compile_failed
            or scan_failed
            or (
                records.load is not None
                and (
                    not records.load.ok
                    or (self._has_setup and records.setup is not None and not records.setup.ok)
                    or not self._expected_units
                )
            )
        )
        if not finished:
            self._violation("an end record before every stage reported")
        records.done = True


def parse_records(
    data: bytes, nonce: str, unit_ids: Sequence[int], *, has_setup: bool
) -> ChildRecords:
    """Parse the child's pipe output; lines without the nonce are ignored, others checked."""
    checker = _RecordChecker(unit_ids, has_setup)
    for raw in data.decode("utf-8", "replace").split("\n"):
        fields_ = raw.split("\t")
        if len(fields_) < 2 or fields_[0] != nonce:
            continue
        checker.accept(fields_[1], fields_[2:])
    return checker.records


def _parse_counts(text: str) -> dict[str, int]:
    counts = {}
    for item in filter(None, text.split(",")):
        api, _, number = item.rpartition("=")
        if number.isdigit():
            counts[api] = int(number)
    return counts


def counts_json(counts: dict[str, int]) -> str:
    return json.dumps(counts, sort_keys=True)


# -------------------------------------------------------------- pool <-> worker messages

READY = "ready"
RESULT = "result"
TASK = "task"


class ProtocolError(RuntimeError):
    """A worker sent something that is not a message of this protocol."""


def task_message(batch_id: int, index: int, task: dict[str, Any]) -> tuple[Any, ...]:
    return (TASK, batch_id, index, task)


def result_message(batch_id: int, index: int, record: dict[str, Any]) -> tuple[Any, ...]:
    return (RESULT, batch_id, index, record)


def ready_message(pid: int, isolation_report: dict[str, Any]) -> tuple[Any, ...]:
    return (READY, pid, isolation_report)


def parse_task(message: Any) -> tuple[int, int, dict[str, Any]]:
    if (
        not isinstance(message, tuple)
        or len(message) != 4
        or message[0] != TASK
        or not isinstance(message[3], dict)
    ):
        raise ProtocolError(f"not a task message: {type(message).__name__}")
    return message[1], message[2], message[3]


def parse_reply(message: Any) -> tuple[str, Any, Any, Any]:
    """(kind, a, b, c): (READY, pid, isolation report, None) or (RESULT, batch, index, record)."""
    if isinstance(message, tuple) and len(message) == 3 and message[0] == READY:
        return READY, message[1], message[2], None
    if (
        isinstance(message, tuple)
        and len(message) == 4
        and message[0] == RESULT
        and isinstance(message[3], dict)
    ):
        return RESULT, message[1], message[2], message[3]
    raise ProtocolError(f"not a worker reply: {type(message).__name__}")
