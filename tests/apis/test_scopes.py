"""The one scope analysis: what each loaded name and attribute chain refers to, and how it is bound."""

import ast
import textwrap

from apiedit_kedro.apis.scopes import Binding, BindingKind, analyse_scopes


def _loads(source: str) -> dict[str, list[Binding | None]]:
    """Per loaded name (by its text), what each of its occurrences resolves to."""
    tree = ast.parse(textwrap.dedent(source))
    scopes = analyse_scopes(tree)
    found: dict[str, list[Binding | None]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            found.setdefault(node.id, []).append(scopes.binding_of(node))
    return found


def test_bindings_say_whether_a_name_is_a_module_an_imported_attribute_or_a_builtin():
    found = _loads(
        """
        import os.path as osp, math
        from re import search as find
        from heapq import *
        osp, math, find, heappush, len
        """
    )
    assert found == {
        "osp": [Binding(BindingKind.MODULE, "os.path")],
        "math": [Binding(BindingKind.MODULE, "math")],
        "find": [Binding(BindingKind.FROM_IMPORT, "re.search")],
        "heappush": [Binding(BindingKind.FROM_IMPORT, "heapq.heappush")],
        "len": [Binding(BindingKind.BUILTIN, "builtins.len")],
    }


def test_attribute_chains_extend_the_qualified_name_and_locals_resolve_to_nothing():
    tree = ast.parse("import os\ndef f(os):\n    return os.path\nos.path.join\n")
    scopes = analyse_scopes(tree)
    chains = [
        n for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr in ("path", "join")
    ]
    assert sorted(str(scopes.qualname_of(n)) for n in chains) == ["None", "os.path", "os.path.join"]


def test_class_bodies_are_invisible_to_methods_and_annotations_resolve_where_evaluated():
    source = textwrap.dedent(
        """
        import json
        class Codec:
            json = None
            def dump(self, value: json.JSONEncoder):
                return json.dumps(value)
            encoded = json
        """
    )
    tree = ast.parse(source)
    scopes = analyse_scopes(tree)
    loads = [n for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id == "json"]
    resolved = {
        node.lineno: scopes.binding_of(node) for node in loads if isinstance(node.ctx, ast.Load)
    }
    # line 5: the annotation runs in the class body; line 6: the method skips the class scope
    assert resolved == {5: None, 6: Binding(BindingKind.MODULE, "json"), 7: None}
