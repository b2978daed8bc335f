"""Validation of sandbox requests, done for the whole batch before any sample runs.

Turns each request dict into the plain, picklable task dict the workers run: test units are parsed
once (constant asserts such as `assert True` are dropped: not run, not counted), mapping records
are normalised to plain Python values (rows read from parquet carry numpy/pyarrow scalars and
arrays) and validated once per distinct mapping list with `apis.mapping.parse_mappings`.
"""

from __future__ import annotations

import ast
import json
import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

WORLDS = ("edited", "pristine")
DEFAULT_MEMORY_LIMIT_MB = 1024
# Beyond this a deadline is a mistake (and overflows the worker's poll in milliseconds).
MAX_TIMEOUT_S = 600.0


class SandboxRequestError(ValueError):
    """A request is malformed; the message names the request index, the field and the fix."""


def _fail(index: int, field: str, problem: str) -> SandboxRequestError:
    return SandboxRequestError(f"sandbox request {index}, field {field!r}: {problem}")


def _plain(value: Any) -> Any:
    """numpy / pyarrow scalars and arrays -> plain Python values."""
    if hasattr(value, "as_py"):
        return value.as_py()
    if hasattr(value, "tolist") and not isinstance(value, str | bytes):
        return value.tolist()
    return value


def _as_list(index: int, field: str, value: Any) -> list[Any]:
    value = _plain(value)
    if isinstance(value, list | tuple):
        return list(value)
    raise _fail(index, field, f"expected a list, got {type(value).__name__}")


def _positive_seconds(index: int, field: str, value: Any) -> float:
    value = _plain(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _fail(index, field, f"expected a number of seconds, got {value!r}")
    seconds = float(value)
    if not math.isfinite(seconds) or seconds <= 0:
        raise _fail(index, field, f"expected a finite number of seconds > 0, got {value!r}")
    if seconds > MAX_TIMEOUT_S:
        raise _fail(
            index,
            field,
            f"{value!r} s is over the sandbox's cap of {MAX_TIMEOUT_S:g} s per sample; "
            "use a shorter deadline",
        )
    return seconds


def is_constant_assert(tree: ast.Module) -> bool:
    """`assert True`, `assert 1`, `assert "x"`: checks nothing, so it is neither run nor counted."""
    return (
        len(tree.body) == 1
        and isinstance(tree.body[0], ast.Assert)
        and isinstance(tree.body[0].test, ast.Constant)
        and bool(tree.body[0].test.value)
    )


class _UnitCache:
    """Parses each distinct unit source once per batch (tests repeat across samples)."""

    def __init__(self) -> None:
        self._constant: dict[str, bool] = {}
        self._setups: set[str] = set()

    def check_setup(self, index: int, setup: str) -> None:
        if setup in self._setups:
            return
        try:
            compile(setup, "<setup>", "exec")
        except (SyntaxError, ValueError) as exc:
            raise _fail(index, "setup", f"setup code does not compile ({exc})") from exc
        self._setups.add(setup)

    def is_constant(self, index: int, position: int, source: Any) -> bool:
        field = f"tests[{position}]"
        if not isinstance(source, str):
            raise _fail(index, field, f"expected a str assert unit, got {type(source).__name__}")
        if source not in self._constant:
            try:
                compile(source, "<test>", "exec")  # stricter than ast.parse (e.g. bare return)
                tree = ast.parse(source)
            except (SyntaxError, ValueError) as exc:
                raise _fail(
                    index, field, f"test unit does not compile ({exc}): {source!r}"
                ) from exc
            self._constant[source] = is_constant_assert(tree)
        return self._constant[source]


class _MappingCache:
    """Normalises and validates each distinct mapping list once per batch."""

    def __init__(self) -> None:
        self._checked: set[str] = set()

    def prepare(self, index: int, raw: Any) -> tuple[list[dict[str, Any]], str]:
        records = []
        for position, record in enumerate(_as_list(index, "mappings", raw)):
            if not isinstance(record, Mapping):
                raise _fail(index, f"mappings[{position}]", "expected a mapping record (dict)")
            records.append({str(key): _plain(value) for key, value in record.items()})
        key = json.dumps(records, sort_keys=True, default=str)
        if records and key not in self._checked:
            self._validate(index, records)
            self._checked.add(key)
        return records, key

    @staticmethod
    def _validate(index: int, records: list[dict[str, Any]]) -> None:
        try:
            from apiedit_kedro.apis.mapping import parse_mappings
        except ImportError as exc:
            raise _fail(
                index, "mappings", f"apiedit_kedro.apis.mapping is unavailable ({exc})"
            ) from exc
        try:
            parse_mappings(records)
        except ValueError as exc:
            raise _fail(index, "mappings", str(exc)) from exc


def prepare_tasks(requests: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Validate every request and build the worker task dicts; raises SandboxRequestError."""
    units_cache, mapping_cache = _UnitCache(), _MappingCache()
    return [
        _prepare_one(index, request, units_cache, mapping_cache)
        for index, request in enumerate(requests)
    ]


def _prepare_one(
    index: int, request: Any, units_cache: _UnitCache, mapping_cache: _MappingCache
) -> dict[str, Any]:
    if not isinstance(request, Mapping):
        raise SandboxRequestError(
            f"sandbox request {index}: expected a dict with code, tests, setup, world, "
            f"mappings, timeout_s; got {type(request).__name__}"
        )
    for required in ("code", "tests", "world", "timeout_s"):
        if required not in request:
            raise _fail(index, required, "missing (required: code, tests, world, timeout_s)")
    code = request["code"]
    if not isinstance(code, str):
        raise _fail(index, "code", f"expected the program as a str, got {type(code).__name__}")
    setup = request.get("setup") or ""
    if not isinstance(setup, str):
        raise _fail(index, "setup", f"expected a str (may be empty), got {type(setup).__name__}")
    units_cache.check_setup(index, setup)
    world = request["world"]
    if world not in WORLDS:
        raise _fail(index, "world", f"expected one of {WORLDS}, got {world!r}")
    tests = _as_list(index, "tests", request["tests"])
    units = [
        (position, source)
        for position, source in enumerate(tests)
        if not units_cache.is_constant(index, position, source)
    ]
    timeout_s = _positive_seconds(index, "timeout_s", request["timeout_s"])
    unit_timeout_s = timeout_s
    if request.get("unit_timeout_s") is not None:
        unit_timeout_s = _positive_seconds(index, "unit_timeout_s", request["unit_timeout_s"])
    memory_mb = _plain(request.get("memory_limit_mb", DEFAULT_MEMORY_LIMIT_MB))
    if isinstance(memory_mb, bool) or not isinstance(memory_mb, numbers.Integral) or memory_mb < 64:
        raise _fail(index, "memory_limit_mb", f"expected an int >= 64, got {memory_mb!r}")
    prompt_chars = _plain(request.get("prompt_chars", 0))
    if (
        isinstance(prompt_chars, bool)
        or not isinstance(prompt_chars, numbers.Integral)
        or not 0 <= prompt_chars <= len(code)
    ):
        raise _fail(
            index,
            "prompt_chars",
            f"expected the length of the benchmark-written prefix of code (0..{len(code)}), "
            f"got {prompt_chars!r}",
        )
    raw_mappings = request.get("mappings")
    mappings, mapping_key = mapping_cache.prepare(
        index, [] if raw_mappings is None else raw_mappings
    )
    return {
        "code": code,
        "setup": setup,
        "units": units,
        "asserts_total": len(units),
        "world": world,
        "mappings": mappings,
        "mapping_key": mapping_key,
        "prompt_chars": int(prompt_chars),
        "timeout_s": timeout_s,
        "unit_timeout_s": unit_timeout_s,
        "memory_limit_bytes": int(memory_mb) * 1024 * 1024,
    }
