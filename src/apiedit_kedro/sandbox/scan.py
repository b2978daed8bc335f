"""Compiling a program and scanning it statically, in the sample's child before anything runs.

Both run in the forked child, under the sample's wall-clock deadline and hard kill (compiling a
4 MB function took minutes of uninterruptible C code here), with the recursion limit raised for
the scan so a long expression (a 500-term sum) is scanned instead of failing.

Annotation semantics, chosen on purpose: programs are compiled with PEP 563 semantics (the
`annotations` future flag, passed explicitly and never inherited from this module), so
annotations are never evaluated, and the scan (through `apis.references`, whose resolver skips
annotations) does not count a name used only in annotations as a use of an API. A HumanEval prompt annotated `-> int` stays runnable and unscored when
`builtins.int` is removed.

API references are scored on the part of the program the model wrote: references on lines of
the prompt prefix (`prompt_chars` of the request) are the benchmark's, not the model's. The line
on which the completion starts is scored (the model wrote part of it).

Tampering: a program whose source introspects frames, function internals, the garbage collector,
the import machinery or the interpreter through ctypes (see `INTROSPECTION_ATTRIBUTES` and
`INTROSPECTION_MODULES`) is flagged; such a sample never counts as passing, because verdicts
produced in the program's own process cannot be trusted once it does that.

Hand-written: the scan rules are the study's (no linter reports these).
"""

from __future__ import annotations
import __future__

import ast
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from apiedit_kedro.apis.mapping import ApiMapping
from apiedit_kedro.apis.references import count_api_references, resolve_references

PROGRAM_COMPILE_FLAGS = __future__.annotations.compiler_flag
_SCAN_RECURSION_LIMIT = 50_000

# Attribute (and getattr string) names that reach frames, function internals, class internals,
# the import machinery or this harness: there is no reason for a benchmark solution to use them.
INTROSPECTION_ATTRIBUTES = frozenset(
    {
        "_getframe",
        "_current_frames",
        "settrace",
        "setprofile",
        "f_back",
        "f_globals",
        "f_locals",
        "f_builtins",
        "f_code",
        "f_trace",
        "tb_frame",
        "gi_frame",
        "cr_frame",
        "ag_frame",
        "__globals__",
        "__closure__",
        "cell_contents",
        "__code__",
        "__builtins__",
        "__mro__",
        "__bases__",
        "__base__",
        "__subclasses__",
        "mro",
        "meta_path",
        "path_hooks",
        "path_importer_cache",
        "__loader__",
        "__spec__",
        "__file__",
        "exec_module",
        "module_from_spec",
        "spec_from_file_location",
        "spec_from_loader",
        "get_source",
        "get_code",
        "get_data",
        "open_code",
        "getsource",
        "getsourcelines",
        "getsourcefile",
        "spawnv_passfds",
        "fork_exec",
    }
)
# Modules that exist to reach into the interpreter (or this harness).
INTROSPECTION_MODULES = frozenset(
    {
        "gc",
        "ctypes",
        "_ctypes",
        "inspect",
        "_posixsubprocess",
        "runpy",
        "linecache",
        "tokenize",
        "marshal",
        "_imp",
        "_frozen_importlib",
        "_frozen_importlib_external",
        "importlib._bootstrap",
        "importlib._bootstrap_external",
        "importlib.machinery",
        "_testcapi",
        "_testinternalcapi",
        "_xxsubinterpreters",
        "apiedit_kedro",
    }
)
_HARNESS_PREFIX = "_apiedit"
# Cheap first pass over the compiled code's names and string constants: most programs use none
# of these and skip the AST walk, which then decides precisely (a variable named `gc` is fine).
_TRIGGER_NAMES = frozenset(
    INTROSPECTION_ATTRIBUTES
    | INTROSPECTION_MODULES
    | {name.rpartition(".")[2] for name in INTROSPECTION_MODULES}
    | {"__builtins__"}
)
_IMPORT_CALLS = frozenset({"__import__", "import_module"})


def compile_program(code: str) -> Any:
    """The program's code object, with PEP 563 annotations set explicitly (see the module doc)."""
    return compile(code, "<solution>", "exec", flags=PROGRAM_COMPILE_FLAGS, dont_inherit=True)


@dataclass(frozen=True)
class ScanFindings:
    old_refs: int
    new_refs: int
    tamper: tuple[str, ...]
    failure: str  # "" when the scan finished


def scan_program(
    code: str, program: Any, mappings: Sequence[ApiMapping], *, prompt_chars: int = 0
) -> ScanFindings:
    """Old/new API references in the model's part of the program, and tampering anywhere.

    `program` is the compiled `code` (its names decide whether the AST walk is needed).
    """
    suspicious = _mentions_trigger(program)
    if not mappings and not suspicious:
        return ScanFindings(0, 0, (), "")  # the common case needs no parse
    previous_limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(previous_limit, _SCAN_RECURSION_LIMIT))
    try:
        tree = ast.parse(code)
        tamper = find_tampering(tree) if suspicious else ()
        old_refs = new_refs = 0
        if mappings:
            first_line = code[:prompt_chars].count("\n") + 1
            scored = [ref for ref in resolve_references(tree) if ref.lineno >= first_line]
            counted = count_api_references(scored, mappings)
            old_refs, new_refs = sum(counted.old.values()), sum(counted.new.values())
        return ScanFindings(old_refs, new_refs, tamper, "")
    except RecursionError:
        return ScanFindings(0, 0, (), "the program nests too deeply for the scan")
    except MemoryError:
        return ScanFindings(0, 0, (), "out of memory while scanning")
    finally:
        sys.setrecursionlimit(previous_limit)


def _mentions_trigger(program: Any) -> bool:
    """True if any (nested) code object names or holds as a string a trigger name."""
    stack = [program]
    while stack:
        code = stack.pop()
        if not _TRIGGER_NAMES.isdisjoint(code.co_names):
            return True
        for name in code.co_names:
            if name.startswith(_HARNESS_PREFIX):
                return True
        for constant in code.co_consts:
            if isinstance(constant, str):
                if (
                    constant in _TRIGGER_NAMES
                    or constant.startswith(_HARNESS_PREFIX)
                    or ("." in constant and _flagged_module(constant))
                ):
                    return True
            elif hasattr(constant, "co_names"):
                stack.append(constant)
    return False


def find_tampering(tree: ast.Module) -> tuple[str, ...]:
    """One finding per distinct introspection the source makes (empty for ordinary code)."""
    found: dict[str, None] = {}
    for node in ast.walk(tree):
        for finding in _node_findings(node):
            found[finding] = None
    return tuple(found)


def _flagged_module(name: str) -> bool:
    parts = name.split(".")
    return any(".".join(parts[: i + 1]) in INTROSPECTION_MODULES for i in range(len(parts)))


def _node_findings(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [f"imports {a.name}" for a in node.names if _flagged_module(a.name)]
    if isinstance(node, ast.ImportFrom):
        module = node.module or ""
        found = [f"imports {module}"] if _flagged_module(module) else []
        for alias in node.names:
            if alias.name in INTROSPECTION_ATTRIBUTES or _flagged_module(f"{module}.{alias.name}"):
                found.append(f"imports {module}.{alias.name}")
        return found
    if isinstance(node, ast.Attribute):
        return _name_findings(node.attr)
    if isinstance(node, ast.Name):
        if node.id == "__builtins__" or node.id.startswith(_HARNESS_PREFIX):
            return [f"uses {node.id}"]
        return []
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return _name_findings(node.value)
    if isinstance(node, ast.Call) and node.args:
        function = node.func
        called = function.id if isinstance(function, ast.Name) else getattr(function, "attr", "")
        first = node.args[0]
        if (
            called in _IMPORT_CALLS
            and isinstance(first, ast.Constant)
            and isinstance(first.value, str)
            and _flagged_module(first.value)
        ):
            return [f"imports {first.value}"]
    return []


def _name_findings(name: str) -> list[str]:
    if name in INTROSPECTION_ATTRIBUTES or name.startswith(_HARNESS_PREFIX):
        return [f"uses {name}"]
    return []
