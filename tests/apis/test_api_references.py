"""Static reference resolution on tricky import and scoping patterns."""

import json
import textwrap

import pytest

from apiedit_kedro.apis.references import (
    QualifiedReference,
    find_api_references,
    resolve_references,
)


def qualnames(source: str) -> list[str]:
    return [ref.qualname for ref in resolve_references(textwrap.dedent(source))]


def calls(source: str) -> list[str]:
    return [ref.qualname for ref in resolve_references(textwrap.dedent(source)) if ref.is_call]


def test_import_forms_and_aliases_resolve_to_the_full_dotted_name():
    source = """
    import os
    import os.path as osp
    from os import path
    from os.path import join as j
    import collections as c, heapq
    os.path.join("a")
    osp.join("b")
    path.join("c")
    j("d")
    c.Counter("x").most_common(1)
    heapq.heappush(h, 1)
    """
    assert calls(source) == [
        "os.path.join",
        "os.path.join",
        "os.path.join",
        "os.path.join",
        "collections.Counter",
        "heapq.heappush",
    ]


def test_import_statements_are_references_and_carry_line_numbers():
    refs = resolve_references("import math\nfrom os.path import join as j\n\nj('a')\n")
    assert refs == [
        QualifiedReference("math", 1, False),
        QualifiedReference("os.path.join", 2, False),
        QualifiedReference("os.path.join", 4, True),
    ]


def test_star_import_resolves_against_the_real_module():
    source = """
    from math import *
    from heapq import *
    comb(5, 2)
    heappush(h, 1)
    unknown_name(1)
    """
    assert calls(source) == ["math.comb", "heapq.heappush", "builtins.unknown_name"]


def test_free_names_are_builtins_and_bound_names_are_not():
    source = """
    values = sorted(data)
    my_os_path_join(["a", "b"])
    def f(sorted, *args, key=None, **kw):
        return sorted(args), len(kw)
    lam = lambda len: len(1)
    squares = [abs(x) for x in values]
    try:
        pass
    except ValueError as error:
        error.args
    """
    assert calls(source) == [
        "builtins.sorted",
        "builtins.my_os_path_join",
        "builtins.len",
        "builtins.abs",
    ]
    names = qualnames(source)
    assert "builtins.x" not in names
    assert "builtins.error" not in names
    assert "builtins.ValueError" in names


def test_shadowing_by_local_assignment_parameter_and_comprehension():
    source = """
    import math
    from math import comb
    def uses_local():
        comb = lambda n, k: 0
        return comb(5, 2)
    def uses_parameter(math):
        return math.comb(5, 2)
    def uses_global():
        return comb(5, 2), math.comb(4, 2)
    shadowed = [comb(1, 1) for comb in [max]]
    """
    assert calls(source) == ["math.comb", "math.comb"]
    assert "builtins.max" in qualnames(source)


def test_nested_functions_classes_global_and_nonlocal():
    source = """
    import json as j
    def outer():
        import heapq as j2
        def inner():
            return j2.heappush(h, 1), j.dumps(1)
        return inner
    class Encoder:
        j = None
        def method(self):
            return j.loads("1")
        value = j
    def counter():
        total = 0
        def bump():
            nonlocal total
            total = total + 1
        return bump
    """
    refs = calls(source)
    assert refs == ["heapq.heappush", "json.dumps", "json.loads"]
    # `j` is bound at module level by an import and by `global j; j = 3`: ambiguous.
    ambiguous = calls("import json as j\ndef f():\n    global j\n    j = 3\nj.dumps(1)\n")
    assert ambiguous == []


def test_the_code_is_never_executed(tmp_path):
    marker = tmp_path / "ran"
    source = f"open({str(marker)!r}, 'w').write('x')\nraise SystemExit(3)\nimport this\n"
    assert calls(source) == ["builtins.open", "builtins.SystemExit"]
    assert not marker.exists()


def test_unparsable_source_raises_syntax_error():
    with pytest.raises(SyntaxError):
        resolve_references("def broken(:\n    pass")


def test_find_api_references_counts_old_and_new_uses_per_api():
    mappings = [
        {
            "api_id": "os.path.join",
            "old_qualname": "os.path.join",
            "new_qualname": "my_os_path_join",
            "kind": "relocate",
            "old_signature": "os.path.join(a, *p)",
            "new_signature": "my_os_path_join(parts)",
            "doc": "Join path parts.",
            "impl": json.dumps({"usage": "pack_varargs"}),
        },
        {
            "api_id": "heapq.heappush",
            "old_qualname": "heapq.heappush",
            "new_qualname": "heapq.push_heap",
            "kind": "rename",
            "old_signature": "",
            "new_signature": "",
            "doc": "",
            "impl": json.dumps({"usage": "reorder", "order": [1, 0]}),
        },
    ]
    source = """
    import posixpath, _heapq
    from heapq import push_heap
    from os.path import join
    def f(parts):
        join("a")
        posixpath.join("b")  # the same object under its real module name
        _heapq.heappush(h, 1)  # the C twin
        return my_os_path_join(parts), push_heap(1, h)
    """
    refs = find_api_references(textwrap.dedent(source), mappings)
    assert refs.old == {"os.path.join": 3, "heapq.heappush": 1}
    assert refs.new == {"os.path.join": 1, "heapq.heappush": 2}
    clean = find_api_references("print(1)", mappings)
    assert clean.old == {"os.path.join": 0, "heapq.heappush": 0}
