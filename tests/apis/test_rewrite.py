"""The AST rewriter: every usage kind, imports, scopes, and the errors that name the entry."""

import pytest

from apiedit_kedro.apis.mapping import ApiMapping, build_new_callable
from apiedit_kedro.apis.rewrite import RewriteError, rewrite_program


def _mapping(old: str, new: str, kind: str, impl: str) -> ApiMapping:
    return ApiMapping.from_record(
        {
            "api_id": old,
            "old_qualname": old,
            "new_qualname": new,
            "kind": kind,
            "old_signature": "",
            "new_signature": "",
            "doc": f"{new} replaces {old}.",
            "impl": impl,
        }
    )


SQRT = _mapping("math.sqrt", "math.square_root_v2", "rename", '{"usage": "same"}')
JOIN = _mapping("os.path.join", "my_os_path_join", "relocate", '{"usage": "pack_varargs"}')
SEARCH = _mapping("re.search", "my_re_search", "relocate", '{"usage": "reorder", "order": [1, 0]}')
SUB = _mapping(
    "re.sub",
    "re.substitute_v2",
    "rename",
    '{"usage": "keyword_only", "names": ["pattern", "replacement", "text"]}',
)
SORTED = _mapping(
    "builtins.sorted",
    "my_builtin_sorted",
    "relocate",
    '{"usage": "rename_keywords", "map": {"key": "order_key", "reverse": "descending"}}',
)
MAX = _mapping(
    "builtins.max", "my_builtin_max", "relocate", '{"usage": "pack_varargs", "iterable_form": true}'
)
MIN = _mapping(
    "builtins.min", "my_builtin_min", "relocate", '{"usage": "pack_varargs", "iterable_form": true}'
)
RANGE = _mapping(
    "builtins.range",
    "my_builtin_range",
    "relocate",
    '{"usage": "keyword_only", "names": ["start", "stop", "step"], '
    '"forms": [["stop"], ["start", "stop"]], "defaults": {"start": 0, "step": 1}}',
)


def _run(source: str, name: str, *args):
    namespace: dict = {}
    exec(source, namespace)
    return namespace[name](*args)


def test_rename_keeps_the_module_path_and_aliases():
    source = "import math as m\nfrom math import sqrt, floor\ndef f(x):\n    return m.sqrt(x) + sqrt(x) + floor(x)\n"
    result = rewrite_program(source, [SQRT])
    assert result.source == (
        "import math as m\nfrom math import square_root_v2, floor\n"
        "def f(x):\n    return m.square_root_v2(x) + square_root_v2(x) + floor(x)\n"
    )
    assert result.rewritten_apis == ["math.sqrt"]


def test_relocate_drops_an_import_nothing_else_uses_and_packs_varargs():
    source = "import os\ndef f(a, b):\n    return os.path.join(a, b, 'c')\n"
    assert rewrite_program(source, [JOIN]).source == (
        "def f(a, b):\n    return my_os_path_join([a, b, 'c'])\n"
    )
    kept = "import os\ndef f(a):\n    return os.path.join(a, os.sep)\n"
    assert rewrite_program(kept, [JOIN]).source.startswith("import os\n")


def test_from_import_of_a_relocated_api_is_removed_or_becomes_pass():
    source = (
        "from re import search, match\n"
        "def f(s):\n    from re import search as s2\n    return search('a', s) and s2('b', s)\n"
        "def g():\n    from re import search\n"
    )
    assert rewrite_program(source, [SEARCH]).source == (
        "from re import match\n"
        "def f(s):\n    return my_re_search(s, 'a') and my_re_search(s, 'b')\n"
        "def g():\n    pass\n"
    )


def test_keyword_only_maps_extra_positionals_to_their_old_names():
    source = "import re\ndef f(s):\n    return re.sub('a', 'b', s, 1)\n"
    new = rewrite_program(source, [SUB]).source
    assert "re.substitute_v2(pattern='a', replacement='b', text=s, count=1)" in new


def test_rename_keywords_and_nested_usage_changes():
    source = "def f(xs):\n    return sorted(xs, key=abs, reverse=True), max(min(xs), 0)\n"
    new = rewrite_program(source, [SORTED, MAX, MIN]).source
    assert "my_builtin_sorted(xs, order_key=abs, descending=True)" in new
    assert "my_builtin_max([my_builtin_min(xs), 0])" in new


def test_an_api_taking_one_iterable_keeps_that_form_and_packs_only_separate_arguments():
    source = (
        "def f(xs, a, b):\n"
        "    return max(len(x) for x in xs), max((x for x in xs), default=0), max(a, b), min(*xs)\n"
    )
    assert rewrite_program(source, [MAX, MIN]).source == (
        "def f(xs, a, b):\n"
        "    return my_builtin_max(len(x) for x in xs), my_builtin_max((x for x in xs), default=0), "
        "my_builtin_max([a, b]), my_builtin_min(xs)\n"
    )
    plain_pack = _mapping("builtins.max", "my_builtin_max", "relocate", '{"usage": "pack_varargs"}')
    assert "my_builtin_max([xs])" in rewrite_program("y = max(xs)\n", [plain_pack]).source


def test_listed_positional_forms_bind_each_arity_to_its_keywords():
    source = "def f(n):\n    return [list(range(n)), list(range(1, n)), list(range(n, 0, -1))]\n"
    new = rewrite_program(source, [RANGE]).source
    assert new == (
        "def f(n):\n    return [list(my_builtin_range(stop=n)), list(my_builtin_range(start=1, "
        "stop=n)), list(my_builtin_range(start=n, stop=0, step=-1))]\n"
    )
    namespace = {"my_builtin_range": build_new_callable(RANGE, range)}
    exec(new, namespace)
    assert namespace["f"](3) == _run(source, "f", 3)
    with pytest.raises(RewriteError, match=r"builtins\.range"):
        rewrite_program("r = range(*bounds)\n", [RANGE])


def test_rewritten_program_behaves_like_the_original():
    import builtins

    source = "def f(xs):\n    return max(min(xs), 2), sorted(xs, key=lambda v: -v)\n"
    new = rewrite_program(source, [SORTED, MAX, MIN]).source
    namespace = {
        "my_builtin_max": build_new_callable(MAX, builtins.max),
        "my_builtin_min": build_new_callable(MIN, builtins.min),
        "my_builtin_sorted": build_new_callable(SORTED, builtins.sorted),
    }
    exec(new, namespace)
    assert namespace["f"]([3, 1, 2]) == _run(source, "f", [3, 1, 2])


def test_shadowed_names_are_not_rewritten():
    source = "def f(sorted, xs):\n    return sorted(xs)\ndef g(xs):\n    return sorted(xs)\n"
    new = rewrite_program(source, [SORTED]).source
    assert (
        new
        == "def f(sorted, xs):\n    return sorted(xs)\ndef g(xs):\n    return my_builtin_sorted(xs)\n"
    )


def test_prompt_prefix_is_rewritten_with_whole_program_import_decisions():
    prompt = 'import math\ndef f(x):\n    """doc"""\n'
    source = prompt + "    return math.sqrt(x)\n"
    result = rewrite_program(source, [SQRT], prefix_length=len(prompt))
    assert result.prefix == prompt
    assert result.source.startswith(result.prefix)


def test_usage_changing_api_passed_as_a_value_raises_naming_the_entry():
    source = "import re\nfinder = re.search\n"
    with pytest.raises(RewriteError, match=r"re.search \(line 2\): the API is used as a value"):
        rewrite_program(source, [SEARCH])


def test_reorder_needs_plain_positional_arguments():
    with pytest.raises(RewriteError, match=r"re.search \(line 2\).*2 plain positional"):
        rewrite_program("import re\nre.search(*args)\n", [SEARCH])


def test_a_rewrite_that_leaves_an_old_reference_raises_naming_the_entry():
    # `posixpath` is the module behind `os.path`: the reference scan counts `posixpath.join` as the
    # removed API, the rewriter only rewrites the catalogued spelling, so the leftover is reported
    source = "import posixpath\ndef f(a, b):\n    return posixpath.join(a, b)\n"
    with pytest.raises(RewriteError, match=r"left old references behind for \['os.path.join'\]"):
        rewrite_program(source, [JOIN])


def test_names_bound_by_walrus_match_patterns_or_a_global_declaration_are_not_the_api():
    # PEP 572: a walrus in a comprehension binds in the enclosing function, so `math` is local there
    walrus = "import math\ndef f(xs):\n    ys = [(math := x) for x in xs]\n    return math.sqrt(4), ys\nprint(math.sqrt(2))\n"
    assert rewrite_program(walrus, [SQRT]).source == walrus.replace(
        "print(math.sqrt", "print(math.square_root_v2"
    )
    # a capture pattern binds for the whole function, like any assignment
    star = "def f(v):\n    match v:\n        case [first, *sorted]:\n            return sorted(first)\n    return sorted(v)\n"
    rest = (
        "def f(v):\n    match v:\n        case {'a': 1, **sorted}:\n            return sorted(v)\n"
    )
    # `global sorted` makes the function's assignment a module binding, seen from `g` too
    declared = "def f():\n    global sorted\n    sorted = list\ndef g(xs):\n    return sorted(xs)\n"
    for source in (star, rest, declared):
        assert rewrite_program(source, [SORTED]).source == source


def test_a_relative_star_import_binds_nothing_the_catalogue_knows():
    source = "from .helpers import *\nimport math\nprint(math.sqrt(2))\n"
    assert rewrite_program(source, [SQRT]).source == (
        "from .helpers import *\nimport math\nprint(math.square_root_v2(2))\n"
    )


def test_a_star_import_of_a_non_stdlib_module_is_not_run_to_learn_its_names(tmp_path, monkeypatch):
    (tmp_path / "side_effect_module.py").write_text(
        f"open({str(tmp_path / 'ran')!r}, 'w').close()\ndef sqrt(x):\n    return x\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    source = "from side_effect_module import *\nimport math\nprint(math.sqrt(2))\n"
    assert "math.square_root_v2(2)" in rewrite_program(source, [SQRT]).source
    assert not (tmp_path / "ran").exists()
