"""Where the time of a default `kedro run` goes, phase by phase, and this machine's roofline.

Runs the whole default study (`kedro run`, all five pipelines, base environment) in-process on a
fresh data root and charges every second of it to exactly one phase. Phases nest (a forward pass
inside an edit is edit time; the vocabulary head inside a decode forward is head time), so each
phase's time is its own time minus that of the phases inside it, and the rows add up to the run's
wall time:

- model load, covariance statistics, each method's edit (`apply_edits`), edit metrics,
  restore/checksum;
- generation: prefill forwards, decode forwards, the vocabulary head inside them, sampling, stop
  checks, the generation cache, and the rest of the decode loop (padding, detokenising);
- sandbox executions, Kedro dataset loads and saves, the rest of each pipeline's nodes, and the
  framework outside nodes (session, config, runner).

The timers wrap the engines' functions where the nodes call them and use forward hooks for the
model, so the code under test runs unchanged. In the same run a matmul microbenchmark times the
head's GEMM (rows x hidden @ hidden x vocab) at 1 and 16 rows, giving this machine's sustained
GFLOP/s and the resulting tokens/s ceiling of a decode step. Prints a table and writes
benchmarks/results/profile_default_run.json.

    python benchmarks/profile_default_run.py --data-root /tmp/profile_run
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import shutil
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from kedro.framework.hooks import hook_impl

logger = logging.getLogger("profile_default_run")
ROOT = Path(__file__).resolve().parents[1]


class PhaseClock:
    """Charges elapsed time to the innermost open phase, so nested phases never double-count."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._stack: list[str] = []
        self.pipeline = ""  # the pipeline of the running node, for phases shared by several
        self._last = time.perf_counter()

    def _charge(self) -> None:
        now = time.perf_counter()
        self.seconds[self._stack[-1] if self._stack else "framework outside nodes"] += (
            now - self._last
        )
        self._last = now

    def enter(self, phase: str) -> None:
        self._charge()
        self._stack.append(phase)
        self.calls[phase] += 1

    def exit(self) -> None:
        self._charge()
        self._stack.pop()

    def inside(self, prefix: str) -> bool:
        return any(phase.startswith(prefix) for phase in self._stack)

    def timed(self, function: Callable, phase: Callable[..., str] | str) -> Callable:
        def wrapper(*args, **kwargs):
            self.enter(phase(*args, **kwargs) if callable(phase) else phase)
            try:
                return function(*args, **kwargs)
            finally:
                self.exit()

        wrapper.__wrapped__ = function
        return wrapper

    def restart(self) -> None:
        """Forget everything before now (imports, patching)."""
        self.seconds.clear()
        self.calls.clear()
        self._last = time.perf_counter()

    def close(self) -> None:
        self._charge()


def patch_everywhere(original: Callable, replacement: Callable) -> int:
    """Replace `original` in every project module that holds it (`from x import f` copies)."""
    replaced = 0
    for name, module in list(sys.modules.items()):
        if not name.startswith("apiedit_kedro") or module is None:
            continue
        for attribute, value in list(vars(module).items()):
            if value is original:
                setattr(module, attribute, replacement)
                replaced += 1
    return replaced


def hook_model(clock: PhaseClock, model) -> None:
    """Forward passes during generation are prefill (several tokens) or decode (one token);
    a forward elsewhere (an edit's optimisation, edit metrics) stays with its caller's phase."""
    opened: list[bool] = []

    def open_if(phase: str | None) -> None:
        opened.append(phase is not None)
        if phase is not None:
            clock.enter(phase)

    def close_last(*_) -> None:
        if opened.pop():
            clock.exit()

    def before(module, args, kwargs):
        ids = kwargs.get("input_ids")
        long = ids is not None and ids.shape[1] > 1
        phase = "generation: prefill forward" if long else "generation: decode forward"
        open_if(phase if clock.inside("generation") else None)

    def head_before(module, args):
        open_if("generation: vocabulary head (in forwards)" if clock.inside("generation") else None)

    model.register_forward_pre_hook(before, with_kwargs=True)
    model.register_forward_hook(lambda module, args, kwargs, output: close_last(), with_kwargs=True)
    model.lm_head.register_forward_pre_hook(head_before)
    model.lm_head.register_forward_hook(close_last)


class _KedroPhases:
    """Kedro hooks: dataset I/O and the rest of each node, by pipeline."""

    def __init__(self, clock: PhaseClock, pipeline_of: dict[str, str]) -> None:
        self.clock = clock
        self.pipeline_of = pipeline_of

    @hook_impl
    def before_dataset_loaded(self, dataset_name, node):
        self.clock.enter("kedro dataset load")

    @hook_impl
    def after_dataset_loaded(self, dataset_name, data, node):
        self.clock.exit()

    @hook_impl
    def before_dataset_saved(self, dataset_name, data, node):
        self.clock.enter("kedro dataset save")

    @hook_impl
    def after_dataset_saved(self, dataset_name, data, node):
        self.clock.exit()

    @hook_impl
    def before_node_run(self, node):
        self.clock.pipeline = self.pipeline_of.get(node.name, "other")
        self.clock.enter(f"rest of {self.clock.pipeline} nodes")

    @hook_impl
    def after_node_run(self, node):
        self.clock.exit()

    @hook_impl
    def on_node_error(self, node):
        self.clock.exit()


def install_timers(clock: PhaseClock) -> None:
    """Wrap the engine entry points the nodes call (imports first, so every copy is found)."""
    # the node modules import the engines' functions by name; load them before patching
    for pipeline in ("editing", "evaluation", "synthesis", "adoption"):
        importlib.import_module(f"apiedit_kedro.pipelines.{pipeline}.nodes")
    from apiedit_kedro import editing, sandbox
    from apiedit_kedro.editing import result
    from apiedit_kedro.metrics import edit_metrics
    from apiedit_kedro.models import cache, generation, loading

    original_load = loading.load_model

    def load_and_hook(card):
        loaded = original_load(card)
        hook_model(clock, loaded.model)
        return loaded

    patch_everywhere(original_load, clock.timed(load_and_hook, "model load"))
    patch_everywhere(
        editing.load_or_compute_covariance,
        clock.timed(editing.load_or_compute_covariance, "covariance statistics"),
    )
    patch_everywhere(
        editing.apply_edits,
        clock.timed(editing.apply_edits, lambda *a, method, **k: f"edit: {method}"),
    )
    for function in (edit_metrics.edit_metrics, edit_metrics.next_token_predictions):
        patch_everywhere(function, clock.timed(function, "edit metrics (next-token accuracy)"))
    patch_everywhere(
        editing.weight_checksum, clock.timed(editing.weight_checksum, "restore and checksums")
    )
    result.EditResult.restore = clock.timed(result.EditResult.restore, "restore and checksums")
    patch_everywhere(
        generation.generate_jobs,
        clock.timed(generation.generate_jobs, "generation: decode loop, padding, detokenise"),
    )
    generation._draw = clock.timed(generation._draw, "generation: sampling")
    generation._StopChecker.stopped = clock.timed(
        generation._StopChecker.stopped, "generation: stop checks"
    )
    for name in ("get_many", "put_many"):
        method = getattr(cache.GenerationCache, name)
        setattr(cache.GenerationCache, name, clock.timed(method, "generation cache (sqlite)"))
    patch_everywhere(
        sandbox.execute,
        clock.timed(sandbox.execute, lambda *a, **k: f"sandbox executions ({clock.pipeline})"),
    )


def head_roofline(hidden: int, vocab: int, rows: list[int], repeats: int) -> dict:
    import torch

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


def run_default_study(clock: PhaseClock, env: str | None, params: dict[str, str]) -> float:
    from kedro.framework.project import configure_project, pipelines
    from kedro.framework.session import KedroSession

    configure_project("apiedit_kedro")
    pipeline_of = {
        node.name: name
        for name in ("synthesis", "instant", "sequential", "evaluation", "adoption")
        for node in pipelines[name].nodes
    }
    install_timers(clock)
    clock.restart()
    started = time.perf_counter()
    with KedroSession.create(project_path=ROOT, env=env, runtime_params=params) as session:
        session._hook_manager.register(_KedroPhases(clock, pipeline_of))
        session.run()
    clock.close()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=Path("/tmp/profile_default_run"))
    parser.add_argument("--env", default=None, help="Kedro environment (default: base)")
    parser.add_argument(
        "--params",
        default="",
        help="extra runtime parameters, key=value,... (e.g. for a quick check on --env=tiny)",
    )
    parser.add_argument(
        "--output", type=Path, default=ROOT / "benchmarks/results/profile_default_run.json"
    )
    args = parser.parse_args()
    # Imported here, not at the top: the sandbox's workers import this script as `__mp_main__`,
    # and a worker should not carry torch (a kedro run's workers do not).
    import torch
    import yaml

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.data_root.exists():
        shutil.rmtree(args.data_root)  # a warm generation cache would hide the generation time

    clock = PhaseClock()
    # typed as `kedro run --params` types them (numbers are numbers)
    params = {
        key: yaml.safe_load(value)
        for key, value in (item.split("=", 1) for item in args.params.split(",") if item)
    }
    wall = run_default_study(clock, args.env, {**params, "data_root": str(args.data_root)})
    phases = sorted(clock.seconds.items(), key=lambda item: -item[1])

    from apiedit_kedro.models.loading import load_model

    card = yaml.safe_load((ROOT / "conf/base/parameters_model.yml").read_text())["model"]
    model = load_model({**card, "device": "cpu"}).model  # the embedded model's head, always
    hidden, vocab = model.config.hidden_size, model.config.vocab_size
    # Tied embeddings: the head's matrix is the embedding table, used once as a GEMM per token.
    flop_per_token = 2 * sum(p.numel() for p in model.parameters())
    roofline = head_roofline(hidden, vocab, [1, 16], repeats=5)
    best = max(r["gflop_per_s"] for r in roofline.values())
    result = {
        "model": card["name"],
        "env": args.env or "base",
        "params": params,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "wall_seconds": round(wall, 1),
        "phases": [
            {
                "phase": phase,
                "seconds": round(seconds, 2),
                "share": round(seconds / wall, 4),
                "calls": clock.calls.get(phase, 0),
            }
            for phase, seconds in phases
        ],
        "head_gemm": {"hidden": hidden, "vocab": vocab, "by_rows": roofline},
        "gflop_per_token": round(flop_per_token / 1e9, 3),
        "tokens_per_s_ceiling": round(best * 1e9 / flop_per_token, 1),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    for row in result["phases"]:
        print(  # noqa: T201 - the profile's table
            f"{row['phase']:48s} {row['seconds']:8.1f} s {100 * row['share']:5.1f} % "
            f"{row['calls']:6d} calls"
        )
    print(  # noqa: T201
        f"default kedro run: {wall:.1f} s wall; head GEMM {roofline} GFLOP/s -> ceiling "
        f"{result['tokens_per_s_ceiling']} tokens/s ({result['gflop_per_token']} GFLOP/token); "
        f"load {result['load_average_at_end']}"
    )


if __name__ == "__main__":
    main()
