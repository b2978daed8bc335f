"""Nodes of the `synthesis` pipeline: from the API catalogue and the raw problems to a validated
benchmark of items and one edit request per reliability item.

Every node is a small adapter; the engines (`apis`, `problems`, `benchmark`, `sandbox`) do the work.
Nothing is dropped silently: each exclusion becomes a row of `synthesis_report` with its stage and
reason.
"""

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from apiedit_kedro.apis.catalog import MAPPING_COLUMNS, catalog_to_records
from apiedit_kedro.apis.mapping import parse_mappings
from apiedit_kedro.apis.usages import detect_api_uses
from apiedit_kedro.benchmark import (
    SynthesisSettings,
    as_list,
    assemble,
    build_edit_requests,
    exclusion_rows,
    failure_rows,
    instant_valid_items,
    plan_items,
    report_row,
    sequential_order,
    summarise,
    validate_instant,
    validate_sequential,
)
from apiedit_kedro.benchmark.assembly import REPORT_COLUMNS
from apiedit_kedro.problems import PROBLEM_COLUMNS, humaneval_problems, mbpp_problems
from apiedit_kedro.study.prompting import MBPP_SHOT_POOL

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- catalogue, problems
def build_api_candidates(api_catalog: dict) -> pd.DataFrame:
    """Validate the hand-edited catalogue into `api_mapping` records (one per catalogued API)."""
    records = catalog_to_records(api_catalog)
    parse_mappings(records)  # the set as a whole: unique ids, old APIs and new names
    logger.info(
        "api catalogue: %d entries, %d change the usage",
        len(records),
        sum(r["changes_usage"] for r in records),
    )
    return pd.DataFrame(records, columns=MAPPING_COLUMNS)


def normalise_problems(
    humaneval_raw: pd.DataFrame, mbpp_raw: pd.DataFrame, max_problems_per_source: int
) -> pd.DataFrame:
    """HumanEval and MBPP in one table; `max_problems_per_source` > 0 keeps a slice (tests)."""
    humaneval = humaneval_problems(humaneval_raw.to_dict("records"))
    mbpp = mbpp_problems(mbpp_raw.to_dict("records"))
    if max_problems_per_source > 0:
        humaneval = humaneval[:max_problems_per_source]
        shots = [r for r in mbpp if r["problem_id"] in MBPP_SHOT_POOL]
        mbpp = (
            shots
            + [r for r in mbpp if r["problem_id"] not in MBPP_SHOT_POOL][:max_problems_per_source]
        )
    problems = pd.DataFrame(humaneval + mbpp, columns=PROBLEM_COLUMNS)
    logger.info("problems: %d HumanEval, %d MBPP", len(humaneval), len(mbpp))
    return problems.sort_values(["source", "task_number"], ignore_index=True)


def detect_usages(problems: pd.DataFrame, api_candidates: pd.DataFrame) -> pd.DataFrame:
    """Every std-lib API each reference solution and each test suite references.

    Built-ins count only when the catalogue lists them (the detector's default scope excludes them).
    """
    catalogued = set(api_candidates["api_id"])
    builtins_in_scope = {api for api in catalogued if api.startswith("builtins.")}
    rows = []
    for problem in problems.itertuples(index=False):
        tests_source = "\n".join([problem.test_setup, *as_list(problem.tests)])
        for where, source in (("solution", problem.reference_solution), ("tests", tests_source)):
            for use in detect_api_uses(source, builtins_in_scope=builtins_in_scope):
                rows.append(
                    {
                        "problem_id": problem.problem_id,
                        "source": problem.source,
                        "where": where,
                        "api": use.api,
                        "module": use.module,
                        "name": use.name,
                        "references": use.references,
                        "calls": use.calls,
                        "is_builtin": use.is_builtin,
                        "catalogued": use.api in catalogued,
                    }
                )
    usages = pd.DataFrame(rows)
    solution = usages[usages["where"] == "solution"]
    logger.info(
        "api usages: %d distinct std-lib APIs in solutions, %d of them catalogued",
        solution["api"].nunique(),
        solution.loc[solution["catalogued"], "api"].nunique(),
    )
    return usages.sort_values(["problem_id", "where", "api"], ignore_index=True)


# --------------------------------------------------------------------------- items
def _benchmark_pool(problems: pd.DataFrame, excluded_mbpp_ids: Sequence[int]) -> pd.DataFrame:
    excluded = {f"MBPP/{i}" for i in excluded_mbpp_ids}
    shown = sorted(set(MBPP_SHOT_POOL) - excluded)
    if shown:
        raise ValueError(
            f"synthesis.excluded_mbpp_ids lacks the few-shot candidates {shown}: a prompt could show "
            "the solution of an evaluated problem; add their task numbers"
        )
    return problems[~problems["problem_id"].isin(excluded)]


def _mappings(api_candidates: pd.DataFrame) -> dict:
    return {m.api_id: m for m in parse_mappings(api_candidates.to_dict("records"))}


def plan_benchmark_items(
    problems: pd.DataFrame,
    api_usages: pd.DataFrame,
    api_candidates: pd.DataFrame,
    excluded_mbpp_ids: list[int],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One candidate item per (problem, catalogued API it uses), rewritten for that API alone."""
    pool = _benchmark_pool(problems, excluded_mbpp_ids)
    items, excluded = plan_items(pool, api_usages, _mappings(api_candidates))
    logger.info("planned %d items over %d problems", len(items), items["problem_id"].nunique())
    return items, pd.DataFrame(exclusion_rows("rewrite", excluded), columns=REPORT_COLUMNS)


def _specificity_candidates(
    pool: pd.DataFrame, api_usages: pd.DataFrame, stage_one: pd.DataFrame
) -> list[str]:
    pristine = stage_one[(stage_one["check"] == "reference_pristine") & stage_one["ok"]]
    touching = set(api_usages.loc[api_usages["catalogued"], "problem_id"])
    return sorted(set(pristine["problem_id"]) & set(pool["problem_id"]) - touching)


def validate_in_sandbox(
    problems: pd.DataFrame,
    item_candidates: pd.DataFrame,
    api_usages: pd.DataFrame,
    api_candidates: pd.DataFrame,
    params: Mapping[str, Any],
) -> pd.DataFrame:
    """Every item in its instant world, then in each sequential checkpoint world that evaluates it."""
    settings = SynthesisSettings.from_params(params)
    pool = _benchmark_pool(problems, settings.excluded_mbpp_ids)
    mappings = _mappings(api_candidates)
    stage_one = validate_instant(pool, item_candidates, mappings, settings.validation)
    valid, surviving = instant_valid_items(item_candidates, stage_one, settings.min_items_per_api)
    order = sequential_order(sorted(surviving), settings.seed)
    stage_two = validate_sequential(
        pool,
        valid,
        order,
        _specificity_candidates(pool, api_usages, stage_one),
        mappings,
        settings,
    )
    frames = [frame for frame in (stage_one, stage_two) if not frame.empty]
    validation = pd.concat(frames, ignore_index=True)
    return validation.sort_values(["problem_id", "api_id", "check", "step"], ignore_index=True)


# --------------------------------------------------------------------------- benchmark
def assemble_benchmark(
    problems: pd.DataFrame,
    item_candidates: pd.DataFrame,
    validation: pd.DataFrame,
    api_candidates: pd.DataFrame,
    params: Mapping[str, Any],
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The three subsets of items, the validated `api_mapping` (with `seq_order`), the report rows."""
    settings = SynthesisSettings.from_params(params)
    pool = _benchmark_pool(problems, settings.excluded_mbpp_ids)
    stage_one = validation[validation["check"] != "new_sequential"]
    valid, surviving = instant_valid_items(item_candidates, stage_one, settings.min_items_per_api)
    order = sequential_order(sorted(surviving), settings.seed)
    benchmark = assemble(
        pool=pool, valid_items=valid, validation=validation, order=order, settings=settings
    )
    sources = dict(zip(problems["problem_id"], problems["source"], strict=True))
    report = failure_rows(validation, sources)
    for api_id in sorted(set(api_candidates["api_id"]) - surviving):
        report.append(
            report_row(
                "dropped_api",
                "validation",
                f"fewer than {settings.min_items_per_api} items passed every instant check",
                api_id=api_id,
            )
        )
    api_mapping = api_candidates[api_candidates["api_id"].isin(surviving)].copy()
    api_mapping["seq_order"] = api_mapping["api_id"].map({a: i for i, a in enumerate(order)})
    edited = benchmark[benchmark["subset"] != "specificity"]
    for subset in ("reliability", "generalization"):
        counts = edited[edited["subset"] == subset].groupby("api_id").size()
        api_mapping[f"n_{subset}"] = api_mapping["api_id"].map(counts).fillna(0).astype(int)
    enforced = edited[edited["usage_enforced"]].groupby("api_id").size()
    api_mapping["n_usage_enforced"] = api_mapping["api_id"].map(enforced).fillna(0).astype(int)
    logger.info(
        "benchmark: %s items over %d APIs, %d usage-enforced",
        benchmark["subset"].value_counts().to_dict(),
        len(api_mapping),
        int(edited["usage_enforced"].sum()),
    )
    return (
        benchmark,
        api_mapping.sort_values("api_id", ignore_index=True),
        pd.DataFrame(report, columns=REPORT_COLUMNS),
    )


# --------------------------------------------------------------------------- edit requests
def build_requests(
    benchmark: pd.DataFrame, api_mapping: pd.DataFrame, params: Mapping[str, Any]
) -> pd.DataFrame:
    """One edit request per reliability item, in the APIs' `seq_order`."""
    settings = SynthesisSettings.from_params(params)
    requests, skipped = build_edit_requests(
        benchmark,
        parse_mappings(api_mapping.to_dict("records")),
        dict(zip(api_mapping["api_id"], api_mapping["seq_order"], strict=True)),
        seed=settings.seed,
        n_locality_prompts=settings.n_locality_prompts,
        n_rephrase_prompts=settings.n_rephrase_prompts,
    )
    if skipped:
        raise ValueError(
            f"reliability items without an edit request: {skipped}; every reliability item must "
            "be edited on, so fix their contexts or the catalogue"
        )
    return requests


# --------------------------------------------------------------------------- report
def summarise_synthesis(
    benchmark: pd.DataFrame,
    api_mapping: pd.DataFrame,
    rewrite_report: pd.DataFrame,
    validation_report: pd.DataFrame,
    study_counts: Mapping[str, int],
) -> pd.DataFrame:
    """Counts per subset, source, usage kind and API family next to the study's; every exclusion."""
    exclusions = pd.concat([rewrite_report, validation_report], ignore_index=True)
    return summarise(benchmark, api_mapping, exclusions, study_counts)
