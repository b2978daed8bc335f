"""Static references to qualified APIs in Python source, without running it.

`resolve_references(source)` turns every use of an imported or builtin name into a dotted
qualified name: `import os.path as osp; osp.join(a, b)` gives `os.path.join`, `from math
import *; comb(5, 2)` gives `math.comb` (star imports resolve against the real module's public
names), `sorted(x)` gives `builtins.sorted`. Names are resolved by `apis.scopes.analyse_scopes`
(Python's scoping rules, flow-insensitive: a name bound both by an import and by something else
in the same scope is left unresolved, while the import statement itself is still reported).

`find_api_references(source, mappings)` counts, per api_id, references to the removed old API
(under any module alias or twin, e.g. `posixpath.join` for `os.path.join`) and to the new one.

Hand-written: linters (pyflakes) report unused or undefined names, not qualified references;
this module only decides which resolved names count as references (loads, calls, imports; not
annotations) and in which order they are reported.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from apiedit_kedro.apis.mapping import ApiMapping, parse_mappings
from apiedit_kedro.apis.scopes import ScopeAnalysis, analyse_scopes
from apiedit_kedro.apis.world import api_locations


@dataclass(frozen=True, slots=True)
class QualifiedReference:
    """One use of a qualified name: `qualname` at `lineno`, and whether it is being called."""

    qualname: str
    lineno: int
    is_call: bool


@dataclass(frozen=True)
class ApiReferences:
    """Per api_id, how many references the source makes to the old and to the new API."""

    old: dict[str, int]
    new: dict[str, int]


def resolve_references(source: str | ast.Module) -> list[QualifiedReference]:
    """Every resolvable reference in the source (or its parsed tree), in source order.

    SyntaxError if the source is unparsable. Names used only in annotations are not references
    (see `_Resolver.visit_FunctionDef`).
    """
    tree = ast.parse(source) if isinstance(source, str) else source
    resolver = _Resolver(analyse_scopes(tree))
    resolver.visit(tree)
    return [ref for _, _, ref in sorted(resolver.found, key=lambda item: (item[0], item[1]))]


def find_api_references(
    source: str, mappings: Iterable[Mapping[str, Any] | ApiMapping]
) -> ApiReferences:
    """Count references to each mapping's old API and new API in the source."""
    return count_api_references(resolve_references(source), parse_mappings(mappings))


def count_api_references(
    references: Sequence[QualifiedReference], mappings: Sequence[ApiMapping]
) -> ApiReferences:
    """Per api_id, how many of `references` name its old API and how many its new one."""
    old: dict[str, int] = {}
    new: dict[str, int] = {}
    for mapping in mappings:
        locations = api_locations(mapping)
        old[mapping.api_id] = sum(_matches(ref.qualname, locations.old) for ref in references)
        new[mapping.api_id] = sum(_matches(ref.qualname, locations.new) for ref in references)
    return ApiReferences(old=old, new=new)


def _matches(qualname: str, targets: tuple[str, ...]) -> bool:
    return any(qualname == target or qualname.startswith(target + ".") for target in targets)


class _Resolver(ast.NodeVisitor):
    """Qualify every loaded name and attribute chain, outside annotations."""

    def __init__(self, scopes: ScopeAnalysis) -> None:
        self.scopes = scopes
        self.found: list[tuple[int, int, QualifiedReference]] = []

    def _add(self, node: ast.AST, qualname: str, *, is_call: bool) -> None:
        lineno, col = getattr(node, "lineno", 0), getattr(node, "col_offset", 0)
        self.found.append((lineno, col, QualifiedReference(qualname, lineno, is_call)))

    # Annotations are never visited: programs run with PEP 563 semantics (the sandbox compiles
    # them with the `annotations` future flag on purpose), so an annotation is never evaluated
    # and naming a removed API in one is not a use of it.
    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        for child in [*node.decorator_list, node.args, *node.body]:
            self.visit(child)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_arguments(self, node: ast.arguments) -> None:
        for default in [*node.defaults, *(d for d in node.kw_defaults if d is not None)]:
            self.visit(default)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self.visit(node.target)
        if node.value is not None:
            self.visit(node.value)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(node, alias.name, is_call=False)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            return
        for alias in node.names:
            if alias.name != "*":
                self._add(node, f"{node.module}.{alias.name}", is_call=False)

    def visit_Call(self, node: ast.Call) -> None:
        if not self._reference(node.func, is_call=True):
            self.visit(node.func)
        for argument in [*node.args, *node.keywords]:
            self.visit(argument)

    def visit_Name(self, node: ast.Name) -> None:
        self._reference(node, is_call=False)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if not self._reference(node, is_call=False):
            self.visit(node.value)

    def _reference(self, node: ast.expr, *, is_call: bool) -> bool:
        """Record the longest qualified chain at `node`; False if `node` is not a loaded one."""
        if not _is_loaded_chain(node):
            return False
        qualname = self.scopes.qualname_of(node)
        if qualname is not None:
            self._add(node, qualname, is_call=is_call)
        return True


def _is_loaded_chain(node: ast.expr) -> bool:
    """`name.attr...` with every part loaded (a stored attribute is not a reference)."""
    while isinstance(node, ast.Attribute):
        if not isinstance(node.ctx, ast.Load):
            return False
        node = node.value
    return isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)
