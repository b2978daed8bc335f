"""The edited world, installed only in child interpreters (never in the pytest process).

Every probe runs as program code, the way the sandbox runs a sample: `exec` in a fresh namespace
that belongs to no module. The child reports what each probe did as JSON.
"""

import json
import math
import subprocess
import sys
import textwrap

import pytest

from apiedit_kedro.apis.world import prepare_world


def record(api_id, old, new, kind, impl):
    return {
        "api_id": api_id,
        "old_qualname": old,
        "new_qualname": new,
        "kind": kind,
        "old_signature": "",
        "new_signature": "",
        "doc": f"{new} replaces {old}.",
        "impl": json.dumps(impl),
    }


MAPPINGS = [
    record(
        "math.comb",
        "math.comb",
        "math.choose",
        "rename",
        {"usage": "keyword_only", "names": ["n", "k"]},
    ),
    record(
        "heapq.heappush",
        "heapq.heappush",
        "heapq.push_heap",
        "rename",
        {"usage": "reorder", "order": [1, 0]},
    ),
    record("functools.reduce", "functools.reduce", "fold_left", "relocate", {"usage": "same"}),
    record(
        "os.path.join", "os.path.join", "my_os_path_join", "relocate", {"usage": "pack_varargs"}
    ),
    record(
        "collections.Counter",
        "collections.Counter",
        "collections.Tally",
        "rename",
        {"usage": "same"},
    ),
    record(
        "json.dumps",
        "json.dumps",
        "json.encode_json",
        "rename",
        {"usage": "rename_keywords", "map": {"indent": "spaces"}},
    ),
    record(
        "sorted",
        "builtins.sorted",
        "my_builtin_sorted",
        "relocate",
        {"usage": "rename_keywords", "map": {"key": "sort_key"}},
    ),
    record("len", "builtins.len", "my_builtin_len", "relocate", {"usage": "same"}),
]

# (module, old name) pairs whose removal is probed, twins included.
OLD_LOCATIONS = [
    ("math", "comb"),
    ("heapq", "heappush"),
    ("_heapq", "heappush"),
    ("functools", "reduce"),
    ("_functools", "reduce"),
    ("os.path", "join"),
    ("posixpath", "join"),
    ("collections", "Counter"),
    ("json", "dumps"),
    ("builtins", "sorted"),
    ("builtins", "len"),
]

CHILD_PRELUDE = """
import importlib, json, sys
from json import dumps as pristine_dumps  # the harness's own handle, taken before install
from apiedit_kedro.apis.world import install_edited_world, new_api_call_counts

def run(source):
    '''Run program code in a fresh namespace; return "ok:<result>" or the exception type.'''
    namespace = {"__name__": "__main__"}
    try:
        exec(source, namespace)
    except BaseException as error:
        return type(error).__name__
    return "ok:" + repr(namespace.get("result"))

results = {}
"""


def run_child(body: str, mappings=MAPPINGS) -> dict:
    script = (
        CHILD_PRELUDE + f"MAPPINGS = json.loads({json.dumps(mappings)!r})\n" + textwrap.dedent(body)
    )
    script += "\nsys.stdout.write(pristine_dumps(results))\n"
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)


def removal_probes(module: str, name: str) -> dict[str, str]:
    """Program snippets that must all fail (or find nothing) once `module.name` is removed."""
    top = module.partition(".")[0]
    return {
        "attribute": f"import {module}\nresult = {module}.{name}",
        "from_import": f"from {module} import {name}\nresult = {name}",
        "getattr_default": f"import {module}\nassert getattr({module}, {name!r}, None) is None",
        "hasattr": f"import {module}\nassert not hasattr({module}, {name!r})",
        "dir": f"import {module}\nassert {name!r} not in dir({module})",
        "star_import": f"from {module} import *\nresult = {name}",
        "import_module": f"import importlib\nresult = importlib.import_module({module!r}).{name}",
        "reload": f"import importlib, {module}\nimportlib.reload({module})\nresult = {module}.{name}",
        "reimport": (
            f"import sys\nsys.modules.pop({module!r}, None)\nsys.modules.pop({top!r}, None)\n"
            f"import {module}\nresult = {module}.{name}"
        ),
    }


def test_every_escape_route_fails_in_the_edited_world():
    cases = {
        f"{module}.{name}": removal_probes(module, name)
        for module, name in OLD_LOCATIONS
        if module != "builtins"
    }
    cases["builtins.sorted"] = {
        "bare_name": "result = sorted([2, 1])",
        "import_builtins": "import builtins\nresult = builtins.sorted",
        "from_builtins": "from builtins import sorted as s\nresult = s",
        "dunder_builtins": "result = __builtins__['sorted'] if isinstance(__builtins__, dict) else __builtins__.sorted",
        "reimport_builtins": "import sys\ndel sys.modules['builtins']\nimport builtins\nresult = builtins.sorted",
    }
    cases["builtins.len"] = {"bare_name": "result = len([1])", "eval": "result = eval('len')([1])"}
    results = run_child(
        f"""
        install_edited_world(MAPPINGS)
        for label, probes in {cases!r}.items():
            results[label] = {{kind: run(source) for kind, source in probes.items()}}
        """
    )
    leaks = {
        f"{label} via {kind}": outcome
        for label, outcomes in results.items()
        for kind, outcome in outcomes.items()
        if outcome.startswith("ok:") and outcome != "ok:None"
    }
    assert not leaks, leaks
    assert results["math.comb"]["attribute"] == "AttributeError"
    assert results["math.comb"]["from_import"] == "ImportError"
    assert results["json.dumps"]["star_import"] == "NameError"
    assert results["builtins.sorted"]["bare_name"] == "NameError"
    # getattr/hasattr/dir probes are asserts inside the program: "ok:None" means they held.
    assert all(
        o["getattr_default"] == o["hasattr"] == o["dir"] == "ok:None"
        for k, o in results.items()
        if not k.startswith("builtins")
    )


def test_new_apis_work_after_the_same_routes_and_count_calls():
    results = run_child(
        """
        # The sandbox scans before it installs the world (a removed name is gone for library
        # code that looks it up from data, as parse_mappings does).
        from apiedit_kedro.apis.references import find_api_references
        refs = find_api_references("my_os_path_join(['a'])", MAPPINGS)
        results["refs_before_install"] = refs.new["os.path.join"]
        install_edited_world(MAPPINGS)
        program = '''
        import importlib, sys, math, heapq, os, collections, json
        heap = []
        heapq.push_heap(5, heap)
        importlib.reload(heapq)
        heapq.push_heap(2, heap)
        del sys.modules["math"]
        import math
        tally = collections.Tally("abca")
        importlib.reload(json)
        result = [
            math.choose(n=5, k=2),
            heap,
            fold_left(lambda a, b: a * b, [1, 2, 3, 4]),
            my_os_path_join(["a", "b", "c"]),
            sorted_pairs if False else my_builtin_sorted(tally.items(), sort_key=lambda kv: kv[0]),
            json.encode_json([1], spaces=1),
            my_builtin_len("abc"),
            isinstance(tally, collections.Tally),
            (tally + collections.Tally("a"))["a"],
            tally.most_common(1),
        ]
        '''
        import textwrap
        results["program"] = run(textwrap.dedent(program))
        results["counts"] = new_api_call_counts()
        results["old_style"] = {
            "keyword_only": run("import math\\nmath.choose(5, 2)"),
            "reorder": run("import heapq\\nheapq.push_heap([], 1, 2)"),
            "pack_varargs": run("my_os_path_join('a', 'b')"),
            "rename_keywords": run("my_builtin_sorted([1], key=abs)"),
        }
        """
    )
    expected = [
        10,
        [2, 5],
        24,
        "a/b/c",
        [("a", 2), ("b", 1), ("c", 1)],
        "[\n 1\n]",
        3,
        True,
        3,
        [("a", 2)],
    ]
    assert results["program"] == "ok:" + repr(expected)
    assert results["counts"] == {
        "collections.Counter": 2,
        "functools.reduce": 1,
        "heapq.heappush": 2,
        "json.dumps": 1,
        "len": 1,
        "math.comb": 1,
        "os.path.join": 1,
        "sorted": 1,
    }
    assert set(results["old_style"].values()) == {"TypeError"}
    assert results["refs_before_install"] == 1


def test_library_code_keeps_working_without_the_removed_apis():
    """The std-lib may still use what the program lost (Counter needs sorted, statistics
    imports reduce, tempfile joins paths); only program code loses them."""
    results = run_child(
        """
        install_edited_world(MAPPINGS)
        program = '''
        import statistics, fractions, tempfile, os, collections, heapq
        heap = [5, 1, 4]
        heapq.heapify(heap)
        result = [
            statistics.median([3, 1, 2]),
            str(fractions.Fraction(6, 4)),
            os.path.isabs(os.path.abspath("x")),
            collections.Tally("aab").most_common(1),
            heapq.nsmallest(2, [4, 1, 3]),
            tempfile.gettempdir() != "",
        ]
        '''
        import textwrap
        results["fresh_imports_before"] = [m in sys.modules for m in ("statistics", "fractions")]
        results["program"] = run(textwrap.dedent(program))
        """
    )
    assert results["fresh_imports_before"] == [False, False]
    assert results["program"] == "ok:" + repr([2, "3/2", True, [("a", 2)], [1, 3], True])


CORE_BUILTINS = ["int", "str", "list", "dict", "isinstance", "type", "len", "abs"]
CORE_PROGRAM = """
import dataclasses, enum, decimal, fractions, textwrap
@dataclasses.dataclass
class Point:
    x: object = 0
class Color(enum.Enum):
    RED = 1
result = [
    repr(Point(3)),
    Color.RED.name,
    format(decimal.Decimal("1.5") * 2),
    fractions.Fraction(3, 6).denominator,
    textwrap.fill("a b c", 3),
    my_builtin_len(my_builtin_list("abcd")) + my_builtin_abs(-1),
    my_builtin_isinstance(my_builtin_int("7"), my_builtin_int),
]
"""


def test_core_builtins_can_be_removed_without_breaking_the_library():
    mappings = [
        record(
            f"builtins.{name}",
            f"builtins.{name}",
            f"my_builtin_{name}",
            "relocate",
            {"usage": "same"},
        )
        for name in CORE_BUILTINS
    ]
    results = run_child(
        f"""
        install_edited_world(MAPPINGS)
        results["fresh_import_before"] = "decimal" in sys.modules
        results["program"] = run({CORE_PROGRAM!r})
        results["removed"] = [run(name) for name in {CORE_BUILTINS!r}]
        """,
        mappings,
    )
    assert not results["fresh_import_before"]
    assert results["program"] == "ok:" + repr(["Point(x=3)", "RED", "3.0", 2, "a b\nc", 5, True])
    assert results["removed"] == ["NameError"] * len(CORE_BUILTINS)


def test_program_can_define_a_removed_name_again():
    results = run_child(
        """
        install_edited_world(MAPPINGS)
        results["polyfill"] = run(
            "import json, math\\n"
            "json.dumps = lambda obj: 'mine'\\n"
            "math.comb = lambda n, k: -1\\n"
            "result = [json.dumps(1), math.comb(3, 1), hasattr(json, 'dumps')]"
        )
        """
    )
    assert results["polyfill"] == "ok:['mine', -1, True]"


def test_pristine_world_is_untouched_before_and_after_a_forked_install():
    results = run_child(
        """
        import os
        from apiedit_kedro.apis.world import prepare_world
        world = prepare_world(MAPPINGS)  # the parent only prepares
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            world.install()
            os.write(write_end, run("import math\\nresult = math.comb(4, 2)").encode())
            os._exit(0)
        os.waitpid(pid, 0)
        results["child"] = os.read(read_end, 1000).decode()
        results["parent"] = run(
            "import math, heapq, functools, os, collections, json, _heapq\\n"
            "result = [math.comb(4, 2), heapq.heappush is _heapq.heappush, "
            "functools.reduce(lambda a, b: a + b, [1, 2]), os.path.join('a', 'b'), "
            "sorted(collections.Counter('aba').items()), json.dumps(1), len('ab'), "
            "hasattr(math, 'choose'), 'my_os_path_join' in dir(__builtins__) if not "
            "isinstance(__builtins__, dict) else 'my_os_path_join' in __builtins__]"
        )
        results["new_name"] = run("my_os_path_join(['a'])")
        """
    )
    assert results["child"] == "AttributeError"
    assert results["parent"] == "ok:" + repr(
        [6, True, 3, "a/b", [("a", 2), ("b", 1)], "1", 2, False, False]
    )
    assert results["new_name"] == "NameError"


def test_prepare_world_is_cached_and_validates_before_installing():
    assert prepare_world(MAPPINGS[:2]) is prepare_world([dict(m) for m in MAPPINGS[:2]])
    assert math.comb(4, 2) == 6  # preparing never touches the running process
    with pytest.raises(ValueError, match="'bad'"):
        prepare_world([record("bad", "math.nope", "math.yes", "rename", {"usage": "same"})])


def test_a_module_type_that_refuses_unknown_attributes_does_not_stop_the_install():
    """torch's config modules raise AttributeError on any unknown attribute, `__class__` included;
    a worker that had imported torch could not install any world that removes a builtin."""
    mappings = [
        record("builtins.len", "builtins.len", "my_builtin_len", "relocate", {"usage": "same"})
    ]
    results = run_child(
        """
        import types

        class StrictModule(types.ModuleType):
            def __setattr__(self, name, value):
                raise AttributeError(f"{self.__name__}.{name} does not exist")

        strict = StrictModule("strict_config")
        types.ModuleType.__setattr__(strict, "value", 3)
        sys.modules["strict_config"] = strict
        install_edited_world(MAPPINGS)
        results["program"] = run("result = my_builtin_len([1, 2])")
        results["removed"] = run("len([1])")
        results["strict_still_works"] = sys.modules["strict_config"].value
        """,
        mappings,
    )
    assert results == {"program": "ok:2", "removed": "NameError", "strict_still_works": 3}
