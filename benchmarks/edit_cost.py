"""Edit cost and edit quality per method on a small model on CPU (the embedded Gemma 3 270M, or
the model of ``--env``), over a fixed set of held-out edit requests, for the current code and
(optionally) an earlier checkout of it.

The requests (``benchmarks/edit_cost_requests.json``, 12 of them) were drawn once from the
synthesized benchmark's edit requests with ``--freeze-from``: one request per API, 12 APIs chosen
with a seeded shuffle. They are held out in the sense that matters: no hyperparameter in
``conf/*/parameters_editing.yml`` was chosen by looking at them (the rule derives the small models'
values from the published 7B configs, then searches on development requests built from MBPP tasks
the benchmark never uses, ``benchmarks/tune_editing.py``).

Each (code tree, method) runs in its own fresh process, so memory freed by one method cannot hide
another's peak. The child loads the model and its covariance (computed into a cache directory per
tree, so the cold/cached timing is the current tree's), samples the context templates once (timed
apart: a run does it once per model), then for every request edits the unedited model, scores it
and restores it (the weight checksum is verified after every restore). Per request it records:

- success: the greedy continuation of the prompt starts with ``target_new``;
- rewrite / rephrase accuracy (teacher-forced, the study's ``metrics.edit_metrics``), locality
  (share of the request's locality prompts whose next token is unchanged);
- seconds of the edit and the process RSS high-water mark, sampled every 5 ms (tracemalloc cannot
  see torch allocations), reported as the increase over the RSS before the first edit.

``--covariance-order path`` is a diagnostic: the children read the covariance corpus's blocks in
path order (the alphabetical prefix that ``editing/covariance.py`` read before it sampled) instead
of the seeded random order, to isolate what the sampled C changes in a method's results.

``--baseline-tree PATH`` also runs every method from another checkout (its ``src/`` first on
``PYTHONPATH`` and its own ``conf/``), scored by that checkout's metrics; the table then shows
both, measured in the same run on the same machine. ``--env NAME`` reads the model card and the
editing hyperparameters as ``kedro run --env NAME`` would (the project's own config loader, base
deep-merged with the environment).

Usage: python benchmarks/edit_cost.py [--env smollm2_135m] [--token-budget 8000] [--threads 1]
       [--methods rome,...] [--baseline-tree /path/to/older/checkout [--side-by-side]]
       [--covariance-order path --output benchmarks/results/edit_cost_path_order.json]
Prints a table and one summary line; writes benchmarks/results/edit_cost.json (or
edit_cost_<env>.json).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
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
from apiedit_kedro.editing.target import context_prefixes
from apiedit_kedro.metrics.edit_metrics import locality, next_token_predictions, rewrite_accuracy
from apiedit_kedro.models.loading import load_model

logger = logging.getLogger("edit_cost")

ROOT = Path(__file__).resolve().parents[1]
RESULT_PATH = ROOT / "benchmarks" / "results" / "edit_cost.json"
REQUESTS_PATH = ROOT / "benchmarks" / "edit_cost_requests.json"
FREEZE_SEED = 2511
FREEZE_COUNT = 12


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


def freeze_requests(parquet: Path, output: Path) -> list[dict]:
    """Draw the fixed request set from a synthesized ``edit_requests`` parquet file."""
    # imported here: the children also run this file against an older checkout's `src/`, which
    # may predate the benchmark engine
    import pandas as pd

    from apiedit_kedro.benchmark.edit_requests import EDIT_REQUEST_COLUMNS

    table = pd.read_parquet(parquet)
    missing = [c for c in EDIT_REQUEST_COLUMNS if c not in table.columns]
    if missing:
        raise SystemExit(f"{parquet}: edit_requests lacks columns {missing}; re-run synthesis")
    apis = sorted(table["api_id"].unique())
    random.Random(FREEZE_SEED).shuffle(apis)
    first_per_api = table.sort_values("edit_id").drop_duplicates("api_id")
    chosen = first_per_api.set_index("api_id").loc[apis[:FREEZE_COUNT]].reset_index()
    records = json.loads(chosen[EDIT_REQUEST_COLUMNS].to_json(orient="records"))
    output.write_text(json.dumps(records, indent=1) + "\n")
    return records


def _greedy_success(model, tokenizer, prompt: str, target: str) -> tuple[bool, str]:
    ids = tokenizer(prompt, return_tensors="pt")
    budget = len(tokenizer(target, add_special_tokens=False)["input_ids"]) + 2
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=budget, do_sample=False)
    text = tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    return text.startswith(target), text


def _rephrase_accuracy(model, tokenizer, request: dict) -> float:
    scores = [
        rewrite_accuracy(model, tokenizer, prompt, target)
        for prompt, target in zip(
            request["rephrase_prompts"], request["rephrase_targets"], strict=True
        )
    ]
    return sum(scores) / len(scores) if scores else float("nan")


def _scores(model, tokenizer, request: dict, locality_before: list[int]) -> dict:
    success, continuation = _greedy_success(
        model, tokenizer, request["prompt"], request["target_new"]
    )
    return {
        "success": success,
        "continuation": continuation,
        "rewrite_acc": rewrite_accuracy(model, tokenizer, request["prompt"], request["target_new"]),
        "rephrase_acc": _rephrase_accuracy(model, tokenizer, request),
        "locality": locality(model, tokenizer, request["locality_prompts"], locality_before),
    }


def project_parameters(tree: Path, env: str | None) -> dict:
    """The parameters ``kedro run --env env`` sees in checkout ``tree`` (None: the default run)."""
    from kedro.config import OmegaConfigLoader

    from apiedit_kedro.settings import CONFIG_LOADER_ARGS

    if env is not None and not (tree / "conf" / env).is_dir():
        known = sorted(p.name for p in (tree / "conf").iterdir() if p.is_dir())
        raise SystemExit(f"--env {env}: no conf/{env} in {tree}; choose one of {known}")
    loader = OmegaConfigLoader(conf_source=str(tree / "conf"), env=env, **CONFIG_LOADER_ARGS)
    return loader["parameters"]


def _load(threads: int, card: dict):
    torch.set_num_threads(threads)
    started = time.perf_counter()
    loaded = load_model({**card, "device": "cpu"})
    return loaded, time.perf_counter() - started


def _method_blocks(params: dict) -> dict:
    """The editing methods' parameter blocks out of all the project's parameters."""
    return {method: params[method] for method in METHODS if method in params}


def _covariance(model, tokenizer, params: dict, budget: int, directory: Path):
    settings = params["covariance"]
    return load_or_compute_covariance(
        model,
        tokenizer,
        covariance_layers(_method_blocks(params)),
        corpus=settings["corpus"],
        token_budget=budget,
        max_len=settings["max_len"],
        cache_dir=directory,
    )


def _read_corpus_in_path_order() -> None:
    """Make this process's covariance read the corpus blocks sorted by (file, offset)."""
    from apiedit_kedro.editing import covariance

    sampled = covariance._blocks

    def path_order(files, max_len, seed):
        return sorted(sampled(files, max_len, seed))

    # the chunk list's hash is derived from the same order, so the cache key changes with it
    covariance._blocks = path_order


def _child(args) -> None:
    """Measure one method over every request in this (fresh) process; one JSON line to stdout."""
    if args.covariance_order == "path":
        _read_corpus_in_path_order()
    params = yaml.safe_load(args.params.read_text())
    requests = json.loads(args.requests.read_text())
    loaded, _ = _load(args.threads, params["model"])
    model, tokenizer = loaded.model, loaded.tokenizer
    covariance = _covariance(model, tokenizer, params, args.token_budget, args.cache_dir)
    hparams = params[args.only]["hparams"]
    template_seconds = 0.0
    if "context_template_length_params" in hparams:
        started = time.perf_counter()
        context_prefixes(
            model, tokenizer, hparams["context_template_length_params"], int(hparams.get("seed", 0))
        )
        template_seconds = time.perf_counter() - started
    checksum = weight_checksum(model)
    rss_before = psutil.Process().memory_info().rss
    peak_rss = rss_before
    rows = []
    for request in requests:
        locality_before = next_token_predictions(model, tokenizer, request["locality_prompts"])
        before = _scores(model, tokenizer, request, locality_before)
        with PeakRss() as peak:
            started = time.perf_counter()
            result = apply_edits(
                model,
                tokenizer,
                [{k: request[k] for k in ("edit_id", "prompt", "target_new", "subject")}],
                method=args.only,
                hparams=params[args.only],
                covariance=covariance,
            )
            seconds = time.perf_counter() - started
        peak_rss = max(peak_rss, peak.peak)
        after = _scores(model, tokenizer, request, locality_before)
        result.restore(model)
        if weight_checksum(model) != checksum:
            raise SystemExit(f"{args.only}: restore after {request['edit_id']} was not exact")
        rows.append(
            {
                "edit_id": request["edit_id"],
                "seconds": seconds,
                "success_before": before["success"],
                "rewrite_acc_before": before["rewrite_acc"],
                "rephrase_acc_before": before["rephrase_acc"],
                **{k: after[k] for k in ("success", "continuation", "rewrite_acc")},
                **{k: after[k] for k in ("rephrase_acc", "locality")},
            }
        )
        logger.info(
            "%s %s: %.1fs success=%s rewrite %.2f",
            args.only,
            request["edit_id"],
            seconds,
            after["success"],
            after["rewrite_acc"],
        )
    summary = {
        "method": args.only,
        "requests": len(rows),
        "successes": sum(r["success"] for r in rows),
        "successes_before": sum(r["success_before"] for r in rows),
        "seconds_mean": statistics.mean(r["seconds"] for r in rows),
        "seconds_median": statistics.median(r["seconds"] for r in rows),
        "template_seconds": template_seconds,
        "peak_rss_mb": peak_rss / 2**20,
        "extra_rss_mb": (peak_rss - rss_before) / 2**20,
        **{
            # a request without rephrase prompts has NaN there and is left out of that mean
            f"{metric}_mean": statistics.mean(r[metric] for r in rows if r[metric] == r[metric])
            for metric in (
                "rewrite_acc_before",
                "rewrite_acc",
                "rephrase_acc_before",
                "rephrase_acc",
                "locality",
            )
        },
        "per_request": rows,
    }
    sys.stdout.write(json.dumps(summary) + "\n")


def _run_method(label: str, tree: Path, method: str, args, cache_dir: Path) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as handle:
        # the model card comes from the current tree, so both trees edit the same model
        parameters = {**project_parameters(tree, args.env), "model": args.model_card}
        yaml.safe_dump(parameters, handle)
    command = [
        sys.executable,
        __file__,
        "--only",
        method,
        "--params",
        handle.name,
        "--requests",
        str(args.requests),
        "--cache-dir",
        str(cache_dir),
        "--token-budget",
        str(args.token_budget),
        "--threads",
        str(args.threads),
        "--covariance-order",
        args.covariance_order,
    ]
    environment = {**os.environ, "PYTHONPATH": str(tree / "src")}
    try:
        completed = subprocess.run(
            command, check=False, capture_output=True, text=True, env=environment
        )
    finally:
        os.unlink(handle.name)
    if completed.returncode != 0:
        raise SystemExit(f"{label} {method} failed:\n{completed.stderr[-4000:]}")
    row = json.loads(completed.stdout.strip().splitlines()[-1])
    row["tree"] = label
    row["load_average_1m_after"] = os.getloadavg()[0]
    logger.info(
        "%s %s: %d/%d successes, %.1f s/edit, +%.0f MB",
        label,
        method,
        row["successes"],
        row["requests"],
        row["seconds_mean"],
        row["extra_rss_mb"],
    )
    return row


def _table(rows: list[dict]) -> list[str]:
    lines = [
        f"{'code':<8} {'method':<6} {'success':>8} {'rewrite':>11} {'rephrase':>11} "
        f"{'locality':>8} {'s/edit':>7} {'templ s':>7} {'+RSS MB':>8}"
    ]
    for r in rows:
        lines.append(
            f"{r['tree']:<8} {r['method']:<6} {r['successes']:>3}/{r['requests']:<4} "
            f"{r['rewrite_acc_before_mean']:.2f}->{r['rewrite_acc_mean']:.2f} "
            f"{r['rephrase_acc_before_mean']:.2f}->{r['rephrase_acc_mean']:.2f} "
            f"{r['locality_mean']:>8.2f} {r['seconds_mean']:>7.1f} {r['template_seconds']:>7.1f} "
            f"{r['extra_rss_mb']:>8.0f}"
        )
    return lines


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
    parser.add_argument(
        "--covariance-order",
        choices=("sampled", "path"),
        default="sampled",
        help="diagnostic: 'path' reads the covariance corpus in path order (the old prefix)",
    )
    parser.add_argument(
        "--side-by-side",
        action="store_true",
        help="measure both trees of a method at once, one core each (halves the wall time)",
    )
    parser.add_argument(
        "--env", help="Kedro environment whose model and hyperparameters to measure (default: base)"
    )
    parser.add_argument("--output", type=Path, help="default benchmarks/results/edit_cost.json")
    parser.add_argument(
        "--baseline-tree", type=Path, help="an earlier checkout to measure in the same run"
    )
    parser.add_argument(
        "--freeze-from",
        type=Path,
        help="draw benchmarks/edit_cost_requests.json from this edit_requests parquet file, then stop",
    )
    parser.add_argument(
        "--requests",
        type=Path,
        default=REQUESTS_PATH,
        help="the request set (benchmarks/tune_editing.py passes its development requests)",
    )
    parser.add_argument("--only", help=argparse.SUPPRESS)
    parser.add_argument("--params", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr
    )
    if args.freeze_from:
        chosen = freeze_requests(args.freeze_from, REQUESTS_PATH)
        logger.info("froze %d requests into %s", len(chosen), REQUESTS_PATH)
        return
    if args.only:
        _child(args)
        return
    if not args.requests.is_file():
        raise SystemExit(
            f"{args.requests} is missing: run with --freeze-from <edit_requests parquet>"
        )
    methods = args.methods.split(",")
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise SystemExit(f"unknown methods {unknown}; choose from {list(METHODS)}")
    params = project_parameters(ROOT, args.env)
    args.model_card = params["model"]
    if args.output is None:
        suffix = f"_{args.env}" if args.env else ""
        args.output = RESULT_PATH.with_name(f"edit_cost{suffix}.json")
    if args.baseline_tree and not (args.baseline_tree / "conf").is_dir():
        raise SystemExit(f"--baseline-tree {args.baseline_tree}: not a checkout (no conf/)")
    if args.baseline_tree and args.covariance_order != "sampled":
        raise SystemExit(
            "--covariance-order path applies to the current tree only; drop --baseline-tree"
        )
    loaded, load_seconds = _load(args.threads, args.model_card)
    model, tokenizer, model_name = loaded.model, loaded.tokenizer, loaded.card.name
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        timings = {}
        for label in ("cold", "cached"):
            started = time.perf_counter()
            stats = _covariance(model, tokenizer, params, args.token_budget, Path(directory))
            timings[label] = time.perf_counter() - started
            if stats.metadata["cache"] != ("miss" if label == "cold" else "hit"):
                raise SystemExit(f"covariance cache: expected a {label} load")
        # the children load their own copy, which this one's memory would only crowd
        del loaded, model, tokenizer
        trees = [("current", ROOT, Path(directory))]
        with tempfile.TemporaryDirectory() as baseline_cache:
            if args.baseline_tree:
                trees.append(("baseline", args.baseline_tree, Path(baseline_cache)))
            # method by method, both trees back to back (or side by side, one core each), so a
            # change in the machine's load during the run falls on both sides of each comparison
            with ThreadPoolExecutor(max_workers=2 if args.side_by_side else 1) as pool:
                for method in methods:
                    rows.extend(
                        pool.map(
                            lambda tree_run, m=method: _run_method(
                                *tree_run[:2], m, args, tree_run[2]
                            ),
                            trees,
                        )
                    )
    covariance_report = {
        "layers": covariance_layers(_method_blocks(params)),
        "token_budget": args.token_budget,
        "order_in_children": args.covariance_order,
        "seconds_cold": timings["cold"],
        "seconds_cached": timings["cached"],
    }
    baseline_commit = None
    if args.baseline_tree:
        baseline_commit = subprocess.run(
            ["git", "-C", str(args.baseline_tree), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    report = {
        "model": model_name,
        "env": args.env,
        "torch_threads": args.threads,
        "side_by_side": args.side_by_side,
        "cpu_count": os.cpu_count(),
        "load_average_at_end": list(os.getloadavg()),
        "platform": platform.platform(),
        "model_load_seconds": load_seconds,
        "requests": [r["edit_id"] for r in json.loads(args.requests.read_text())],
        "baseline_commit": baseline_commit,
        "covariance": covariance_report,
        "methods": rows,
        "note": "success = greedy continuation starts with target_new; s/edit = one apply_edits "
        "call incl. its checksum; templ s = sampling the context templates once per model (ROME, "
        "MEMIT, PMET); +RSS MB = peak RSS over all edits minus RSS before the first",
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    lines = _table(rows)
    cov = covariance_report
    lines.append(
        f"covariance layers {cov['layers']}, {cov['token_budget']} tokens: cold "
        f"{cov['seconds_cold']:.1f}s, cached {cov['seconds_cached']:.2f}s"
    )
    lines.append(
        f"edit_cost: {model_name} on CPU, {len(report['requests'])} held-out requests: "
        + ", ".join(
            f"{r['tree']} {r['method']} {r['successes']}/{r['requests']} in {r['seconds_mean']:.1f}s"
            for r in rows
        )
    )
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
