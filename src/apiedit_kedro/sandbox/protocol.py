"""The line protocol between a sample's child and its worker, both directions in one place.

The child writes one line per event into a pipe, each prefixed with the sample's random nonce,
tab-separated, with tabs, newlines and backslashes in text escaped:

    <nonce> L ok|fail <exc_type> <message>     top-level exec of the program (load stage)
    <nonce> P ok|fail <exc_type> <message>     setup code
    <nonce> U <i> ok|fail <exc_type> <message> test unit i (one line per unit, as soon as it ends)
    <nonce> G <name>                           a guarded call was attempted (guard violation)
    <nonce> C <api>=<n>,...                    new-API call counts so far (edited world)
    <nonce> D                                  all stages ran to the end

The worker parses what it captured and checks the structure: at most one load line, one setup
line and one line per planned unit, no unit that was not planned. A capture that breaks those
rules was written by something other than the harness (a program that found the pipe), so it is
reported as `malformed` and the sample cannot pass.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

__all__ = [
    "DONE",
    "Records",
    "counts_line",
    "escape",
    "frame",
    "guard_line",
    "parse_records",
    "stage_line",
]

MESSAGE_LIMIT = 500
DONE = "D"


def escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")[:MESSAGE_LIMIT]


def _unescape(text: str) -> str:
    out, chars = [], iter(text)
    for char in chars:
        if char != "\\":
            out.append(char)
            continue
        following = next(chars, "")
        out.append({"n": "\n", "t": "\t", "\\": "\\"}.get(following, "\\" + following))
    return "".join(out)


def frame(nonce: str, line: str) -> bytes:
    return f"{nonce}\t{line}\n".encode("utf-8", "replace")


def stage_line(tag: str, ok: bool, exc_name: str = "", message: str = "") -> str:
    """`tag` is "L", "P" or "U\\t<index>"; exc_name and message are already escaped."""
    return f"{tag}\tok\t\t" if ok else f"{tag}\tfail\t{exc_name}\t{message}"


def guard_line(name: str) -> str:
    return f"G\t{escape(name)}"


def counts_line(counts: Mapping[str, int]) -> str:
    return "C\t" + ",".join(f"{api}={n}" for api, n in counts.items())


@dataclass
class Records:
    """What the child reported through its pipe."""

    load: tuple[bool, str, str] | None = None
    setup: tuple[bool, str, str] | None = None
    units: dict[int, tuple[bool, str, str]] = field(default_factory=dict)
    guard: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    done: bool = False
    malformed: list[str] = field(default_factory=list)


def _parse_counts(text: str) -> dict[str, int]:
    counts = {}
    for item in filter(None, text.split(",")):
        api, _, number = item.rpartition("=")
        if number.isdigit():
            counts[api] = int(number)
    return counts


def parse_records(data: bytes, nonce: str, planned_units: Collection[int]) -> Records:
    """The records in `data` that carry `nonce`, with every structural violation noted."""
    records = Records()
    for raw in data.decode("utf-8", "replace").split("\n"):
        fields = raw.split("\t")
        if len(fields) < 2 or fields[0] != nonce:
            continue
        kind, rest = fields[1], fields[2:]
        if kind in ("L", "P") and len(rest) == 3:
            verdict = (rest[0] == "ok", rest[1], _unescape(rest[2]))
            slot = "load" if kind == "L" else "setup"
            if getattr(records, slot) is not None:
                records.malformed.append(f"a second {slot} verdict")
            setattr(records, slot, verdict)
        elif kind == "U" and len(rest) == 4 and rest[0].isdigit():
            index = int(rest[0])
            if index not in planned_units:
                records.malformed.append(f"a verdict for unit {index}, which was never planned")
            elif index in records.units:
                records.malformed.append(f"a second verdict for unit {index}")
            records.units[index] = (rest[1] == "ok", rest[2], _unescape(rest[3]))
        elif kind == "G" and rest:
            records.guard.append(_unescape(rest[0]))
        elif kind == "C" and rest:
            records.counts = _parse_counts(rest[0])
        elif kind == DONE:
            records.done = True
        else:
            records.malformed.append(f"an unknown record {kind!r}")
    return records
