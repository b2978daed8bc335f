"""The child/worker line protocol: a round trip, and the structure checks that catch forgeries."""

from __future__ import annotations

from sandbox_helpers import request, run

from apiedit_kedro.sandbox.protocol import (
    DONE,
    counts_line,
    escape,
    frame,
    guard_line,
    parse_records,
    stage_line,
)

NONCE = "n0nce"


def _capture(*lines: str, nonce: str = NONCE) -> bytes:
    return b"".join(frame(nonce, line) for line in lines)


def test_round_trip_of_every_record_kind():
    message = "line one\nline\ttwo \\ back\\nslash"
    data = _capture(
        stage_line("L", True),
        stage_line("P", False, "KeyError", escape(message)),
        stage_line("U\t0", True),
        stage_line("U\t1", False, "AssertionError", escape("x")),
        guard_line("os.remove"),
        counts_line({"my_builtin_abs": 2, "heapq.push_item_v2": 0}),
        DONE,
    )
    records = parse_records(data + b"stray output\n", NONCE, {0, 1})
    assert records.load == (True, "", "")
    assert records.setup == (False, "KeyError", message)
    assert records.units == {0: (True, "", ""), 1: (False, "AssertionError", "x")}
    assert records.guard == ["os.remove"]
    assert records.counts == {"my_builtin_abs": 2, "heapq.push_item_v2": 0}
    assert records.done and records.malformed == []


def test_lines_without_the_nonce_are_ignored():
    records = parse_records(_capture(stage_line("U\t0", True), nonce="guess"), NONCE, {0})
    assert records.units == {} and records.malformed == []


def test_structure_violations_are_reported():
    data = _capture(
        stage_line("L", True),
        stage_line("L", True),
        stage_line("U\t0", True),
        stage_line("U\t0", False, "AssertionError", ""),
        stage_line("U\t7", True),
        "X\tsomething",
    )
    malformed = parse_records(data, NONCE, {0}).malformed
    assert malformed == [
        "a second load verdict",
        "a second verdict for unit 0",
        "a verdict for unit 7, which was never planned",
        "an unknown record 'X'",
    ]


# The reply function lives in the child; gc finds it and the program writes its own "ok" lines.
FORGER = (
    "import gc\n"
    "def add_one(x):\n"
    "    return x\n"
    "for obj in gc.get_objects():\n"
    "    if callable(obj) and getattr(obj, '__name__', '') == 'send' and getattr(obj, '__closure__', None):\n"
    "        try:\n"
    "            obj('U\\t0\\tok\\t\\t')\n"
    "            obj('U\\t1\\tok\\t\\t')\n"
    "        except Exception:\n"
    "            pass\n"
)


def test_a_program_that_writes_forged_verdicts_does_not_pass():
    result = run([request(FORGER)])[0]
    assert not result["full_pass"]
    assert result["tamper_suspect"] is True
    assert result["error_type"] == "tamper_suspect", result["error_message"]
