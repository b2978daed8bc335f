"""The sandbox's wire protocols and result schema, without processes: round trips and the checks
that make forged or stale records count for nothing."""

from __future__ import annotations

import dataclasses

import pytest

from apiedit_kedro.sandbox import protocol
from apiedit_kedro.sandbox.protocol import (
    RESULT_FIELDS,
    ProtocolError,
    SampleResult,
    encode_compiled,
    encode_counts,
    encode_line,
    encode_scan,
    encode_stage,
    escape,
    parse_records,
)

NONCE = "f" * 32


def stream(*bodies: str, nonce: str = NONCE) -> bytes:
    return b"".join(encode_line(nonce, body) for body in bodies)


HONEST = (
    encode_compiled(True),
    encode_scan(2, 1, ["uses __globals__"], ""),
    encode_stage("L", True, "", "", ""),
    encode_counts({"heapq.heappush": 3}),
    encode_stage("P", True, "", "", ""),
    encode_stage("U\t0", True, "", "", ""),
    "G\topen",
    encode_stage("U\t2", False, "exception", "AssertionError", escape("line\twith\ttabs\nand\\")),
    "D",
)


def test_an_honest_stream_round_trips():
    records = parse_records(stream(*HONEST), NONCE, [0, 2], has_setup=True)
    assert records.violations == []
    assert records.compiled.ok
    assert (records.scan.old_refs, records.scan.new_refs, records.scan.tamper) == (
        2,
        1,
        ("uses __globals__",),
    )
    assert records.load.ok and records.setup.ok and records.done
    assert records.units[0].ok
    failed = records.units[2]
    assert (failed.ok, failed.category, failed.exc_type) == (False, "exception", "AssertionError")
    assert failed.message == "line\twith\ttabs\nand\\"
    assert records.counts == {"heapq.heappush": 3}
    assert records.guard == ["open"]


def test_lines_without_the_nonce_are_ignored():
    forged = stream(encode_stage("U\t0", True, "", "", ""), "D", nonce="0" * 32)
    records = parse_records(forged + b"D\nU\t0\tok\n", NONCE, [0], has_setup=False)
    assert records.units == {} and not records.done and records.violations == []


@pytest.mark.parametrize(
    ("bodies", "units"),
    [
        ((*HONEST[:6], encode_stage("U\t0", True, "", "", "")), [0, 2]),  # a repeated unit
        ((*HONEST[:5], encode_stage("U\t2", True, "", "", "")), [0, 2]),  # out of order
        ((*HONEST[:5], encode_stage("U\t7", True, "", "", "")), [0, 2]),  # not a unit of the task
        ((*HONEST[:6], "D"), [0, 2]),  # the end before every unit reported
        ((*HONEST, "D"), [0, 2]),  # anything after the end
        ((HONEST[0], HONEST[2]), [0, 2]),  # a load record without the scan record
        ((*HONEST[:3], HONEST[2]), [0, 2]),  # a second load record
        ((*HONEST[:3], encode_stage("U\t0", True, "", "", "")), [0, 2]),  # skipping setup
        ((*HONEST[:5], "U\t0\tok\tnot-a-category\t\t"), [0, 2]),
    ],
    ids=[
        "repeated_unit",
        "out_of_order",
        "unknown_unit",
        "early_end",
        "after_end",
        "load_before_scan",
        "second_load",
        "setup_skipped",
        "malformed",
    ],
)
def test_structure_violations_are_reported(bodies: tuple[str, ...], units: list[int]):
    records = parse_records(stream(*bodies), NONCE, units, has_setup=True)
    assert records.violations


def test_sample_result_is_the_one_schema():
    assert tuple(f.name for f in dataclasses.fields(SampleResult)) == RESULT_FIELDS
    result = SampleResult.failure(3, "sandbox_error", "x" * 900, stage="sandbox")
    record = result.to_record()
    assert tuple(record) == RESULT_FIELDS
    assert record["unit_passed"] == "000" and len(record["error_message"]) == 500
    assert {"tamper_suspect", "isolation_layers"} <= set(record)
    assert "sandbox_error" in protocol.TRANSIENT_ERROR_TYPES


def test_pool_messages_round_trip_and_reject_strangers():
    task = {"code": "x = 1"}
    assert protocol.parse_task(protocol.task_message(7, 3, task)) == (7, 3, task)
    record = {"full_pass": True}
    assert protocol.parse_reply(protocol.result_message(7, 3, record)) == (
        protocol.RESULT,
        7,
        3,
        record,
    )
    report = {"layers": ["guard"], "unavailable": {}}
    assert protocol.parse_reply(protocol.ready_message(11, report)) == (
        protocol.READY,
        11,
        report,
        None,
    )
    for stranger in [(3, record), ("result", 7, record), None, ("task", 1, 2, "not a dict")]:
        with pytest.raises(ProtocolError):
            protocol.parse_reply(stranger)
        with pytest.raises(ProtocolError):
            protocol.parse_task(stranger)
