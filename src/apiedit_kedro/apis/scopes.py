"""Python name scopes of a program: which qualified API a loaded name or attribute chain names.

`analyse_scopes(tree)` binds every name scope by scope (imports and their aliases, assignments,
parameters, `def`/`class`, `except ... as`, match patterns, walrus targets, comprehensions) and
answers, for a `Name` load, what it is bound to: a module (`import os.path as osp` -> `os.path`),
an attribute imported from a module (`from math import comb`, or a star import) or a builtin
(a free name). An attribute chain on such a name extends it (`osp.join` -> `os.path.join`).
Python's scoping rules are followed: function, lambda, comprehension and class scopes (a class
body is not visible from its methods), `global`/`nonlocal` (a binding under them belongs to the
scope they name). The analysis is flow-insensitive: a name bound both by an import and by
something else in the same scope resolves to nothing. Annotations are resolved too, in the scope
that would evaluate them, so a rewriter can keep them consistent; whether they count as
references is the caller's decision.

Both `apis.references` (what a program references) and `apis.rewrite` (which spans to rewrite)
read names through this one analysis, so the rewriter and the check of its result agree.

Hand-written: `symtable` classifies names per scope but does not say what an imported name
refers to, and its tables cannot be matched reliably to AST nodes; linters (pyflakes) report
unused or undefined names, not qualified references.
"""

from __future__ import annotations

import ast
import importlib
import sys
from dataclasses import dataclass, field
from enum import Enum
from functools import lru_cache

# Importing these has visible side effects; a star import from them is left unresolved.
_NO_IMPORT_MODULES = frozenset(
    {"antigravity", "this", "turtle", "turtledemo", "tkinter", "idlelib"}
)


class BindingKind(Enum):
    """How a name came to refer to a qualified API."""

    MODULE = "module"  # import m, import m.n as x
    FROM_IMPORT = "from_import"  # from m import f [as g], from m import *
    BUILTIN = "builtin"  # bound nowhere in the program


@dataclass(frozen=True, slots=True)
class Binding:
    """What a loaded name refers to: `qualname` (e.g. `os.path`, `math.comb`, `builtins.len`)."""

    kind: BindingKind
    qualname: str


@dataclass(eq=False)
class _Scope:
    kind: str
    parent: _Scope | None
    is_comprehension: bool = False
    # name -> what it is bound to by imports; None marks any other binding
    bindings: dict[str, set[Binding | None]] = field(default_factory=dict)
    global_names: set[str] = field(default_factory=set)
    nonlocal_names: set[str] = field(default_factory=set)

    def bind(self, name: str, target: Binding | None) -> None:
        self.bindings.setdefault(name, set()).add(target)


_MODULE_KIND, _FUNCTION_KIND, _CLASS_KIND = "module", "function", "class"
_FunctionNode = ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
_ComprehensionNode = ast.ListComp | ast.SetComp | ast.DictComp | ast.GeneratorExp


class ScopeAnalysis:
    """The resolved names of one parsed program (see the module docstring for the rules)."""

    def __init__(self, scope_of: dict[ast.Name, _Scope], module_scope: _Scope) -> None:
        self._scope_of = scope_of
        self._module_scope = module_scope

    def binding_of(self, name: ast.Name) -> Binding | None:
        """What a loaded `name` refers to; None when it is bound to anything but an import."""
        scope = self._scope_of.get(name)
        if scope is None or not isinstance(name.ctx, ast.Load):
            return None
        return _lookup(scope, name.id, self._module_scope)

    def qualname_of(self, node: ast.AST) -> str | None:
        """The qualified name a `Name` load or an attribute chain on one names, else None.

        An attribute chain names its attribute whether it is loaded, stored or deleted: storing
        to `m.f` replaces the API the program's later loads of `m.f` see.
        """
        if isinstance(node, ast.Attribute):
            base = self.qualname_of(node.value)
            return f"{base}.{node.attr}" if base else None
        if isinstance(node, ast.Name):
            binding = self.binding_of(node)
            return binding.qualname if binding else None
        return None


def analyse_scopes(tree: ast.Module) -> ScopeAnalysis:
    """Bind every scope of `tree` and return what each of its loaded names refers to."""
    builder = _ScopeBuilder()
    builder.visit_body(tree.body)
    builder.hoist_declarations()
    return ScopeAnalysis(builder.scope_of, builder.module_scope)


@lru_cache(maxsize=256)
def _public_names(module_name: str) -> tuple[str, ...]:
    """What `from module_name import *` binds, read from the real (pristine) module.

    Only standard-library modules are imported: importing anything else could run code the
    benchmark never meant to run.
    """
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


class _ScopeBuilder(ast.NodeVisitor):
    """Every scope, what each name is bound to in it, and the scope each `Name` is read in."""

    def __init__(self) -> None:
        self.module_scope = _Scope(_MODULE_KIND, None)
        self.scope = self.module_scope
        self.every_scope = [self.module_scope]
        self.scope_of: dict[ast.Name, _Scope] = {}

    def visit_body(self, body: list[ast.AST]) -> None:
        for node in body:
            self.visit(node)

    def _in_scope(self, node: ast.AST, body: list[ast.AST]) -> None:
        outer = self.scope
        self.scope = self._new_scope(node)
        self.visit_body(body)
        self.scope = outer

    def _new_scope(self, node: ast.AST) -> _Scope:
        kind = _CLASS_KIND if isinstance(node, ast.ClassDef) else _FUNCTION_KIND
        scope = _Scope(kind, self.scope, is_comprehension=isinstance(node, _ComprehensionNode))
        if isinstance(node, _FunctionNode):
            for name in _parameter_names(node.args):
                scope.bind(name, None)
        self.every_scope.append(scope)
        return scope

    # Decorators, defaults and annotations are evaluated in the enclosing scope.
    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.scope.bind(node.name, None)
        self.visit_body([*node.decorator_list, *_defaults(node.args), *_annotations(node)])
        self._in_scope(node, node.body)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self.visit_body(_defaults(node.args))
        self._in_scope(node, [node.body])

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.scope.bind(node.name, None)
        self.visit_body([*node.decorator_list, *node.bases, *node.keywords])
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
        inner += [node.key, node.value] if isinstance(node, ast.DictComp) else [node.elt]
        self._in_scope(node, inner)

    visit_ListComp = visit_SetComp = visit_DictComp = visit_GeneratorExp = _visit_comprehension

    def visit_Name(self, node: ast.Name) -> None:
        self.scope_of[node] = self.scope
        if not isinstance(node.ctx, ast.Load):
            self.scope.bind(node.id, None)

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        # PEP 572: the target belongs to the nearest scope that is not a comprehension.
        scope = self.scope
        while scope.is_comprehension and scope.parent is not None:
            scope = scope.parent
        scope.bind(node.target.id, None)
        self.visit(node.value)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.asname is not None:
                self.scope.bind(alias.asname, Binding(BindingKind.MODULE, alias.name))
            else:
                top = alias.name.partition(".")[0]
                self.scope.bind(top, Binding(BindingKind.MODULE, top))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        for alias in node.names:
            if alias.name == "*":
                names = _public_names(module) if node.level == 0 else ()
                for name in names:
                    self.scope.bind(name, Binding(BindingKind.FROM_IMPORT, f"{module}.{name}"))
                continue
            local = alias.asname or alias.name
            if node.level:  # a module of the program itself, never a catalogued API
                self.scope.bind(local, None)
            else:
                self.scope.bind(local, Binding(BindingKind.FROM_IMPORT, f"{module}.{alias.name}"))

    def visit_Global(self, node: ast.Global) -> None:
        self.scope.global_names.update(node.names)

    def visit_Nonlocal(self, node: ast.Nonlocal) -> None:
        self.scope.nonlocal_names.update(node.names)

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.name:
            self.scope.bind(node.name, None)
        self.generic_visit(node)

    def visit_MatchAs(self, node: ast.MatchAs) -> None:
        if node.name:
            self.scope.bind(node.name, None)
        self.generic_visit(node)

    def visit_MatchStar(self, node: ast.MatchStar) -> None:
        if node.name:
            self.scope.bind(node.name, None)

    def visit_MatchMapping(self, node: ast.MatchMapping) -> None:
        if node.rest:
            self.scope.bind(node.rest, None)
        self.generic_visit(node)

    def hoist_declarations(self) -> None:
        """Bindings of `global`/`nonlocal` names belong to the scope they point at."""
        for scope in self.every_scope:
            for name in scope.global_names & set(scope.bindings):
                for target in scope.bindings.pop(name):
                    self.module_scope.bind(name, target)
            for name in scope.nonlocal_names & set(scope.bindings):
                owner = _enclosing_function_binding(scope, name)
                targets = scope.bindings.pop(name)
                if owner is not None:
                    for target in targets:
                        owner.bind(name, target)


def _defaults(arguments: ast.arguments) -> list[ast.expr]:
    return [*arguments.defaults, *(d for d in arguments.kw_defaults if d is not None)]


def _parameters(arguments: ast.arguments) -> list[ast.arg]:
    params = [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs]
    return params + [p for p in (arguments.vararg, arguments.kwarg) if p is not None]


def _parameter_names(arguments: ast.arguments) -> list[str]:
    return [p.arg for p in _parameters(arguments)]


def _annotations(node: ast.FunctionDef | ast.AsyncFunctionDef) -> list[ast.expr]:
    annotations = [p.annotation for p in _parameters(node.args) if p.annotation is not None]
    return annotations + ([node.returns] if node.returns is not None else [])


def _enclosing_function_binding(scope: _Scope, name: str) -> _Scope | None:
    current = scope.parent
    while current is not None and current.kind != _MODULE_KIND:
        if current.kind == _FUNCTION_KIND and name in current.bindings:
            return current
        current = current.parent
    return None


def _lookup(scope: _Scope, name: str, module_scope: _Scope) -> Binding | None:
    """What `name`, loaded in `scope`, refers to; None when it is bound locally."""
    if name in scope.global_names:
        return _from_bindings(module_scope, name)
    current: _Scope | None = scope.parent if name in scope.nonlocal_names else scope
    first = True
    while current is not None:
        # a class body's names are not visible from the scopes nested in it
        if current.kind != _CLASS_KIND or first:
            if name in current.global_names and current is not scope:
                return _from_bindings(module_scope, name)
            if name in current.bindings:
                return _from_bindings(current, name)
        first = False
        current = current.parent
    return Binding(BindingKind.BUILTIN, f"builtins.{name}")


def _from_bindings(scope: _Scope, name: str) -> Binding | None:
    targets = scope.bindings.get(name)
    if not targets:
        return Binding(BindingKind.BUILTIN, f"builtins.{name}")
    return next(iter(targets)) if len(targets) == 1 else None
