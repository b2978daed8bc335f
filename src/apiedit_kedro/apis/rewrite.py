"""Rewrite a program's old-API call sites into the new-API form of the catalogue (AST, span edits).

Hand-written: refactoring libraries (rope, bowler, libcst codemods) do not know the usage vocabulary
of the edited world, and `ast.unparse` would reformat the whole program. This module asks
`apis.scopes.analyse_scopes` (the one scope analysis, shared with `apis.references`) which API each
name and attribute chain refers to, finds the references to each edited API, and replaces only their
source spans, so the rest of the text is kept byte for byte and a prompt prefix of the program can be
rewritten consistently with the whole program:

- the reference itself: a relocated API becomes its new bare built-in name; a renamed one keeps its
  module path (`m.sqrt` -> `m.square_root_v2`, `from math import sqrt` -> `from math import
  square_root_v2`);
- the call's arguments, for a usage change (reorder, pack_varargs, keyword_only, rename_keywords);
- the imports: `from m import f` of a relocated API loses `f`; `import m` is dropped when nothing
  else of `m` is used any more.

A reference that cannot be rewritten mechanically (a usage-changing API passed as a value, a starred
argument where positions matter) raises `RewriteError`; so does a rewrite that leaves an old
reference behind (checked with `apis.references.find_api_references`).
"""

import ast
import inspect
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from apiedit_kedro.apis.mapping import ApiMapping
from apiedit_kedro.apis.scopes import BindingKind, analyse_scopes


class RewriteError(ValueError):
    """A call site cannot be rewritten into the new usage; names the API and the line."""


def parse_quietly(source: str) -> ast.Module:
    """`ast.parse` without the invalid-escape warnings that some upstream solutions trigger."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        return ast.parse(source)


# --------------------------------------------------------------------------- sites
@dataclass
class _Edit:
    start: int
    end: int
    render: Callable[[], str]


@dataclass
class RewriteResult:
    """The rewritten program, its rewritten prefix (e.g. the prompt) and the APIs it touched."""

    source: str
    prefix: str
    rewritten_apis: list[str]
    # APIs referenced beyond an import statement (an import-only API is rewritten, not "used")
    referenced_apis: list[str]


class _Rewriter:
    def __init__(self, source: str, mappings: Sequence[ApiMapping]) -> None:
        self.source = source
        self.tree = parse_quietly(source)
        self.by_old = {m.old_qualname: m for m in mappings}
        self._line_starts = [0]
        for line in source.splitlines(keepends=True):
            self._line_starts.append(self._line_starts[-1] + len(line))
        self.edits: list[_Edit] = []
        self.touched: set[str] = set()
        self.referenced: set[str] = set()
        self.relocated_spans: set[tuple[int, int]] = set()
        self.scopes = analyse_scopes(self.tree)
        self.parents = {id(c): p for p in ast.walk(self.tree) for c in ast.iter_child_nodes(p)}

    # positions -------------------------------------------------------------
    def _offset(self, lineno: int, col: int) -> int:
        line_start = self._line_starts[lineno - 1]
        line = self.source[line_start : self._line_starts[lineno]]
        return line_start + len(line.encode("utf-8")[:col].decode("utf-8", errors="ignore"))

    def span(self, node: ast.AST) -> tuple[int, int]:
        return (
            self._offset(node.lineno, node.col_offset),
            self._offset(node.end_lineno, node.end_col_offset),
        )

    def render(self, start: int, end: int) -> str:
        """Source text of [start, end) with every edit inside it applied (outermost edits win)."""
        pieces, cursor = [], start
        inside = sorted(
            (
                e
                for e in self.edits
                if start <= e.start and e.end <= end and (e.start, e.end) != (start, end)
            ),
            key=lambda e: (e.start, -e.end),
        )
        for edit in inside:
            if edit.start < cursor:
                continue
            pieces.append(self.source[cursor : edit.start])
            pieces.append(edit.render())
            cursor = edit.end
        pieces.append(self.source[cursor:end])
        return "".join(pieces)

    def render_node(self, node: ast.AST) -> str:
        start, end = self.span(node)
        own = [e for e in self.edits if (e.start, e.end) == (start, end)]
        return own[-1].render() if own else self.render(start, end)

    # references -------------------------------------------------------------
    def _binding_kind(self, node: ast.Name) -> BindingKind | None:
        binding = self.scopes.binding_of(node)
        return binding.kind if binding else None

    def collect(self) -> None:
        for node in ast.walk(self.tree):
            if not isinstance(node, ast.Name | ast.Attribute):
                continue
            qualname = self.scopes.qualname_of(node)
            mapping = self.by_old.get(qualname or "")
            if mapping is None:
                continue
            self.touched.add(mapping.api_id)
            self.referenced.add(mapping.api_id)
            self._add_reference(node, mapping)
            parent = self.parents.get(id(node))
            is_callee = isinstance(parent, ast.Call) and parent.func is node
            if mapping.usage["usage"] != "same":
                if not is_callee:
                    raise RewriteError(
                        f"{mapping.api_id} (line {node.lineno}): the API is used as a value, not "
                        f"called, so its usage change `{mapping.usage['usage']}` cannot be "
                        "applied mechanically; exclude this problem for this API."
                    )
                self._add_call(parent, mapping)
        self._collect_imports()

    def _add_reference(self, node: ast.AST, mapping: ApiMapping) -> None:
        start, end = self.span(node)
        if mapping.kind == "relocate":
            self.relocated_spans.add((start, end))
            self.edits.append(_Edit(start, end, lambda: mapping.new_name))
        elif isinstance(node, ast.Attribute):
            value = node.value
            self.edits.append(
                _Edit(start, end, lambda: f"{self.render_node(value)}.{mapping.new_name}")
            )
        elif (
            self._binding_kind(node) in (BindingKind.FROM_IMPORT, BindingKind.BUILTIN)
            and node.id == mapping.old_name
        ):
            # `from m import f` (imports rewritten to the new name) or a star import / builtin
            self.edits.append(_Edit(start, end, lambda: mapping.new_name))
        # `from m import f as g`: the alias keeps its local name, only the import changes

    # calls ------------------------------------------------------------------
    def _add_call(self, call: ast.Call, mapping: ApiMapping) -> None:
        start, end = self.span(call)
        arguments = _CallArguments(self, call, mapping)
        arguments.check()
        self.edits.append(
            _Edit(start, end, lambda: f"{self.render_node(call.func)}({arguments.render()})")
        )

    # imports ----------------------------------------------------------------
    def _collect_imports(self) -> None:
        remaining_uses = self._remaining_module_uses()
        for node in ast.walk(self.tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                self._rewrite_import_from(node)
            elif isinstance(node, ast.Import):
                kept = [
                    alias
                    for alias in node.names
                    if not self._drops_module_alias(alias, remaining_uses)
                ]
                if len(kept) != len(node.names):
                    self._replace_statement(node, [ast.unparse(a) for a in kept], "import ")

    def _rewrite_import_from(self, node: ast.ImportFrom) -> None:
        kept: list[str] = []
        changed = False
        for alias in node.names:
            mapping = self.by_old.get(f"{node.module}.{alias.name}")
            if mapping is None:
                kept.append(ast.unparse(alias))
                continue
            self.touched.add(mapping.api_id)
            changed = True
            if mapping.kind == "rename":
                new = mapping.new_name + (f" as {alias.asname}" if alias.asname else "")
                kept.append(new)
        if changed:
            self._replace_statement(node, kept, f"from {node.module} import ")

    def _remaining_module_uses(self) -> dict[str, int]:
        """Per local module alias: how many loads of it are not relocated references."""
        uses: dict[str, int] = {}
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Name) and self._binding_kind(node) is BindingKind.MODULE:
                parent, chain_top = self.parents.get(id(node)), node
                covered = False
                while isinstance(parent, ast.Attribute):
                    chain_top = parent
                    if self.span(chain_top) in self.relocated_spans:
                        covered = True
                        break
                    parent = self.parents.get(id(parent))
                if not covered:
                    uses[node.id] = uses.get(node.id, 0) + 1
        return uses

    def _drops_module_alias(self, alias: ast.alias, remaining_uses: dict[str, int]) -> bool:
        local = alias.asname or alias.name.split(".")[0]
        module = alias.name if alias.asname else local
        relocated_from_module = any(
            m.kind == "relocate" and m.old_module.split(".")[0] == module.split(".")[0]
            for m in self.by_old.values()
            if m.api_id in self.touched
        )
        return relocated_from_module and remaining_uses.get(local, 0) == 0

    def _replace_statement(self, node: ast.stmt, names: list[str], head: str) -> None:
        start, end = self.span(node)
        if names:
            replacement = head + ", ".join(names)
            self.edits.append(_Edit(start, end, lambda: replacement))
            return
        parent = self.parents.get(id(node))
        siblings = next(
            (
                getattr(parent, f)
                for f in ("body", "orelse", "finalbody")
                if node in getattr(parent, f, [])
            ),
            [],
        )
        line_start = self.source.rfind("\n", 0, start) + 1
        line_end = self.source.find("\n", end)
        line_end = len(self.source) if line_end < 0 else line_end + 1
        alone_on_line = (
            not self.source[line_start:start].strip() and not self.source[end:line_end].strip()
        )
        if len(siblings) > 1 and alone_on_line:
            self.edits.append(_Edit(line_start, line_end, lambda: ""))
        else:
            self.edits.append(_Edit(start, end, lambda: "pass"))


class _CallArguments:
    """The argument list of one call, re-rendered in the new usage."""

    def __init__(self, rewriter: _Rewriter, call: ast.Call, mapping: ApiMapping) -> None:
        self.rewriter, self.call, self.mapping = rewriter, call, mapping
        self.usage = mapping.usage

    def _fail(self, reason: str) -> RewriteError:
        return RewriteError(
            f"{self.mapping.api_id} (line {self.call.lineno}): {reason}; "
            f"the `{self.usage['usage']}` usage cannot be applied to this call mechanically."
        )

    def _old_parameter_names(self) -> list[str]:
        import importlib

        try:
            module = importlib.import_module(self.mapping.old_module)
            signature = inspect.signature(getattr(module, self.mapping.old_name))
        except (ImportError, AttributeError, ValueError, TypeError):
            raise self._fail("the old API has no introspectable signature") from None
        return [
            p.name
            for p in signature.parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]

    def check(self) -> None:
        positional = self.call.args
        kind = self.usage["usage"]
        if kind == "reorder":
            count = len(self.usage["order"])
            if len(positional) < count or any(
                isinstance(a, ast.Starred) for a in positional[:count]
            ):
                raise self._fail(f"it needs {count} plain positional arguments")
        if kind == "keyword_only":
            if any(isinstance(a, ast.Starred) for a in positional):
                raise self._fail("a starred argument hides which parameter gets which value")
            if self._listed_form() is not None:
                return
            names = (
                self._old_parameter_names() if len(positional) != len(self.usage["names"]) else []
            )
            if names and len(positional) > len(names):
                raise self._fail("more positional arguments than the old API accepts")

    def _listed_form(self) -> list[str] | None:
        """The names of the catalogued positional form with this call's arity (`range(stop)`)."""
        forms = [*self.usage.get("forms", []), self.usage["names"]] if "forms" in self.usage else []
        return next((form for form in forms if len(form) == len(self.call.args)), None)

    def _text(self, node: ast.AST) -> str:
        return self.rewriter.render_node(node)

    def _keywords(self, renames: dict[str, str] | None = None) -> list[str]:
        renames = renames or {}
        texts = []
        for keyword_node in self.call.keywords:
            value = self._text(keyword_node.value)
            if keyword_node.arg is None:
                texts.append(f"**{value}")
            else:
                texts.append(f"{renames.get(keyword_node.arg, keyword_node.arg)}={value}")
        return texts

    def render(self) -> str:
        kind = self.usage["usage"]
        positional = [self._text(a) for a in self.call.args]
        if kind == "reorder":
            order = self.usage["order"]
            moved = [positional[i] for i in order] + positional[len(order) :]
            return ", ".join(moved + self._keywords())
        if kind == "pack_varargs":
            args = self.call.args
            if len(args) == 1 and isinstance(args[0], ast.Starred):
                packed = self._text(args[0].value)
            elif len(args) == 1 and self.usage.get("iterable_form"):
                # `max(xs)` already passes one iterable, which is the new usage.
                packed = positional[0]
                if isinstance(args[0], ast.GeneratorExp) and not self.call.keywords:
                    # A lone generator argument shares the call's parentheses: `max(x for x in y)`.
                    packed = packed.removeprefix("(").removesuffix(")")
            else:
                packed = "[" + ", ".join(positional) + "]"
            return ", ".join([packed, *self._keywords()])
        if kind == "keyword_only":
            form = self._listed_form()
            if form is not None:
                bound = [f"{name}={text}" for name, text in zip(form, positional, strict=True)]
                return ", ".join(bound + self._keywords())
            new_names = list(self.usage["names"])
            old_names = self._old_parameter_names() if len(positional) != len(new_names) else []
            renames = dict(zip(old_names, new_names, strict=False))
            targets = new_names + old_names[len(new_names) :]
            bound = [f"{targets[i]}={text}" for i, text in enumerate(positional)]
            return ", ".join(bound + self._keywords(renames))
        if kind == "rename_keywords":
            return ", ".join(positional + self._keywords(dict(self.usage["map"])))
        return ", ".join(positional + self._keywords())


def rewrite_program(
    source: str, mappings: Sequence[ApiMapping], *, prefix_length: int = 0
) -> RewriteResult:
    """Rewrite every reference to an API of `mappings` in `source` into its new form.

    `prefix_length` marks a prefix of `source` (a HumanEval prompt) that is returned rewritten on
    its own, with the same import decisions as the whole program.
    """
    from apiedit_kedro.apis.references import find_api_references

    rewriter = _Rewriter(source, mappings)
    rewriter.collect()
    new_source = rewriter.render(0, len(source))
    for edit in rewriter.edits:
        if edit.start < prefix_length < edit.end:
            raise RewriteError(
                f"an edit at characters {edit.start}-{edit.end} straddles the prompt's end "
                f"({prefix_length}); the prompt cannot be rewritten on its own."
            )
    prefix = rewriter.render(0, prefix_length) if prefix_length else ""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            compile(new_source, "<rewritten>", "exec")
    except SyntaxError as error:
        raise RewriteError(f"the rewritten program does not compile: {error}") from error
    leftovers = find_api_references(new_source, mappings).old
    left_behind = sorted(api for api, count in leftovers.items() if count)
    if left_behind:
        raise RewriteError(
            f"the rewrite left old references behind for {left_behind}: an API is reached in a "
            "way the rewriter does not resolve (e.g. getattr, a re-bound alias); rewrite it by "
            "hand or exclude the problem for these APIs."
        )
    return RewriteResult(new_source, prefix, sorted(rewriter.touched), sorted(rewriter.referenced))
