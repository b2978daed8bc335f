"""Edit cost on the embedded Gemma 3 270M on CPU: time and peak memory of one edit per method,
and covariance collection cold versus cached.

The request is a realistic code edit (``os.path.join`` -> ``my_os_path_join`` with a list). Each
method runs in its own fresh process (so memory freed by one method cannot hide another's peak):
the child loads the model and the cached covariance, samples the context templates once (timed
separately: a run does this once per model), then edits the unedited model once (hyperparameters
from conf/base/parameters_editing.yml), scores it with the token-level edit metrics and restores it
(the weight checksum is verified). Peak memory is the process RSS high-water sampled every 5 ms
during the edit (tracemalloc cannot see torch allocations), reported as the increase over the RSS
before the edit. Covariance uses a small token budget so the benchmark finishes in minutes; the
budget is in the output.

Usage: python benchmarks/edit_cost.py [--token-budget 8000] [--threads 1] [--methods rome,memit,...]
Prints a table and one summary line; writes benchmarks/results/edit_cost.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import torch
import yaml

from apiedit_kedro.editing import (
    METHODS,
    apply_edits,
    covariance_layers,
    load_or_compute_covariance,
    weight_checksum,
)
from apiedit_kedro.editing.grace import query_at
from apiedit_kedro.editing.target import context_prefixes
from apiedit_kedro.metrics.edit_metrics import locality, next_token_predictions, rewrite_accuracy
from apiedit_kedro.models.loading import load_model

logger = logging.getLogger("edit_cost")

ROOT = Path(__file__).resolve().parents[1]
RESULT_PATH = ROOT / "benchmarks" / "results" / "edit_cost.json"
REQUEST = {
    "edit_id": "os.path.join",
    "prompt": "import os\n\ndef build(root, name):\n    return ",
    "target_new": "my_os_path_join([root, name])",
}
LOCALITY_PROMPTS = [
    "def add(a, b):\n    return ",
    "import math\n\ndef area(r):\n    return math.",
    "for i in range(10):\n    print(",
]


class PeakRss:
    """Samples the process RSS in a thread; ``peak`` is the high-water mark while active."""

    def __init__(self, interval: float = 0.005) -> None:
        self.process = psutil.Process()
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(self.interval)

    def __enter__(self) -> PeakRss:
        self.peak = self.process.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)


def _greedy(model, tokenizer, prompt: str, tokens: int) -> str:
    ids = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=tokens, do_sample=False)
    return tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)


def _model_card() -> dict:
    path = ROOT / "conf" / "base" / "parameters_model.yml"
    card = yaml.safe_load(path.read_text())["model"]
    return {**card, "device": "cpu"}


def _covariance(model, tokenizer, params: dict, budget: int, directory: Path) -> tuple:
    layers = covariance_layers(params)
    settings = params["covariance"]
    timings = {}
    stats = None
    for label in ("cold", "cached"):
        started = time.perf_counter()
        stats = load_or_compute_covariance(
            model,
            tokenizer,
            layers,
            corpus=settings["corpus"],
            token_budget=budget,
            max_len=settings["max_len"],
            cache_dir=directory,
        )
        timings[label] = time.perf_counter() - started
        assert stats.metadata["cache"] == ("miss" if label == "cold" else "hit")
    return stats, {
        "layers": layers,
        "token_budget": budget,
        "seconds_cold": timings["cold"],
        "seconds_cached": timings["cached"],
    }


def _edit_once(model, tokenizer, method: str, params: dict, covariance, baseline: dict) -> dict:
    checksum = weight_checksum(model)
    rss_before = psutil.Process().memory_info().rss
    with PeakRss() as peak:
        started = time.perf_counter()
        result = apply_edits(
            model,
            tokenizer,
            [REQUEST],
            method=method,
            hparams=params[method],
            covariance=covariance,
        )
        seconds = time.perf_counter() - started
    # GRACE's replace_last queries a forward's last position; teacher forcing names the prompt's
    with query_at(model, len(tokenizer(REQUEST["prompt"])["input_ids"]) - 1):
        accuracy = rewrite_accuracy(model, tokenizer, REQUEST["prompt"], REQUEST["target_new"])
    continuation = _greedy(model, tokenizer, REQUEST["prompt"], 12)
    kept = locality(model, tokenizer, LOCALITY_PROMPTS, baseline["locality_predictions"])
    result.restore(model)
    assert weight_checksum(model) == checksum, f"{method}: restore was not exact"
    stats = result.stats[0]
    return {
        "method": method,
        "seconds": seconds,
        "peak_rss_mb": peak.peak / 2**20,
        "extra_rss_mb": (peak.peak - rss_before) / 2**20,
        "final_loss": stats["final_loss"],
        "delta_norm": stats["delta_norm"],
        "rewrite_acc_before": baseline["rewrite_acc"],
        "rewrite_acc_after": accuracy,
        "greedy_starts_with_target": continuation.startswith(REQUEST["target_new"]),
        "greedy_continuation": continuation,
        "locality": kept,
        "restore_exact": True,
    }


def _load(threads: int):
    torch.set_num_threads(threads)
    started = time.perf_counter()
    loaded = load_model(_model_card())
    return loaded, time.perf_counter() - started


def _child(args, params: dict) -> None:
    """Measure one method in this (fresh) process; writes one JSON row to stdout."""
    loaded, _ = _load(args.threads)
    model, tokenizer = loaded.model, loaded.tokenizer
    settings = params["covariance"]
    covariance = load_or_compute_covariance(
        model,
        tokenizer,
        covariance_layers(params),
        corpus=settings["corpus"],
        token_budget=args.token_budget,
        max_len=settings["max_len"],
        cache_dir=args.cache_dir,
    )
    baseline = {
        "rewrite_acc": rewrite_accuracy(model, tokenizer, REQUEST["prompt"], REQUEST["target_new"]),
        "locality_predictions": next_token_predictions(model, tokenizer, LOCALITY_PROMPTS),
    }
    hparams = params[args.only]["hparams"]
    template_seconds = 0.0
    if "context_template_length_params" in hparams:
        started = time.perf_counter()
        context_prefixes(
            model, tokenizer, hparams["context_template_length_params"], int(hparams.get("seed", 0))
        )
        template_seconds = time.perf_counter() - started
    row = _edit_once(model, tokenizer, args.only, params, covariance, baseline)
    row["template_seconds"] = template_seconds
    sys.stdout.write(json.dumps(row) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--token-budget", type=int, default=8000)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (1 is fastest on a busy 2-core box)",
    )
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--output", type=Path, default=RESULT_PATH)
    parser.add_argument("--only", help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr
    )
    params = yaml.safe_load((ROOT / "conf" / "base" / "parameters_editing.yml").read_text())
    if args.only:
        _child(args, params)
        return
    loaded, load_seconds = _load(args.threads)
    model, tokenizer = loaded.model, loaded.tokenizer
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        _stats, covariance_report = _covariance(
            model, tokenizer, params, args.token_budget, Path(directory)
        )
        for method in args.methods.split(","):
            command = [
                sys.executable,
                __file__,
                "--only",
                method,
                "--cache-dir",
                directory,
                "--token-budget",
                str(args.token_budget),
                "--threads",
                str(args.threads),
            ]
            completed = subprocess.run(command, check=True, capture_output=True, text=True)
            rows.append(json.loads(completed.stdout.strip().splitlines()[-1]))
            logger.info(
                "%s: %.1fs, +%.0f MB", method, rows[-1]["seconds"], rows[-1]["extra_rss_mb"]
            )
    report = {
        "model": loaded.card.name,
        "parameters_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "dtype": str(next(model.parameters()).dtype),
        "torch_threads": args.threads,
        "cpu_count": os.cpu_count(),
        "load_average_1m": os.getloadavg()[0],
        "platform": platform.platform(),
        "model_load_seconds": load_seconds,
        "request": REQUEST,
        "covariance": covariance_report,
        "methods": rows,
        "note": "seconds = one edit incl. apply_edits' checksum; template_seconds = sampling the context templates (once per model per run, ROME/MEMIT/PMET)",
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        f"{'method':<7} {'seconds':>8} {'templates s':>11} {'extra RSS MB':>12} {'rewrite acc':>12} {'greedy=target':>13} {'locality':>8}"
    ]
    lines += [
        f"{r['method']:<7} {r['seconds']:>8.1f} {r['template_seconds']:>11.1f} {r['extra_rss_mb']:>12.0f} "
        f"{r['rewrite_acc_before']:>5.2f}->{r['rewrite_acc_after']:<5.2f} {r['greedy_starts_with_target']!s:>13} {r['locality']:>8.2f}"
        for r in rows
    ]
    cov = covariance_report
    lines.append(
        f"covariance layers {cov['layers']}, {cov['token_budget']} tokens: cold {cov['seconds_cold']:.1f}s, "
        f"cached {cov['seconds_cached']:.2f}s ({cov['seconds_cold'] / max(cov['seconds_cached'], 1e-9):.0f}x)"
    )
    fastest = min(rows, key=lambda r: r["seconds"])
    lines.append(
        f"edit_cost: {loaded.card.name} on CPU ({args.threads} thread(s), load {report['load_average_1m']:.1f}): "
        + ", ".join(f"{r['method']} {r['seconds']:.1f}s" for r in rows)
        + f"; fastest {fastest['method']}; covariance cached/cold {cov['seconds_cached']:.2f}/{cov['seconds_cold']:.1f}s"
    )
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
