"""Nodes of the `synthesis` pipeline: from the API catalogue and the raw problems to a validated
benchmark and one edit request per API.

Every node is a pure function of DataFrames and parameters; the engines (`apis`, `problems`,
`sandbox`) do the work. Nothing is dropped silently: each exclusion becomes a row of
`synthesis_report` with its stage and reason.
"""

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from apiedit_kedro.apis.catalog import MAPPING_COLUMNS, catalog_to_records
from apiedit_kedro.apis.mapping import ApiMapping, parse_mappings
from apiedit_kedro.apis.rewrite import RewriteError, parse_quietly, rewrite_program
from apiedit_kedro.apis.usages import detect_api_uses
from apiedit_kedro.problems import PROBLEM_COLUMNS, humaneval_problems, mbpp_problems
from apiedit_kedro.sandbox import execute

logger = logging.getLogger(__name__)

SUBSETS = ("reliability", "generalization", "specificity")
REPORT_COLUMNS = ["record", "stage", "problem_id", "source", "api_id", "subset", "reason", "value"]
EDIT_REQUEST_COLUMNS = [
    "edit_id",
    "api_id",
    "seq_order",
    "source_problem_id",
    "prompt",
    "target_new",
    "subject",
    "rephrase_prompts",
    "locality_prompts",
    "locality_problem_ids",
]
CANDIDATE_COLUMNS = [
    "problem_id",
    "api_ids",
    "used_api_ids",
    "test_api_ids",
    "reference_old",
    "reference_new",
    "prompt_new",
]


def _as_list(value: Any) -> list:
    """Parquet round trips turn list cells into numpy arrays; nodes work with plain lists."""
    if value is None:
        return []
    if isinstance(value, np.ndarray):
        return value.tolist()
    return list(value)


def _report_row(record: str, stage: str, reason: str, **keys: Any) -> dict:
    row = dict.fromkeys(REPORT_COLUMNS, "")
    row.update(record=record, stage=stage, reason=reason, value=0)
    row.update(keys)
    return row


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
        mbpp = [r for r in mbpp if r["mbpp_split"] == "prompt"] + [
            r for r in mbpp if r["mbpp_split"] != "prompt"
        ][:max_problems_per_source]
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
        tests_source = "\n".join([problem.test_setup, *_as_list(problem.tests)])
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


# --------------------------------------------------------------------------- rewriting
def _benchmark_pool(problems: pd.DataFrame, excluded_mbpp_ids: Sequence[int]) -> pd.DataFrame:
    excluded = {f"MBPP/{i}" for i in excluded_mbpp_ids}
    return problems[~problems["problem_id"].isin(excluded)]


def _rewrite_with_fallback(
    problem: Any, mappings: list[ApiMapping]
) -> tuple[Any, list[ApiMapping], list[tuple[str, str]]]:
    """Rewrite with all APIs; on failure find the APIs that cannot be rewritten and drop them."""
    prefix_length = len(problem.prompt) if problem.prompt_in_reference else 0
    failures: list[tuple[str, str]] = []
    try:
        return (
            rewrite_program(problem.reference_solution, mappings, prefix_length=prefix_length),
            mappings,
            failures,
        )
    except RewriteError:
        pass
    kept = []
    for mapping in mappings:
        try:
            rewrite_program(problem.reference_solution, [mapping], prefix_length=prefix_length)
            kept.append(mapping)
        except RewriteError as error:
            failures.append((mapping.api_id, str(error)))
    if not kept:
        return None, [], failures
    try:
        result = rewrite_program(problem.reference_solution, kept, prefix_length=prefix_length)
    except RewriteError as error:
        failures.extend(
            (m.api_id, f"rewrite together with the others failed: {error}") for m in kept
        )
        return None, [], failures
    return result, kept, failures


def rewrite_references(
    problems: pd.DataFrame,
    api_usages: pd.DataFrame,
    api_candidates: pd.DataFrame,
    params: Mapping[str, Any],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`reference_new` (and the rewritten HumanEval prompt) for every problem using a catalogued API.

    A (problem, API) pair is excluded when the problem's tests reference the API (tests run in the
    edited world) or when the rewrite fails; both are reported.
    """
    mappings = {m.api_id: m for m in parse_mappings(api_candidates.to_dict("records"))}
    catalogued = api_usages[api_usages["catalogued"]]
    solution_apis = catalogued[catalogued["where"] == "solution"].groupby("problem_id")["api"]
    test_apis = catalogued[catalogued["where"] == "tests"].groupby("problem_id")["api"]
    solution_apis, test_apis = (
        solution_apis.apply(sorted).to_dict(),
        test_apis.apply(sorted).to_dict(),
    )
    rows, report = [], []
    pool = _benchmark_pool(problems, params["excluded_mbpp_ids"])
    for problem in pool.itertuples(index=False):
        used = solution_apis.get(problem.problem_id, [])
        in_tests = test_apis.get(problem.problem_id, [])
        for api_id in sorted(set(used) & set(in_tests)):
            report.append(
                _report_row(
                    "dropped_pair",
                    "rewrite",
                    "the problem's tests reference this API, so they would "
                    "break in the edited world",
                    problem_id=problem.problem_id,
                    source=problem.source,
                    api_id=api_id,
                )
            )
        usable = [mappings[a] for a in used if a not in in_tests]
        if not usable:
            continue
        result, kept, failures = _rewrite_with_fallback(problem, usable)
        for api_id, reason in failures:
            report.append(
                _report_row(
                    "dropped_pair",
                    "rewrite",
                    reason,
                    problem_id=problem.problem_id,
                    source=problem.source,
                    api_id=api_id,
                )
            )
        if result is None:
            continue
        rows.append(
            {
                "problem_id": problem.problem_id,
                "api_ids": [m.api_id for m in kept],
                "used_api_ids": result.referenced_apis,
                "test_api_ids": list(in_tests),
                "reference_old": problem.reference_solution,
                "reference_new": result.source,
                "prompt_new": result.prefix if problem.prompt_in_reference else problem.prompt,
            }
        )
    logger.info("rewrote %d problems that use catalogued APIs", len(rows))
    return pd.DataFrame(rows, columns=CANDIDATE_COLUMNS), pd.DataFrame(
        report, columns=REPORT_COLUMNS
    )


# --------------------------------------------------------------------------- validation
def _request(code: str, problem: Any, world: str, mappings: list[dict], params: Mapping) -> dict:
    return {
        "code": code,
        "tests": _as_list(problem.tests),
        "setup": problem.test_setup,
        "world": world,
        "mappings": mappings,
        "timeout_s": float(params["timeout_s"]),
        "unit_timeout_s": float(params["unit_timeout_s"]),
    }


def _run_checks(checks: list[dict], requests: list[dict], params: Mapping) -> list[dict]:
    if not requests:
        return []
    workers = params.get("workers") or None
    results = execute(requests, workers=workers, progress=False)
    rows = []
    for check, result in zip(checks, results, strict=True):
        passed = bool(result["full_pass"])
        rows.append(
            {
                **check,
                "full_pass": passed,
                "ok": passed == check["expect_pass"],
                "error_type": result["error_type"],
                "error_message": str(result["error_message"])[:300],
                "asserts_passed": int(result["asserts_passed"]),
                "asserts_total": int(result["asserts_total"]),
                "seconds": float(result["seconds"]),
            }
        )
    return rows


def _check(problem_id: str, name: str, expect_pass: bool, api_ids: list[str]) -> dict:
    return {"problem_id": problem_id, "check": name, "expect_pass": expect_pass, "api_ids": api_ids}


def _surviving_apis(
    stage_one: pd.DataFrame, rewritten: pd.DataFrame, min_problems: int
) -> tuple[set[str], dict[str, tuple[list[str], list[str]]]]:
    """Problems passing every check, pruned until each remaining API is used by `min_problems`.

    Values are (APIs the problem's world must remove, APIs it references beyond an import).
    """
    failed = set(stage_one.loc[~stage_one["ok"], "problem_id"])
    valid = {
        row.problem_id: (_as_list(row.api_ids), _as_list(row.used_api_ids))
        for row in rewritten.itertuples(index=False)
        if row.problem_id not in failed and _as_list(row.used_api_ids)
    }
    while True:
        counts: dict[str, int] = {}
        for _, used in valid.values():
            for api in used:
                counts[api] = counts.get(api, 0) + 1
        # an API the problem only imports must still be installed, so it must survive too
        weak = {
            api for apis, _ in valid.values() for api in apis if counts.get(api, 0) < min_problems
        }
        if not weak:
            return set(counts), valid
        valid = {pid: pair for pid, pair in valid.items() if not weak & set(pair[0])}


def validate_in_sandbox(
    problems: pd.DataFrame,
    rewritten: pd.DataFrame,
    api_usages: pd.DataFrame,
    api_candidates: pd.DataFrame,
    params: Mapping[str, Any],
) -> pd.DataFrame:
    """Run every validation check in the sandbox (two batched `execute` calls).

    Stage 1: each pool problem's reference passes its units in the pristine world; for each
    rewritten problem, `reference_new` passes in the edited world (its APIs removed),
    `reference_old` fails there, and `reference_new` fails in the pristine world.
    Stage 2: specificity candidates (no catalogued API in solution or tests) pass in the edited
    world with every API that survived stage 1 removed, as in the sequential regime.
    """
    records = {r["api_id"]: r for r in api_candidates.to_dict("records")}
    pool = _benchmark_pool(problems, params["excluded_mbpp_ids"]).set_index("problem_id")
    run = params["validation"]
    checks, requests = [], []
    for problem_id, problem in pool.iterrows():
        checks.append(_check(problem_id, "reference_pristine", True, []))
        requests.append(_request(problem.reference_solution, problem, "pristine", [], run))
    for row in rewritten.itertuples(index=False):
        problem, apis = pool.loc[row.problem_id], _as_list(row.api_ids)
        mappings = [records[a] for a in apis]
        for name, code, world, expect in (
            ("new_edited", row.reference_new, "edited", True),
            ("old_edited", row.reference_old, "edited", False),
            ("new_pristine", row.reference_new, "pristine", False),
        ):
            checks.append(_check(row.problem_id, name, expect, apis))
            requests.append(
                _request(code, problem, world, mappings if world == "edited" else [], run)
            )
    logger.info("validation stage 1: %d sandbox runs", len(requests))
    stage_one = pd.DataFrame(_run_checks(checks, requests, run))
    surviving, _ = _surviving_apis(stage_one, rewritten, int(params["min_problems_per_api"]))
    pristine_ok = set(
        stage_one.loc[(stage_one["check"] == "reference_pristine") & stage_one["ok"], "problem_id"]
    )
    touching = set(api_usages.loc[api_usages["catalogued"], "problem_id"])
    world = [records[a] for a in sorted(surviving)]
    checks, requests = [], []
    for problem_id in sorted(pristine_ok - touching):
        checks.append(_check(problem_id, "specificity_edited", True, []))
        requests.append(
            _request(
                pool.loc[problem_id].reference_solution, pool.loc[problem_id], "edited", world, run
            )
        )
    logger.info(
        "validation stage 2: %d sandbox runs with %d APIs removed", len(requests), len(world)
    )
    stage_two = pd.DataFrame(_run_checks(checks, requests, run))
    validation = pd.concat([stage_one, stage_two], ignore_index=True)
    return validation.sort_values(["problem_id", "check"], ignore_index=True)


# --------------------------------------------------------------------------- benchmark
def _timeout_seconds(reference_seconds: float, n_units: int, params: Mapping) -> float:
    """Per sample: max(1 s per unit, factor x the reference's run) + 1 s, capped (sandbox §1.7).

    The measured run is rounded up to a power of two, so run-to-run jitter does not change the
    benchmark's bytes (only a reference whose runtime crosses a power of two would).
    """
    bucketed = 2.0 ** math.ceil(math.log2(max(reference_seconds, 1e-3)))
    budget = max(float(params["min_unit_s"]) * n_units, float(params["factor"]) * bucketed)
    return round(min(float(params["cap_s"]), budget + 1.0), 2)


def _assign_problems(valid: dict[str, tuple[list[str], list[str]]]) -> dict[str, list[str]]:
    """Each problem goes to its rarest used API (fewest validated problems, then api_id)."""
    counts: dict[str, int] = {}
    for _, used in valid.values():
        for api in used:
            counts[api] = counts.get(api, 0) + 1
    assigned: dict[str, list[str]] = {}
    for problem_id in sorted(valid):
        api = min(valid[problem_id][1], key=lambda a: (counts[a], a))
        assigned.setdefault(api, []).append(problem_id)
    return assigned


def _split(api_id: str, problem_ids: list[str], seed: int, fraction: float) -> dict[str, str]:
    rng = np.random.default_rng([seed, *api_id.encode()])
    order = sorted(problem_ids)
    rng.shuffle(order)
    n_reliability = min(len(order) - 1, max(1, round(len(order) * fraction)))
    return {
        pid: "reliability" if i < n_reliability else "generalization" for i, pid in enumerate(order)
    }


def assemble_benchmark(
    *,
    problems: pd.DataFrame,
    rewritten: pd.DataFrame,
    api_usages: pd.DataFrame,
    validation: pd.DataFrame,
    api_candidates: pd.DataFrame,
    params: Mapping[str, Any],
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The three disjoint subsets, the validated `api_mapping`, and the validation report rows."""
    min_problems = int(params["min_problems_per_api"])
    pool = _benchmark_pool(problems, params["excluded_mbpp_ids"]).set_index("problem_id")
    checks = validation.set_index(["problem_id", "check"])
    report = []
    for row in validation[~validation["ok"]].itertuples(index=False):
        expectation = "pass" if row.expect_pass else "fail"
        report.append(
            _report_row(
                "dropped_problem",
                f"validation:{row.check}",
                f"expected to {expectation}, got {row.error_type or 'a full pass'}: {row.error_message}",
                problem_id=row.problem_id,
                source=pool.loc[row.problem_id, "source"],
                api_id=",".join(_as_list(row.api_ids)),
            )
        )
    stage_one = validation[validation["check"] != "specificity_edited"]
    _, valid = _surviving_apis(stage_one, rewritten, min_problems)
    while True:
        assigned = _assign_problems(valid)
        weak = {api for api, pids in assigned.items() if len(pids) < min_problems}
        weak |= {api for apis, _ in valid.values() for api in apis if api not in assigned}
        if not weak:
            break
        valid = {pid: pair for pid, pair in valid.items() if not weak & set(pair[0])}
    surviving = set(assigned)
    failed = set(validation.loc[~validation["ok"], "problem_id"])
    for row in rewritten.itertuples(index=False):
        if row.problem_id in failed or row.problem_id in valid:
            continue
        apis, used = _as_list(row.api_ids), _as_list(row.used_api_ids)
        reason = (
            f"its catalogued APIs {apis} are only imported, never used"
            if not used
            else f"it needs APIs that were dropped: {sorted(set(apis) - surviving)}"
        )
        report.append(
            _report_row(
                "dropped_problem",
                "assignment",
                reason,
                problem_id=row.problem_id,
                source=pool.loc[row.problem_id, "source"],
                api_id=",".join(apis),
            )
        )
    for api_id in sorted(set(api_candidates["api_id"]) - surviving):
        report.append(
            _report_row(
                "dropped_api",
                "validation",
                f"fewer than {min_problems} problems "
                "passed every check and could be assigned to it",
                api_id=api_id,
            )
        )
    rewritten_by_id = rewritten.set_index("problem_id")
    rows = []
    for api_id, problem_ids in sorted(assigned.items()):
        subsets = _split(
            api_id, problem_ids, int(params["seed"]), float(params["reliability_fraction"])
        )
        for problem_id in sorted(problem_ids):
            rewrite = rewritten_by_id.loc[problem_id]
            rows.append(
                _benchmark_row(
                    problem=pool.loc[problem_id],
                    problem_id=problem_id,
                    subset=subsets[problem_id],
                    api_id=api_id,
                    rewrite=rewrite,
                    checks=checks,
                    params=params,
                )
            )
    specificity_ok = set(
        validation.loc[
            (validation["check"] == "specificity_edited") & validation["ok"], "problem_id"
        ]
    )
    for problem_id in sorted(specificity_ok):
        rows.append(
            _benchmark_row(
                problem=pool.loc[problem_id],
                problem_id=problem_id,
                subset="specificity",
                api_id=None,
                rewrite=None,
                checks=checks,
                params=params,
            )
        )
    benchmark = pd.DataFrame(rows)
    benchmark["subset_rank"] = benchmark["subset"].map(SUBSETS.index)
    benchmark = benchmark.sort_values(["subset_rank", "api_id", "problem_id"], na_position="last")
    benchmark = benchmark.drop(columns="subset_rank").reset_index(drop=True)
    api_mapping = api_candidates[api_candidates["api_id"].isin(surviving)].copy()
    for subset in SUBSETS[:2]:
        counts = benchmark[benchmark["subset"] == subset].groupby("api_id").size()
        api_mapping[f"n_{subset}"] = api_mapping["api_id"].map(counts).fillna(0).astype(int)
    logger.info(
        "benchmark: %s over %d APIs", benchmark["subset"].value_counts().to_dict(), len(api_mapping)
    )
    return (
        benchmark,
        api_mapping.sort_values("api_id", ignore_index=True),
        pd.DataFrame(report, columns=REPORT_COLUMNS),
    )


def _benchmark_row(
    *,
    problem: pd.Series,
    problem_id: str,
    subset: str,
    api_id: str | None,
    rewrite: pd.Series | None,
    checks: pd.DataFrame,
    params: Mapping,
) -> dict:
    reference = checks.loc[(problem_id, "reference_pristine")]
    tests = _as_list(problem["tests"])
    return {
        "problem_id": problem_id,
        "source": problem["source"],
        "subset": subset,
        "api_id": api_id,
        "api_ids": _as_list(rewrite["api_ids"]) if rewrite is not None else [],
        "used_api_ids": _as_list(rewrite["used_api_ids"]) if rewrite is not None else [],
        "test_api_ids": _as_list(rewrite["test_api_ids"]) if rewrite is not None else [],
        "prompt": rewrite["prompt_new"] if rewrite is not None else problem["prompt"],
        "prompt_format": problem["prompt_format"],
        "reference_old": problem["reference_solution"],
        "reference_new": rewrite["reference_new"]
        if rewrite is not None
        else problem["reference_solution"],
        "tests": tests,
        "test_setup": problem["test_setup"],
        "entry_point": problem["entry_point"],
        "timeout_s": _timeout_seconds(float(reference["seconds"]), len(tests), params["timeouts"]),
    }


# --------------------------------------------------------------------------- edit requests
def _new_api_call_position(source: str, new_name: str) -> tuple[int, int] | None:
    """(start of the new name, end of the call it leads) for the first call through `new_name`,
    else the span of its first reference as a value.

    The call may go through an attribute of the new API (`my_itertools_chain.from_iterable(x)`).
    """
    import ast

    lines = source.splitlines(keepends=True)
    starts = np.cumsum([0, *(len(line) for line in lines)]).tolist()
    best = None
    tree = parse_quietly(source)
    for call in ast.walk(tree):
        if not isinstance(call, ast.Call):
            continue
        func = call.func
        while isinstance(func, ast.Attribute) and func.attr != new_name:
            func = func.value
        if isinstance(func, ast.Name) and func.id == new_name:
            line, col = func.lineno, func.col_offset
        elif isinstance(func, ast.Attribute):
            line, col = func.end_lineno, func.end_col_offset - len(new_name)
        else:
            continue
        # HumanEval/MBPP sources are ASCII, so AST byte columns are character columns
        position = (starts[line - 1] + col, starts[call.end_lineno - 1] + call.end_col_offset)
        best = position if best is None or position < best else best
    if best is None:
        # an API with unchanged usage may only be passed as a value (`map(math.tan, xs)`)
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and node.id == new_name:
                position = (starts[node.lineno - 1] + node.col_offset, 0)
            elif isinstance(node, ast.Attribute) and node.attr == new_name:
                position = (starts[node.end_lineno - 1] + node.end_col_offset - len(new_name), 0)
            else:
                continue
            best = position if best is None or position < best else best
        best = (best[0], best[0] + len(new_name)) if best else None
    return best


def _subject(prompt: str) -> str:
    """The prompt's last line from its first non-blank character (a line of indentation only
    extends back to the previous non-blank line), so the key is read at the prompt's last token."""
    stripped = prompt.rstrip()
    line_start = stripped.rfind("\n") + 1
    content_start = line_start + len(stripped[line_start:]) - len(stripped[line_start:].lstrip())
    return prompt[content_start:]


def _rephrasings(prompt: str, doc: str) -> list[str]:
    """The same call context, shortened and introduced differently (no generalization problem)."""
    lines = prompt.splitlines(keepends=True)
    first_sentence = doc.split(". ", maxsplit=1)[0].rstrip(".")
    variants = [
        "".join(lines[-6:]),
        "".join(lines[-2:]),
        f"# {first_sentence}.\n" + "".join(lines[-1:]),
    ]
    return list(dict.fromkeys(v for v in variants if v.strip() and v != prompt))


def build_edit_requests(
    benchmark: pd.DataFrame, api_mapping: pd.DataFrame, params: Mapping[str, Any]
) -> pd.DataFrame:
    """One edit request per validated API, from its first reliability problem (seeded order)."""
    seed = int(params["seed"])
    n_locality_prompts = int(params["edit_requests"]["n_locality_prompts"])
    specificity = benchmark[benchmark["subset"] == "specificity"].sort_values("problem_id")
    rng = np.random.default_rng(seed)
    seq_order = rng.permutation(len(api_mapping)).tolist()
    rows = []
    for position, mapping in enumerate(api_mapping.sort_values("api_id").itertuples(index=False)):
        record = ApiMapping.from_record(mapping._asdict())
        reliability = benchmark[
            (benchmark["api_id"] == record.api_id) & (benchmark["subset"] == "reliability")
        ]
        request = None
        for problem in reliability.sort_values("problem_id").itertuples(index=False):
            located = _new_api_call_position(problem.reference_new, record.new_name)
            if located:
                request = (problem.problem_id, problem.reference_new, *located)
                break
        if request is None:
            raise ValueError(
                f"api {record.api_id}: no reliability problem calls {record.new_name}; the benchmark "
                "and api_mapping are inconsistent, re-run the synthesis pipeline."
            )
        problem_id, source, start, end = request
        prompt = source[:start]
        api_rng = np.random.default_rng([seed, *record.api_id.encode()])
        n_locality = min(n_locality_prompts, len(specificity))
        picks = sorted(api_rng.choice(len(specificity), size=n_locality, replace=False).tolist())
        rows.append(
            {
                "edit_id": f"edit:{record.api_id}",
                "api_id": record.api_id,
                "seq_order": int(seq_order[position]),
                "source_problem_id": problem_id,
                "prompt": prompt,
                "target_new": source[start:end],
                "subject": _subject(prompt),
                "rephrase_prompts": _rephrasings(prompt, record.doc),
                "locality_prompts": [_locality_prompt(specificity.iloc[i]) for i in picks],
                "locality_problem_ids": [specificity.iloc[i]["problem_id"] for i in picks],
            }
        )
    return pd.DataFrame(rows, columns=EDIT_REQUEST_COLUMNS).sort_values(
        "seq_order", ignore_index=True
    )


def _locality_prompt(problem: pd.Series) -> str:
    """A specificity problem's reference up to its last line: code context that no edit concerns."""
    source = problem["reference_old"].rstrip()
    last_line = source.rfind("\n")
    return source[: last_line + 1] if last_line > 0 else source


# --------------------------------------------------------------------------- report
def summarise_synthesis(
    benchmark: pd.DataFrame,
    api_mapping: pd.DataFrame,
    rewrite_report: pd.DataFrame,
    validation_report: pd.DataFrame,
    study_counts: Mapping[str, int],
) -> pd.DataFrame:
    """Counts per subset and source next to the study's, validated APIs, and every exclusion."""
    rows = []
    for subset in SUBSETS:
        part = benchmark[benchmark["subset"] == subset]
        for source in ("humaneval", "mbpp"):
            rows.append(
                _report_row(
                    "count",
                    "benchmark",
                    "problems",
                    subset=subset,
                    source=source,
                    value=int((part["source"] == source).sum()),
                )
            )
        rows.append(
            _report_row(
                "count", "benchmark", "problems", subset=subset, source="all", value=len(part)
            )
        )
        rows.append(
            _report_row(
                "study_count",
                "study",
                "problems (arXiv 2511.03182 v1)",
                subset=subset,
                value=int(study_counts[subset]),
            )
        )
    rows.append(
        _report_row(
            "count", "benchmark", "problems", subset="all", source="all", value=len(benchmark)
        )
    )
    rows.append(_report_row("count", "benchmark", "validated APIs", value=len(api_mapping)))
    rows.append(
        _report_row(
            "count",
            "benchmark",
            "validated APIs that change the usage",
            value=int(api_mapping["changes_usage"].sum()),
        )
    )
    rows.append(
        _report_row(
            "study_count", "study", "APIs (arXiv 2511.03182 v1)", value=int(study_counts["apis"])
        )
    )
    for api in api_mapping.itertuples(index=False):
        rows.append(
            _report_row(
                "validated_api",
                "benchmark",
                api.kind,
                api_id=api.api_id,
                value=int(api.n_reliability + api.n_generalization),
            )
        )
    report = pd.concat(
        [pd.DataFrame(rows, columns=REPORT_COLUMNS), rewrite_report, validation_report],
        ignore_index=True,
    )
    report["value"] = report["value"].astype(int)
    return report.astype({c: str for c in REPORT_COLUMNS if c != "value"})
