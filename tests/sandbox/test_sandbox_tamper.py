"""A wrong program must not be able to write its own verdict or fake a new-API call.

Each route is tried twice, on real processes: spelled out (the static scan flags it, so the
sample is `tamper_suspect` and never passes) and with every flagged name built at run time, so
that only the run-time defences (harness not importable, frame/trace/gc access refused to
program code, plan pieces held in locals, verdicts checked by the worker) can stop it.
"""

from __future__ import annotations

import pytest
from sandbox_helpers import ORDINARY_CODE, mapping, request, run

pytestmark = pytest.mark.timeout(60)

WRONG = "def add_one(x):\n    return x\n"
TESTS = ["assert add_one(1) == 2", "assert add_one(-1) == 0"]

# Each route, written with the names it needs as `{getframe}`-style slots.
ROUTES = {
    "replace_stage_function": (
        "child = __import__({child_module}, fromlist=['x'])\n"
        "def fake(tag, code, namespace, send, budget):\n"
        "    send(tag + '\\tok\\t\\t')\n"
        "    return True\n"
        "setattr(child, '_stage', fake)\n"
    ),
    "swap_the_plan_through_frames": (
        "import sys\n"
        "frame = getattr(sys, {getframe})(0)\n"
        "while frame is not None and 'plan' not in getattr(frame, {f_locals}):\n"
        "    frame = getattr(frame, {f_back})\n"
        "plan = getattr(frame, {f_locals})['plan']\n"
        "noop = compile('pass', '<test>', 'exec')\n"
        "object.__setattr__(plan, 'units', [(i, noop) for i, _ in plan.units])\n"
    ),
    "forge_records_with_the_reply_function": (
        "import os\n"
        "gc = __import__({gc})\n"
        "for obj in getattr(gc, 'get_objects')():\n"
        "    if callable(obj) and getattr(obj, '__name__', '') == 'send' and \\\n"
        "            getattr(obj, {closure}, None):\n"
        "        for line in ['L\\tok\\t\\t', 'U\\t0\\tok\\t\\t', 'U\\t1\\tok\\t\\t', 'D']:\n"
        "            obj(line)\n"
        "        os._exit(0)\n"
    ),
    "rewrite_test_frames_with_a_tracer": (
        "import sys\n"
        "noop = compile('pass', '<test>', 'exec')\n"
        "def tracer(frame, event, arg):\n"
        "    code = getattr(frame, {f_code})\n"
        "    if event == 'call' and code.co_name == '_stage':\n"
        "        getattr(frame, {f_locals})['code'] = noop\n"
        "    return None\n"
        "getattr(sys, {settrace})(tracer)\n"
    ),
}
SPELLED = {
    "child_module": "'apiedit_kedro.sandbox.child'",
    "getframe": "'_getframe'",
    "f_locals": "'f_locals'",
    "f_back": "'f_back'",
    "f_code": "'f_code'",
    "gc": "'gc'",
    "closure": "'__closure__'",
    "settrace": "'settrace'",
}
BUILT_AT_RUN_TIME = {
    "child_module": "'apiedit' + '_kedro.sandbox.child'",
    "getframe": "'_get' + 'frame'",
    "f_locals": "'f_lo' + 'cals'",
    "f_back": "'f_ba' + 'ck'",
    "f_code": "'f_co' + 'de'",
    "gc": "'g' + 'c'",
    "closure": "'__clo' + 'sure__'",
    "settrace": "'set' + 'trace'",
}


@pytest.mark.parametrize("spelling", ["spelled_out", "built_at_run_time"])
@pytest.mark.parametrize("route", sorted(ROUTES))
def test_a_program_cannot_write_its_own_verdict(route: str, spelling: str):
    names = SPELLED if spelling == "spelled_out" else BUILT_AT_RUN_TIME
    code = ROUTES[route].format(**names) + WRONG
    [result] = run([request(code, TESTS)])
    assert not result["full_pass"], result
    assert result["asserts_passed"] == 0, result
    if spelling == "spelled_out":
        assert result["tamper_suspect"] and result["error_type"] == "tamper_suspect", result


def test_ordinary_programs_are_not_suspects():
    [result] = run([request(ORDINARY_CODE)])
    assert result["full_pass"] and not result["tamper_suspect"], result


@pytest.mark.parametrize(
    "module", ["'apiedit_kedro.apis.world'", "'apiedit' + '_kedro.apis.world'"]
)
def test_a_program_cannot_count_a_new_api_call_it_did_not_make(module: str):
    # A workaround (no new-API call) that bumps the counters would read as correct adoption.
    code = (
        f"world = __import__({module}, fromlist=['x'])\n"
        "counts = getattr(world, '_CALL' + '_COUNTS')\n"
        "for api_id in list(counts):\n"
        "    counts[api_id] += 5\n" + ORDINARY_CODE
    )
    mappings = [mapping("heapq.heappush", "heapq.push_item_v2", "rename")]
    [result] = run([request(code, world="edited", mappings=mappings)])
    assert result["new_api_calls"] == 0, result
    assert not result["full_pass"], result


@pytest.mark.parametrize(
    ("name", "raise_it"),
    [
        ("UnitTimeout", "raise UnitTimeout('x')"),
        ("timeout", "raise timeout('x')"),
        ("sandbox_error", "raise sandbox_error('x')"),
        ("GuardViolation", "raise GuardViolation('x')"),
        ("MemoryError", "raise MemoryError('x')"),
    ],
)
def test_a_program_exception_cannot_spoof_a_harness_error_type(name: str, raise_it: str):
    base = "BaseException" if name == "UnitTimeout" else "Exception"
    code = f"class {name}({base}):\n    pass\ndef add_one(x):\n    {raise_it}\n"
    [result] = run([request(code, TESTS)])
    assert result["error_type"] == f"__main__.{name}", result
    assert not result["timed_out"], result


def test_a_real_builtin_exception_keeps_its_bare_name():
    [result] = run([request("def add_one(x):\n    raise MemoryError('big')\n", TESTS)])
    assert result["error_type"] == "memory_limit", result
    [result] = run([request("def add_one(x):\n    return {}[x]\n", TESTS)])
    assert result["error_type"] == "KeyError", result
