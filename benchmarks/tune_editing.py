"""The small models' editing hyperparameters, chosen by one rule for every method: the same search
budget on development requests that no benchmark item shares a problem with.

Rule. Each method gets the same number of candidate configurations (a 2 x 2 grid over the
method's two main knobs, one corner of which is the value derived from the published 7B config by
relative depth and width). Every candidate edits every development request once, from the
unedited model (the same measurement as ``benchmarks/edit_cost.py``, in a fresh process per
candidate). The winner has the most successes (the greedy continuation starts with
``target_new``), then the highest locality (share of unrelated prompts whose next token is
unchanged), then the highest mean rewrite accuracy, then the lowest seconds per edit.

Development requests. They are built from the MBPP tasks the synthesis never turns into items
(``synthesis.excluded_mbpp_ids``: tasks 1-10 and the spare shots), with the benchmark's own
engines: ``plan_items`` rewrites each solution for one catalogued API it uses, ``call_context``
cuts the prompt at the first new-API call, ``choose_subjects`` picks the subject; rephrase prompts
are other development items of the same API, locality prompts the excluded tasks that use no
catalogued API. ``--freeze`` writes them once to ``benchmarks/edit_tuning_requests.json`` (one
request per API, APIs in a seeded shuffle); the search reads that file, so a change to the
catalogue cannot move the development set silently.

Usage: python benchmarks/tune_editing.py --freeze
       python benchmarks/tune_editing.py [--env smollm2_135m] [--jobs 2] [--methods rome,...]
                                         [--reselect]
Prints one table and the winners; writes benchmarks/results/edit_tuning.json (edit_tuning_<env>.json
for another environment). The winners are copied by hand into the environment's
parameters_editing.yml (conf/base for Gemma 3), next to the table.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import random
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import yaml

from apiedit_kedro.apis.catalog import catalog_to_records
from apiedit_kedro.apis.mapping import parse_mappings
from apiedit_kedro.benchmark.edit_requests import (
    EDIT_REQUEST_COLUMNS,
    call_context,
    choose_subjects,
    locality_prompt,
)
from apiedit_kedro.benchmark.items import plan_items
from apiedit_kedro.editing import METHODS
from apiedit_kedro.pipelines.synthesis.nodes import detect_usages
from apiedit_kedro.problems import PROBLEM_COLUMNS, mbpp_problems

logger = logging.getLogger("tune_editing")

ROOT = Path(__file__).resolve().parents[1]
EDIT_COST = ROOT / "benchmarks" / "edit_cost.py"
DEV_REQUESTS_PATH = ROOT / "benchmarks" / "edit_tuning_requests.json"
RESULT_PATH = ROOT / "benchmarks" / "results" / "edit_tuning.json"
FREEZE_SEED = 2511
DEV_COUNT = 6
N_REPHRASE = 3
N_LOCALITY = 3

# Per model environment and method two knobs, two values each; the first value of each is the
# derived one, so the first candidate is the configuration before tuning. The second values of a
# model sit where Gemma 3's do relative to its depth (layer l of 18 -> round(l * L / 18)) and its
# derived lambda (300 / 2791 of it). Layer sets of MEMIT/PMET stay fixed, so every candidate reads
# the same covariance statistics.
GRIDS: dict[str, dict[str, dict[str, list]]] = {
    "base": {
        "ft": {"layers": [[12], [6]], "norm_constraint": [1.0e-4, 1.0e-3]},
        "grace": {"layers": [[15], [8]], "edit_lr": [1.0, 3.0]},
        "rome": {"layers": [[3], [5]], "v_lr": [0.5, 2.0]},
        "memit": {"mom2_update_weight": [2791.0, 300.0], "v_lr": [0.5, 2.0]},
        "pmet": {"mom2_update_weight": [2791.0, 300.0], "v_lr": [0.5, 2.0]},
    },
    "smollm2_135m": {
        "ft": {"layers": [[20], [10]], "norm_constraint": [1.0e-4, 1.0e-3]},
        "grace": {"layers": [[25], [13]], "edit_lr": [1.0, 3.0]},
        "rome": {"layers": [[5], [8]], "v_lr": [0.5, 2.0]},
        "memit": {"mom2_update_weight": [2093.0, 225.0], "v_lr": [0.5, 2.0]},
        "pmet": {"mom2_update_weight": [2093.0, 225.0], "v_lr": [0.5, 2.0]},
    },
}


def result_path(env: str = "base") -> Path:
    """Where the search of one model environment is recorded."""
    return RESULT_PATH if env == "base" else RESULT_PATH.with_name(f"edit_tuning_{env}.json")


def candidates(method: str, env: str = "base") -> list[dict]:
    """The method's grid on the environment's model as override dicts, the derived corner first."""
    (first, first_values), (second, second_values) = GRIDS[env][method].items()
    return [{first: a, second: b} for a in first_values for b in second_values]


def best_candidate(summaries: list[dict]) -> dict:
    """Most successes, then the highest locality (the edit that leaves unrelated code alone),
    then the highest mean rewrite accuracy, then the fewest seconds per edit."""
    return max(
        summaries,
        key=lambda s: (
            s["successes"],
            s["locality_mean"],
            s["rewrite_acc_mean"],
            -s["seconds_mean"],
        ),
    )


def build_dev_requests(
    mbpp_records: list[dict], catalog: dict, excluded_ids: list[int]
) -> list[dict]:
    """Edit requests from the MBPP tasks the synthesis excludes, one per API (seeded shuffle)."""
    records = catalog_to_records(catalog)
    mappings = {m.api_id: m for m in parse_mappings(records)}
    wanted = {f"MBPP/{i}" for i in excluded_ids}
    pool = pd.DataFrame(
        [p for p in mbpp_problems(mbpp_records) if p["problem_id"] in wanted],
        columns=PROBLEM_COLUMNS,
    )
    usages = detect_usages(pool, pd.DataFrame({"api_id": list(mappings)}))
    items, _ = plan_items(pool, usages, mappings)
    touching = set(usages.loc[usages["catalogued"], "problem_id"])
    untouched = pool[~pool["problem_id"].isin(touching)].sort_values("problem_id")
    locality = [
        (problem_id, locality_prompt(pd.Series({"reference_old": reference})))
        for problem_id, reference in zip(
            untouched["problem_id"], untouched["reference_solution"], strict=True
        )
    ][:N_LOCALITY]
    contexts: dict[str, list[tuple[str, str, str, str]]] = {}
    for item in items.sort_values(["api_id", "problem_id"]).itertuples(index=False):
        context = call_context(item.reference_new, mappings[item.api_id].new_name)
        if context is not None:
            contexts.setdefault(item.api_id, []).append((item.item_id, item.problem_id, *context))
    subjects = choose_subjects({api: [c[2] for c in entries] for api, entries in contexts.items()})
    apis = sorted(contexts)
    random.Random(FREEZE_SEED).shuffle(apis)
    requests = []
    for api_id in apis:
        new_name = mappings[api_id].new_name
        for index, (source_item, problem_id, prompt, target) in enumerate(contexts[api_id]):
            subject = subjects[(api_id, index)]
            if subject is None:
                continue
            others = [c for c in contexts[api_id] if c[0] != source_item and new_name not in c[2]]
            rephrase = others[:N_REPHRASE]
            requests.append(
                {
                    "edit_id": f"dev:{source_item}",
                    "api_id": api_id,
                    "seq_order": len(requests) + 1,
                    "source_item_id": source_item,
                    "source_problem_id": problem_id,
                    "prompt": prompt,
                    "target_new": target,
                    "subject": subject,
                    "rephrase_prompts": [c[2] for c in rephrase],
                    "rephrase_targets": [c[3] for c in rephrase],
                    "locality_prompts": [text for _, text in locality],
                    "locality_problem_ids": [problem_id for problem_id, _ in locality],
                }
            )
            break
        if len(requests) == DEV_COUNT:
            break
    return [{column: r[column] for column in EDIT_REQUEST_COLUMNS} for r in requests]


def _freeze() -> list[dict]:
    synthesis = yaml.safe_load((ROOT / "conf" / "base" / "parameters_synthesis.yml").read_text())
    catalog = yaml.safe_load((ROOT / "data" / "01_raw" / "api_catalog.yml").read_text())
    mbpp = [json.loads(line) for line in (ROOT / "data" / "01_raw" / "mbpp.jsonl").open()]
    requests = build_dev_requests(mbpp, catalog, synthesis["synthesis"]["excluded_mbpp_ids"])
    DEV_REQUESTS_PATH.write_text(json.dumps(requests, indent=1) + "\n")
    return requests


def _with_override(params: dict, method: str, override: dict) -> dict:
    varied = copy.deepcopy(params)
    varied[method]["hparams"].update(override)
    return varied


def _evaluate(method: str, override: dict, params: dict, args, cache_dir: Path) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as handle:
        yaml.safe_dump(_with_override(params, method, override), handle)
    command = [
        sys.executable,
        str(EDIT_COST),
        "--only",
        method,
        "--params",
        handle.name,
        "--requests",
        str(DEV_REQUESTS_PATH),
        "--cache-dir",
        str(cache_dir),
        "--token-budget",
        str(args.token_budget),
        "--threads",
        "1",
    ]
    environment = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    try:
        completed = subprocess.run(
            command, check=False, capture_output=True, text=True, env=environment
        )
    finally:
        os.unlink(handle.name)
    if completed.returncode != 0:
        raise SystemExit(f"{method} {override} failed:\n{completed.stderr[-4000:]}")
    summary = json.loads(completed.stdout.strip().splitlines()[-1])
    summary["override"] = override
    logger.info(
        "%s %s: %d/%d successes, rewrite %.2f, %.1f s/edit",
        method,
        override,
        summary["successes"],
        summary["requests"],
        summary["rewrite_acc_mean"],
        summary["seconds_mean"],
    )
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--freeze", action="store_true", help="write the development requests")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--jobs", type=int, default=2, help="candidates measured at once")
    parser.add_argument(
        "--reselect",
        action="store_true",
        help="apply the selection rule to the measurements recorded in --output (no edits)",
    )
    parser.add_argument("--token-budget", type=int, default=8000)
    parser.add_argument(
        "--env", help="Kedro environment of the model to tune (default: base, Gemma 3 270M)"
    )
    parser.add_argument("--output", type=Path, help="default: benchmarks/results/edit_tuning.json")
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr
    )
    if args.freeze:
        requests = _freeze()
        logger.info(
            "froze %d development requests into %s: %s",
            len(requests),
            DEV_REQUESTS_PATH,
            [r["edit_id"] for r in requests],
        )
        return
    if not DEV_REQUESTS_PATH.is_file():
        raise SystemExit(f"{DEV_REQUESTS_PATH} is missing: run with --freeze first")
    env = args.env or "base"
    if env not in GRIDS:
        raise SystemExit(f"--env {env}: no search grid for it; add one to GRIDS ({sorted(GRIDS)})")
    output = args.output or result_path(env)
    methods = args.methods.split(",")
    unknown = sorted(set(methods) - set(GRIDS[env]))
    if unknown:
        raise SystemExit(f"no grid for methods {unknown}; choose from {sorted(GRIDS[env])}")
    if args.reselect:
        recorded = json.loads(output.read_text())["methods"]
        _report([s for m in methods for s in recorded[m]["candidates"]], methods, env, output)
        return
    # the sibling script (python puts benchmarks/ on sys.path); it reads conf as `kedro run` does
    from edit_cost import project_parameters

    params = project_parameters(ROOT, args.env)
    with tempfile.TemporaryDirectory() as cache:
        # one child fills the covariance cache first, so parallel children only read it
        jobs = [(m, o) for m in methods for o in candidates(m, env)]
        first = _evaluate(*jobs[0], params, args, Path(cache))
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            rest = list(pool.map(lambda job: _evaluate(*job, params, args, Path(cache)), jobs[1:]))
    _report([first, *rest], methods, env, output)


def _report(summaries: list[dict], methods: list[str], env: str, output: Path) -> None:
    report = {"rule": __doc__.split("\n\n")[1], "env": env, "grid": GRIDS[env], "methods": {}}
    lines = [
        f"{'method':<6} {'candidate':<48} {'success':>8} {'locality':>8} {'rewrite':>8} "
        f"{'s/edit':>7}"
    ]
    for method in methods:
        mine = [s for s in summaries if s["method"] == method]
        winner = best_candidate(mine)
        report["methods"][method] = {"winner": winner["override"], "candidates": mine}
        for s in mine:
            mark = " *" if s is winner else ""
            lines.append(
                f"{method:<6} {json.dumps(s['override']):<48} {s['successes']:>3}/{s['requests']:<4} "
                f"{s['locality_mean']:>8.2f} {s['rewrite_acc_mean']:>8.2f} "
                f"{s['seconds_mean']:>7.1f}{mark}"
            )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    logger.info("\n%s", "\n".join(lines))
    logger.info(
        "tune_editing winners: %s",
        {m: report["methods"][m]["winner"] for m in methods},
    )


if __name__ == "__main__":
    main()
