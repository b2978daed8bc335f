"""Verdicts a program cannot write for itself, and a static scan that cannot stall or crash.

Real sandbox processes; each program below would have passed (or stalled the worker) before.
"""

from __future__ import annotations

import re

import pytest
from sandbox_helpers import ORDINARY_CODE, request, run
from test_sandbox_world import mapping

from apiedit_kedro.sandbox import SandboxRequestError
from apiedit_kedro.sandbox.worker import tamper_markers

pytestmark = pytest.mark.timeout(120)

INT_REMOVED = [mapping("builtins.int", "my_builtin_int", "relocate", {"usage": "same"})]


@pytest.mark.parametrize(
    "class_name", ["sandbox_error", "timeout", "GuardViolation", "UnitTimeout", "MemoryError"]
)
def test_a_raised_look_alike_cannot_pose_as_a_harness_verdict(class_name):
    code = f"class {class_name}(Exception):\n    pass\n\nraise {class_name}('forged')\n"
    result = run([request(code)])[0]
    assert result["error_type"] == f"program.{class_name}"
    assert not result["compiles"] and not result["full_pass"]


def test_real_builtin_exceptions_keep_their_names():
    result = run([request(ORDINARY_CODE, ["assert add_one(1) == 3"])])[0]
    assert result["error_type"] == "AssertionError"
    result = run([request("raise MemoryError\n")])[0]
    assert result["error_type"] == "memory_limit"


FRAME_FORGERY = "import sys\ndef add_one(x):\n    frame = sys._getframe(1)\n    return x + 1\n"


def test_a_passing_program_that_introspects_frames_is_flagged_and_not_a_pass():
    result = run([request(FRAME_FORGERY)])[0]
    assert result["tamper_suspect"] is True
    assert result["full_pass"] is False and result["error_type"] == "tamper_suspect"
    assert run([request(ORDINARY_CODE)])[0]["tamper_suspect"] is False


@pytest.mark.parametrize(
    ("source", "marker"),
    [
        ("import gc\ngc.get_objects()\n", "gc"),
        ("import sys\nsys.settrace(None)\n", "settrace"),
        ("f = lambda: 0\nf.__closure__\n", "__closure__"),
        ("import apiedit_kedro.apis.world\n", "apiedit_kedro.apis.world"),
        ("from ctypes import CDLL\n", "ctypes"),
        ("getattr(object, '__subclasses__')()\n", "__subclasses__"),
    ],
)
def test_tamper_markers_name_each_route(source, marker):
    assert marker in tamper_markers(source)


def test_a_huge_program_hits_the_scan_deadline_not_the_worker():
    body = "".join(f"v{i} = abs({i}) + abs(-{i})\n" for i in range(120_000))
    mappings = [mapping("builtins.abs", "my_builtin_abs", "relocate", {"usage": "same"})]
    result = run([request(body + ORDINARY_CODE, world="edited", mappings=mappings, timeout_s=1.0)])[
        0
    ]
    assert result["error_type"] == "static_scan_failed", result["error_message"]
    assert "deadline" in result["error_message"] and not result["compiles"]
    assert run([request(ORDINARY_CODE)])[0]["full_pass"]


def test_a_deeply_nested_expression_is_a_scan_failure_not_a_sandbox_error():
    code = "X = " + " + ".join(["abs(1)"] * 1500) + "\n" + ORDINARY_CODE
    mappings = [mapping("builtins.abs", "my_builtin_abs", "relocate", {"usage": "same"})]
    result = run([request(code, world="edited", mappings=mappings)])[0]
    assert result["error_type"] == "static_scan_failed", result
    assert "RecursionError" in result["error_message"]


def test_annotations_are_never_evaluated_nor_counted_as_removed_api_uses():
    # A HumanEval-style prompt annotated with `int` while builtins.int is removed.
    code = "def add_one(x: int) -> int:\n    y: int = x\n    return y + 1\n"
    result = run([request(code, world="edited", mappings=INT_REMOVED)])[0]
    assert result["old_api_refs"] == 0
    assert result["full_pass"], result["error_message"]
    # A real call still counts.
    code = "def add_one(x: int) -> int:\n    return int(x) + 1\n"
    result = run([request(code, world="edited", mappings=INT_REMOVED)])[0]
    assert result["old_api_refs"] == 1 and not result["full_pass"]
    # Annotations stay unevaluated strings even though the worker module has no say in it.
    code = ORDINARY_CODE + "def g(a: undefined_name) -> also_undefined:\n    return a\n"
    assert run([request(code + "\n", world="pristine")])[0]["full_pass"]


def test_a_program_cannot_raise_its_own_limits():
    code = "import resource\nresource.setrlimit(resource.RLIMIT_AS, (-1, -1))\n" + ORDINARY_CODE
    result = run([request(code)])[0]
    assert (
        result["error_type"] == "guard_violation"
        and "resource.setrlimit" in result["error_message"]
    )
    probe = (
        "import resource\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_AS)\n"
        "raise ValueError(f'{soft} {hard}')\n"
    )
    soft, hard = run([request(probe)])[0]["error_message"].rsplit(":", 1)[1].split()
    assert soft == hard and int(soft) > 0


def test_sample_directories_have_unpredictable_names():
    probe = "import os\nraise ValueError(os.path.basename(os.getcwd()))\n"
    names = [r["error_message"].rsplit(": ", 1)[1] for r in run([request(probe)] * 3)]
    assert len(set(names)) == 3
    assert all(re.fullmatch(r"\d+-\d+-[0-9a-f]{16}", name) for name in names), names


def test_every_result_has_exactly_the_schema_fields():
    from test_sandbox_batches import KILL_MY_WORKER

    from apiedit_kedro.sandbox.result import result_fields

    results = run(
        [
            request(ORDINARY_CODE),  # ran and passed
            request("def add_one(x) return\n"),  # syntax error: never ran
            request(KILL_MY_WORKER + ORDINARY_CODE, timeout_s=2.0),  # sandbox_error
            request(
                "X = " + " + ".join(["abs(1)"] * 1500) + "\n",
                world="edited",
                mappings=[mapping("builtins.abs", "my_builtin_abs", "relocate", {"usage": "same"})],
            ),
        ]
    )
    assert [r["error_type"] for r in results] == [
        "",
        "syntax_error",
        "sandbox_error",
        "static_scan_failed",
    ]
    for result in results:
        assert tuple(result) == result_fields()


@pytest.mark.parametrize(
    "route",
    [
        "import apiedit_kedro.apis.world as w\nw._CALL_COUNTS['x'] = 99\n",
        "import importlib\nimportlib.import_module('apiedit_' + 'kedro.sandbox.child')\n",
        "import sys\nsys.modules['apiedit_' + 'kedro.apis.world']._CALL_COUNTS.clear()\n",
    ],
)
def test_the_program_cannot_import_the_harness(route):
    result = run([request(route + ORDINARY_CODE, world="edited", mappings=INT_REMOVED)])[0]
    assert not result["load_ok"] and not result["full_pass"]
    assert result["error_type"] in {"ImportError", "ModuleNotFoundError", "AttributeError"}
    assert result["new_api_calls"] == 0


@pytest.mark.parametrize(
    "route",
    [
        "import posix\nfd = posix.open(TARGET, posix.O_WRONLY | posix.O_TRUNC)\n",
        "import _io\n_io.open(TARGET, 'w').write('x')\n",
        "import _io\n_io.FileIO(TARGET, 'w').write(b'x')\n",
        "import posix\nposix.mkdir(TARGET + '.d')\n",
        "import os\nos.utime(TARGET, (0, 0))\n",
        "import multiprocessing.util as u\nu.spawnv_passfds('/bin/rm', ['rm', TARGET], [])\n",
        # The arguments do not matter: the call is refused before anything runs.
        "import _posixsubprocess\n_posixsubprocess.fork_exec([b'/bin/rm'], [TARGET.encode()])\n",
    ],
)
def test_nothing_outside_the_sample_directory_changes(route, sentinel):
    before = sentinel.stat().st_mtime_ns
    code = f"TARGET = {str(sentinel)!r}\n" + route + ORDINARY_CODE
    result = run([request(code)])[0]
    assert not result["full_pass"]
    assert result["error_type"] == "guard_violation", result["error_message"]
    assert sentinel.stat().st_mtime_ns == before


def test_only_the_completion_is_scored_for_removed_api_references():
    abs_removed = [mapping("builtins.abs", "my_builtin_abs", "relocate", {"usage": "same"})]
    prompt = "def helper(x):\n    return abs(x)\n\n\ndef add_one(x):\n"
    completion = "    return x + 1\n"
    scored = request(prompt + completion, world="edited", mappings=abs_removed, scored_from_line=5)
    whole = request(prompt + completion, world="edited", mappings=abs_removed)
    scored_result, whole_result = run([scored, whole])
    assert scored_result["old_api_refs"] == 0 and scored_result["full_pass"]
    assert whole_result["old_api_refs"] == 1 and whole_result["error_type"] == "removed_api"
    # Names keep the meaning the prompt's imports give them.
    heappush_removed = [
        mapping("heapq.heappush", "heapq.push_item_v2", "rename", {"usage": "same"})
    ]
    code = "import heapq\n\ndef add_one(x):\n    h = []\n    heapq.heappush(h, x)\n    return h[0] + 1\n"
    result = run([request(code, world="edited", mappings=heappush_removed, scored_from_line=3)])[0]
    assert result["old_api_refs"] == 1 and not result["compiles"]


def test_scored_from_line_is_validated():
    with pytest.raises(SandboxRequestError, match="scored_from_line"):
        run([request(ORDINARY_CODE, scored_from_line=0)])
