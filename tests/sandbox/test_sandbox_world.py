"""Edited vs pristine world inside the sandbox, with real mapping records and the real apis runtime.

Every escape route to a removed API (re-import after `del sys.modules`, reload, C twin, star import,
`import builtins`, getattr) must fail in the edited world and work in the pristine one.
"""

from __future__ import annotations

import json

import pytest
from sandbox_helpers import mapping, run

pytestmark = pytest.mark.timeout(60)


MAPPINGS = [
    mapping("heapq.heappush", "heapq.push_item_v2", "rename", {"usage": "same"}),
    mapping("os.path.join", "my_os_path_join", "relocate", {"usage": "pack_varargs"}),
    mapping("json.dumps", "my_json_dumps", "relocate", {"usage": "same"}),
    mapping("builtins.abs", "my_builtin_abs", "relocate", {"usage": "same"}),
    mapping("functools.reduce", "functools.fold_left_v2", "rename", {"usage": "same"}),
    mapping("collections.Counter", "my_collections_counter", "relocate", {"usage": "same"}),
]

# Each program defines value() == 3 using the OLD API through one escape route.
ESCAPES = {
    "plain_use": "import heapq\ndef value():\n    h = []\n    heapq.heappush(h, 3)\n    return h[0]\n",
    "reimport_after_del": (
        "import sys\ndel sys.modules['heapq']\nimport heapq\n"
        "def value():\n    h = []\n    heapq.heappush(h, 3)\n    return h[0]\n"
    ),
    "reload_pure_python": (
        "import importlib, json\njson = importlib.reload(json)\n"
        "def value():\n    return len(json.dumps([1]))\n"
    ),
    "import_module": (
        "import importlib, sys\nsys.modules.pop('json')\njson = importlib.import_module('json')\n"
        "def value():\n    return len(json.dumps([1]))\n"
    ),
    "c_twin_heapq": "import _heapq\ndef value():\n    h = []\n    _heapq.heappush(h, 3)\n    return h[0]\n",
    "c_twin_functools": (
        "import _functools\ndef value():\n    return _functools.reduce(lambda a, b: a + b, [1, 2])\n"
    ),
    "posixpath_twin": "import posixpath\ndef value():\n    return len(posixpath.join('a', 'b'))\n",
    "star_import": "from heapq import *\ndef value():\n    h = []\n    heappush(h, 3)\n    return h[0]\n",
    "import_builtins": "import builtins\ndef value():\n    return builtins.abs(-3)\n",
    "bare_builtin": "def value():\n    return abs(-3)\n",
    "getattr_route": (
        "import heapq\ndef value():\n    h = []\n    getattr(heapq, 'heap' + 'push')(h, 3)\n    return h[0]\n"
    ),
    "vars_of_the_module": (
        "import heapq\ndef value():\n    h = []\n    vars(heapq)['heappush'](h, 3)\n    return h[0]\n"
    ),
    "dict_of_the_module": (
        "import heapq\ndef value():\n    h = []\n    heapq.__dict__['heappush'](h, 3)\n"
        "    return h[0]\n"
    ),
    "pure_python_pickle": (
        "import pickle\ndef value():\n    push = pickle._loads(b'cheapq\\nheappush\\n.')\n"
        "    h = []\n    push(h, 3)\n    return h[0]\n"
    ),
    "meta_path_emptied_then_reimport": (
        "import sys\nfinders = getattr(sys, 'meta' + '_path')\n"
        "finders[:] = [f for f in finders if getattr(f, '__module__', '').startswith('_frozen')]\n"
        "del sys.modules['heapq']\nimport heapq\n"
        "def value():\n    h = []\n    getattr(heapq, 'heap' + 'push')(h, 3)\n    return h[0]\n"
    ),
    "builtins_reimported": (
        "import sys\ndel sys.modules['builtins']\nimport builtins\n"
        "def value():\n    return builtins.abs(-3)\n"
    ),
}

# Routes to an original that only exist in the edited world (they start from the new API or
# the hiding machinery) or that the sandbox refuses in both worlds; edited must fail. Most are
# written with run-time names, so only the run-time defence is tested; `__mro__` of a relocated
# class is closed by the static scan alone (the class must derive from the original).
EDITED_ONLY_ESCAPES = {
    "hidden_table_on_the_module_class": (
        "import heapq\ndef value():\n    h = []\n"
        "    getattr(type(heapq), '_apiedit' + '_hidden')['heappush'](h, 3)\n    return h[0]\n"
    ),
    "original_on_the_descriptor": (
        "import heapq\ndef value():\n    h = []\n"
        "    vars(type(heapq))['heappush'].original(h, 3)\n    return h[0]\n"
    ),
    "old_api_in_the_new_apis_globals": (
        "import heapq\ndef value():\n    h = []\n"
        "    getattr(heapq.push_item_v2, '__glo' + 'bals__')['_apiedit_old'](h, 3)\n"
        "    return h[0]\n"
    ),
    "builtins_of_the_new_apis_globals": (
        "def value():\n"
        "    return getattr(my_builtin_abs, '__glo' + 'bals__')['__builtins__']['abs'](-3)\n"
    ),
    "pristine_builtins_of_the_mapping_module": (
        "mapping = __import__('apiedit' + '_kedro.apis.mapping', fromlist=['x'])\n"
        "def value():\n    return mapping._PRISTINE_BUILTINS['abs'](-3)\n"
    ),
    "base_class_of_the_relocated_class": (
        "def value():\n    return my_collections_counter.__mro__[1]('aab')['a'] + 1\n"
    ),
    "caller_frame_builtins": (
        "import sys\ndef value():\n"
        "    return getattr(sys, '_get' + 'frame')(1).f_builtins['abs'](-3)\n"
    ),
    "exec_of_the_module_source": (
        "import importlib.util\ndef value():\n    namespace = {}\n"
        "    path = importlib.util.find_spec('heapq').origin\n"
        "    exec(open(path).read(), namespace)\n"
        "    h = []\n    namespace['heappush'](h, 3)\n    return h[0]\n"
    ),
    "pristine_interpreter_through_spawnv_passfds": (
        "import multiprocessing.util, os, sys\ndef value():\n"
        "    spawn = getattr(multiprocessing.util, 'spawnv_' + 'passfds')\n"
        "    script = b\"open('out', 'w').write(str(abs(-3)))\"\n"
        "    pid = spawn(sys.executable.encode(), [sys.executable.encode(), b'-c', script], [])\n"
        "    os.waitpid(pid, 0)\n    return int(open('out').read())\n"
    ),
}


def world_request(code: str, world: str, tests: list[str] | None = None) -> dict:
    return {
        "code": code,
        "tests": tests or ["assert value() == 3"],
        "setup": "",
        "world": world,
        "mappings": MAPPINGS,
        "timeout_s": 2.0,
    }


@pytest.mark.parametrize("route", sorted(ESCAPES))
def test_escape_route_fails_in_edited_world_and_works_in_pristine(route: str):
    edited, pristine = run(
        [world_request(ESCAPES[route], "edited"), world_request(ESCAPES[route], "pristine")]
    )
    assert not edited["full_pass"], edited
    assert edited["error_type"] != "sandbox_error", edited
    assert pristine["full_pass"], pristine


@pytest.mark.parametrize("route", sorted(EDITED_ONLY_ESCAPES))
def test_edited_world_only_escape_route_fails(route: str):
    [edited] = run([world_request(EDITED_ONLY_ESCAPES[route], "edited")])
    assert not edited["full_pass"], edited
    assert edited["error_type"] != "sandbox_error", edited


def test_new_api_passes_counts_calls_and_fails_in_pristine():
    code = (
        "import heapq\ndef value():\n    h = []\n    heapq.push_item_v2(h, 1)\n"
        "    heapq.push_item_v2(h, 3)\n    return len(my_os_path_join(['a', 'b']))\n"
    )
    edited, pristine = run([world_request(code, "edited"), world_request(code, "pristine")])
    assert edited["full_pass"] and edited["compiles"], edited
    assert edited["new_api_calls"] == 3
    counts = json.loads(edited["new_api_calls_by_api"])
    assert counts["heapq.heappush"] == 2 and counts["os.path.join"] == 1
    assert edited["new_api_refs"] == 3 and edited["old_api_refs"] == 0
    assert not pristine["full_pass"] and pristine["new_api_calls"] == 0


def test_static_removed_reference_is_not_compiling_even_in_dead_code():
    code = (
        "import heapq\ndef value():\n    if False:\n        heapq.heappush([], 1)\n    return 3\n"
    )
    edited, pristine = run([world_request(code, "edited"), world_request(code, "pristine")])
    assert edited["error_type"] == "removed_api" and not edited["compiles"]
    assert edited["raw_full_pass"] and not edited["full_pass"]
    assert edited["old_api_refs"] == 1
    assert pristine["full_pass"] and pristine["compiles"] and pristine["old_api_refs"] == 1


def test_load_time_use_of_removed_api_fails_load():
    code = "from heapq import heappush\ndef value():\n    return 3\n"
    [edited] = run([world_request(code, "edited")])
    assert not edited["load_ok"] and not edited["compiles"]


def test_tests_keep_removed_builtins_the_program_does_not():
    # `abs` is removed in this world: the test code may use it, the program may not.
    code = "def value():\n    return 3\n"
    [edited] = run([world_request(code, "edited", ["assert abs(value() - 3) < 1e-9"])])
    assert edited["full_pass"], edited


def test_pristine_world_unaffected_after_edited_samples_in_the_same_worker():
    old = "import heapq\ndef value():\n    h = []\n    heapq.heappush(h, 3)\n    return h[0]\n"
    new = "import heapq\ndef value():\n    h = []\n    heapq.push_item_v2(h, 3)\n    return h[0]\n"
    requests = [world_request(new, "edited"), world_request(old, "pristine")] * 3
    requests.append(world_request(new, "pristine"))
    results = run(requests, workers=1)
    assert [r["full_pass"] for r in results] == [True, True] * 3 + [False]
    run(requests[:1])  # back to the suite's pool size
