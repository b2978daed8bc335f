"""Static references to qualified APIs in Python source, without running it.

`resolve_references(source)` turns every use of an imported or builtin name into a dotted
qualified name: `import os.path as osp; osp.join(a, b)` gives `os.path.join`, `from math
import *; comb(5, 2)` gives `math.comb` (star imports resolve against the real module's public
names), `sorted(x)` gives `builtins.sorted`. Python's scoping rules are followed (function,
lambda, comprehension and class scopes; `global`/`nonlocal`), so a parameter or local variable
that shadows an imported name is not a reference. The analysis is flow-insensitive: a name bound
both by an import and by something else in the same scope is left unresolved, while the import
statement itself is still reported.

`find_api_references(source, mappings)` counts, per api_id, references to the removed old API
(under any module alias or twin, e.g. `posixpath.join` for `os.path.join`) and to the new one.

Hand-written: `symtable` classifies names per scope but does not say what an imported name
refers to, and its tables cannot be matched reliably to AST nodes; linters (pyflakes) report
unused or undefined names, not qualified references.
"""

from __future__ import annotations

import ast
import importlib
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from apiedit_kedro.apis.mapping import ApiMapping, parse_mappings
from apiedit_kedro.apis.world import api_locations

# Importing these has visible side effects; a star import from them is left unresolved.
_NO_IMPORT_MODULES = frozenset(
    {"antigravity", "this", "turtle", "turtledemo", "tkinter", "idlelib"}
)
_MODULE_KIND, _FUNCTION_KIND, _CLASS_KIND = "module", "function", "class"
_UNRESOLVED = None


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
    (see `_ScopeWalker.visit_FunctionDef`).
    """
    tree = ast.parse(source) if isinstance(source, str) else source
    scopes = _ScopeBuilder().build(tree)
    resolver = _Resolver(scopes)
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


@lru_cache(maxsize=256)
def _public_names(module_name: str) -> tuple[str, ...]:
    """What `from module_name import *` binds, read from the real (pristine) module."""
    module = sys.modules.get(module_name)
    if module is None:
        top = module_name.partition(".")[0]
        if top not in sys.stdlib_module_names or top in _NO_IMPORT_MODULES:
            return ()
        try:
            module = importlib.import_module(module_name)
        except Exception:  # an unimportable module binds nothing we can name
            return ()
    exported = getattr(module, "__all__", None)
    if exported is None:
        exported = [name for name in vars(module) if not name.startswith("_")]
    return tuple(name for name in exported if isinstance(name, str))


# --------------------------------------------------------------------------- scope analysis


@dataclass(eq=False)
class _Scope:
    kind: str
    parent: _Scope | None
    is_comprehension: bool = False
    # name -> qualified names it is bound to by imports; None marks any other binding
    bindings: dict[str, set[str | None]] = field(default_factory=dict)
    global_names: set[str] = field(default_factory=set)
    nonlocal_names: set[str] = field(default_factory=set)

    def bind(self, name: str, target: str | None) -> None:
        self.bindings.setdefault(name, set()).add(target)


_FunctionNode = ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
_ComprehensionNode = ast.ListComp | ast.SetComp | ast.DictComp | ast.GeneratorExp


class _ScopeWalker(ast.NodeVisitor):
    """Shared traversal: which parts of a scope-creating node run in which scope."""

    def __init__(self) -> None:
        self.scope: _Scope

    def enter(self, node: ast.AST) -> _Scope:
        raise NotImplementedError

    # Annotations are never visited: programs run with PEP 563 semantics (the sandbox compiles
    # them with the `annotations` future flag on purpose), so an annotation is never evaluated
    # and naming a removed API in one is not a use of it.
    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.on_definition(node.name, node)
        for expr in [*node.decorator_list, *_defaults(node.args)]:
            self.visit(expr)
        self._in_scope(node, node.body)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self.visit(node.target)
        if node.value is not None:
            self.visit(node.value)

    def visit_Lambda(self, node: ast.Lambda) -> None:
        for expr in _defaults(node.args):
            self.visit(expr)
        self._in_scope(node, [node.body])

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.on_definition(node.name, node)
        for expr in [*node.decorator_list, *node.bases, *node.keywords]:
            self.visit(expr)
        self._in_scope(node, node.body)

    def _visit_comprehension(self, node: _ComprehensionNode) -> None:
        # The first iterable runs in the enclosing scope; the rest in the comprehension's own.
        self.visit(node.generators[0].iter)
        inner: list[ast.AST] = []
        for index, generator in enumerate(node.generators):
            inner.append(generator.target)
            if index:
                inner.append(generator.iter)
            inner.extend(generator.ifs)
        if isinstance(node, ast.DictComp):
            inner += [node.key, node.value]
        else:
            inner.append(node.elt)
        self._in_scope(node, inner)

    visit_ListComp = visit_SetComp = visit_DictComp = visit_GeneratorExp = _visit_comprehension

    def _in_scope(self, node: ast.AST, body: list[Any]) -> None:
        outer = self.scope
        self.scope = self.enter(node)
        for statement in body:
            self.visit(statement)
        self.scope = outer

    def on_definition(self, name: str, node: ast.AST) -> None:
        """A def/class statement binds its name in the current scope."""


def _defaults(arguments: ast.arguments) -> list[ast.expr]:
    return [*arguments.defaults, *(d for d in arguments.kw_defaults if d is not None)]


def _parameter_names(arguments: ast.arguments) -> list[str]:
    params = [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs]
    params += [p for p in (arguments.vararg, arguments.kwarg) if p is not None]
    return [p.arg for p in params]


class _ScopeBuilder(_ScopeWalker):
    """First pass: every scope and what each name is bound to in it."""

    def build(self, tree: ast.Module) -> dict[ast.AST, _Scope]:
        self.scopes: dict[ast.AST, _Scope] = {}
        self.scope = self.module_scope = _Scope(_MODULE_KIND, None)
        self.scopes[tree] = self.scope
        self.generic_visit(tree)
        self._hoist_declarations()
        return self.scopes

    def enter(self, node: ast.AST) -> _Scope:
        if isinstance(node, ast.ClassDef):
            scope = _Scope(_CLASS_KIND, self.scope)
        else:
            scope = _Scope(
                _FUNCTION_KIND, self.scope, is_comprehension=isinstance(node, _ComprehensionNode)
            )
        if isinstance(node, _FunctionNode):
            for name in _parameter_names(node.args):
                scope.bind(name, _UNRESOLVED)
        self.scopes[node] = scope
        return scope

    def on_definition(self, name: str, node: ast.AST) -> None:
        self.scope.bind(name, _UNRESOLVED)

    def visit_Name(self, node: ast.Name) -> None:
        if not isinstance(node.ctx, ast.Load):
            self.scope.bind(node.id, _UNRESOLVED)

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        # PEP 572: the target belongs to the nearest scope that is not a comprehension.
        scope = self.scope
        while scope.is_comprehension and scope.parent is not None:
            scope = scope.parent
        scope.bind(node.target.id, _UNRESOLVED)
        self.visit(node.value)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.asname is not None:
                self.scope.bind(alias.asname, alias.name)
            else:
                top = alias.name.partition(".")[0]
                self.scope.bind(top, top)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        for alias in node.names:
            if alias.name == "*":
                if node.level == 0:
                    for name in _public_names(module):
                        self.scope.bind(name, f"{module}.{name}")
                continue
            target = f"{module}.{alias.name}" if node.level == 0 else _UNRESOLVED
            self.scope.bind(alias.asname or alias.name, target)

    def visit_Global(self, node: ast.Global) -> None:
        self.scope.global_names.update(node.names)

    def visit_Nonlocal(self, node: ast.Nonlocal) -> None:
        self.scope.nonlocal_names.update(node.names)

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.name:
            self.scope.bind(node.name, _UNRESOLVED)
        self.generic_visit(node)

    def visit_MatchAs(self, node: ast.MatchAs) -> None:
        if node.name:
            self.scope.bind(node.name, _UNRESOLVED)
        self.generic_visit(node)

    def visit_MatchStar(self, node: ast.MatchStar) -> None:
        if node.name:
            self.scope.bind(node.name, _UNRESOLVED)

    def visit_MatchMapping(self, node: ast.MatchMapping) -> None:
        if node.rest:
            self.scope.bind(node.rest, _UNRESOLVED)
        self.generic_visit(node)

    def _hoist_declarations(self) -> None:
        """Bindings of `global`/`nonlocal` names belong to the scope they point at."""
        for scope in self.scopes.values():
            for name in scope.global_names & set(scope.bindings):
                for target in scope.bindings.pop(name):
                    self.module_scope.bind(name, target)
            for name in scope.nonlocal_names & set(scope.bindings):
                owner = _enclosing_function_binding(scope, name)
                targets = scope.bindings.pop(name)
                if owner is not None:
                    for target in targets:
                        owner.bind(name, target)


def _enclosing_function_binding(scope: _Scope, name: str) -> _Scope | None:
    current = scope.parent
    while current is not None and current.kind != _MODULE_KIND:
        if current.kind == _FUNCTION_KIND and name in current.bindings:
            return current
        current = current.parent
    return None


def _lookup(scope: _Scope, name: str, module_scope: _Scope) -> str | None:
    """What a loaded name refers to: an imported qualname, builtins.<name>, or None (local)."""
    if name in scope.global_names:
        return _from_bindings(module_scope, name)
    current: _Scope | None = scope
    if name in scope.nonlocal_names:
        current = scope.parent
    first = True
    while current is not None:
        skip_class = current.kind == _CLASS_KIND and not first
        if not skip_class:
            if name in current.global_names and current is not scope:
                return _from_bindings(module_scope, name)
            if name in current.bindings:
                return _from_bindings(current, name)
        first = False
        current = current.parent
    return f"builtins.{name}"


def _from_bindings(scope: _Scope, name: str) -> str | None:
    targets = scope.bindings.get(name)
    if not targets:
        return f"builtins.{name}"
    if len(targets) == 1:
        return next(iter(targets))
    return _UNRESOLVED


class _Resolver(_ScopeWalker):
    """Second pass: qualify every loaded name and attribute chain."""

    def __init__(self, scopes: dict[ast.AST, _Scope]) -> None:
        super().__init__()
        self.scopes = scopes
        self.module_scope = next(s for s in scopes.values() if s.kind == _MODULE_KIND)
        self.scope = self.module_scope
        self.found: list[tuple[int, int, QualifiedReference]] = []

    def enter(self, node: ast.AST) -> _Scope:
        return self.scopes[node]

    def _add(self, node: ast.AST, qualname: str, *, is_call: bool) -> None:
        lineno, col = getattr(node, "lineno", 0), getattr(node, "col_offset", 0)
        self.found.append((lineno, col, QualifiedReference(qualname, lineno, is_call)))

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
        """Record the longest qualified chain at `node`; False if `node` is not one."""
        attributes: list[str] = []
        current = node
        while isinstance(current, ast.Attribute):
            if not isinstance(current.ctx, ast.Load):
                return False
            attributes.append(current.attr)
            current = current.value
        if not isinstance(current, ast.Name) or not isinstance(current.ctx, ast.Load):
            return False
        base = _lookup(self.scope, current.id, self.module_scope)
        if base is not None:
            self._add(node, ".".join([base, *reversed(attributes)]), is_call=is_call)
        return True
