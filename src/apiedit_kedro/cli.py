"""Project commands: `kedro fanout` runs the study as one Ray job per (env, method, API shard).

Instant jobs are (env, method, API shard); sequential jobs are (env, method) and never sharded,
because edits accumulate across all APIs and a shard would measure a shorter edit sequence. Every
job is a plain `kedro run` in its own process (GPU memory is freed between jobs), scheduled by Ray
with `num_gpus` per job; then the `merge` pipeline recomputes the study tables from the union.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import click
from omegaconf import OmegaConf

from apiedit_kedro.cluster.plan import (
    REGIMES,
    FanoutError,
    JobGrid,
    estimate_gpu_hours,
    parse_choices,
    plan_jobs,
    validate_grid,
)

logger = logging.getLogger(__name__)
PROJECT_ROOT = Path(__file__).resolve().parents[2]
NON_MODEL_ENVS = {"base", "local"}


def _model_envs() -> list[str]:
    conf = PROJECT_ROOT / "conf"
    return sorted(p.name for p in conf.iterdir() if p.is_dir() and p.name not in NON_MODEL_ENVS)


def _run_params(data_root: Path, params: str) -> dict:
    extra = OmegaConf.to_container(OmegaConf.from_dotlist(params.split(","))) if params else {}
    return {"data_root": str(data_root), **extra}


def _load_study_inputs(env: str, runtime_params: dict):
    """Parameters and the synthesis outputs (edit requests, benchmark) the plan is sized by."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(PROJECT_ROOT)
    with KedroSession.create(
        project_path=PROJECT_ROOT, env=env, runtime_params=runtime_params
    ) as s:
        context = s.load_context()
        params = context.params
        if not context.catalog.exists("edit_requests"):
            return params, None, None
        return params, context.catalog.load("edit_requests"), context.catalog.load("benchmark")


def _problems_per_api(edit_requests, benchmark, max_per_subset: int | None) -> list[int]:
    """Per API in `seq_order`: the items an instant run generates for (the regimes' own selection)."""
    from apiedit_kedro.study.selection import problems_for_api

    ordered = edit_requests.sort_values("seq_order", kind="stable")
    # an API has one request per reliability item
    return [
        len(problems_for_api(benchmark, api_id, max_per_subset))
        for api_id in dict.fromkeys(ordered["api_id"])
    ]


def _kedro(env: str, pipeline: str, params: dict, log_path: Path) -> None:
    dotlist = ",".join(f"{key}={value}" for key, value in _flatten(params))
    command = [
        sys.executable,
        "-m",
        "kedro",
        "run",
        f"--env={env}",
        f"--pipelines={pipeline}",
        f"--params={dotlist}",
    ]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", encoding="utf-8") as log:
        code = subprocess.run(
            command, cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT, check=False
        ).returncode
    if code != 0:
        raise click.ClickException(f"{' '.join(command)} failed; see {log_path}")


def _flatten(params: dict, prefix: str = ""):
    for key, value in params.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", "null" if value is None else value


@click.group(name="apiedit_kedro")
def cli():
    """Project commands of apiedit_kedro."""


@cli.command()
@click.option("--env", "env", required=True, help="Model environment (a folder under conf/).")
@click.option(
    "--methods", default="all", show_default=True, help="Comma-separated methods or 'all'."
)
@click.option("--regimes", default="instant,sequential", show_default=True)
@click.option(
    "--shards", default=1, show_default=True, type=int, help="API shards of instant jobs."
)
@click.option("--ray-address", default=None, help="Existing Ray cluster (e.g. 'auto'); else local.")
@click.option("--gpus-per-job", default=1.0, show_default=True, type=float)
@click.option("--max-retries", default=2, show_default=True, type=int)
@click.option("--data-root", default="data", show_default=True, help="Shared storage for all jobs.")
@click.option("--params", default="", help="Extra key=value,... passed to every job's kedro run.")
@click.option("--dry-run", is_flag=True, help="Print the job table and GPU-hour estimate only.")
def fanout(
    env,
    methods,
    regimes,
    shards,
    ray_address,
    gpus_per_job,
    max_retries,
    data_root,
    params,
    dry_run,
):
    """Plan, run (on Ray, one GPU per job), resume and merge the study for one model env.

    Instant jobs are one per (method, API shard). Sequential jobs are one per method and never
    sharded: edits accumulate across all APIs, so sharding them would change what is measured.
    A rerun of the same command skips finished jobs; interrupted ones resume from their caches.
    """
    from apiedit_kedro.study.regimes import STUDY_METHODS
    from apiedit_kedro.study.selection import checkpoints

    data_root_path = Path(data_root).resolve()
    run_dir = data_root_path / "09_fanout" / env
    try:
        grid = JobGrid(
            env,
            parse_choices(methods, STUDY_METHODS, "methods"),
            parse_choices(regimes, REGIMES, "regimes"),
            shards,
        )
        validate_grid(grid, envs=_model_envs(), n_apis=max(shards, 1))
    except FanoutError as error:
        raise click.BadParameter(str(error)) from error
    runtime_params = _run_params(data_root_path, params)
    study_params, edit_requests, benchmark = _load_study_inputs(env, runtime_params)
    if edit_requests is None:
        if dry_run:
            raise click.ClickException(
                f"no synthesis outputs under {data_root_path}: run `kedro run --env={env} "
                f"--pipelines=synthesis --params=data_root={data_root_path}` first"
            )
        logger.info("running synthesis first (outputs under %s)", data_root_path)
        _kedro(env, "synthesis", runtime_params, run_dir / "logs" / "synthesis.log")
        study_params, edit_requests, benchmark = _load_study_inputs(env, runtime_params)
    study = study_params["study"]
    try:
        validate_grid(grid, envs=_model_envs(), n_apis=edit_requests["api_id"].nunique())
    except FanoutError as error:
        raise click.BadParameter(str(error)) from error
    jobs = plan_jobs(
        grid,
        problems_per_api=_problems_per_api(
            edit_requests, benchmark, study["max_problems_per_subset"]
        ),
        max_apis=study["max_apis"],
        specificity=min(
            int(study["specificity_sample"] or 0), int((benchmark["subset"] == "specificity").sum())
        )
        if study["specificity_sample"] is not None
        else int((benchmark["subset"] == "specificity").sum()),
        n_samples=int(study_params["generation"]["n_samples"]),
        checkpoints_for=checkpoints,
    )
    tokens_per_second = float(study_params["fanout"]["tokens_per_second"])
    max_new_tokens = int(study_params["generation"]["max_new_tokens"])
    hours = [
        estimate_gpu_hours(j, max_new_tokens=max_new_tokens, tokens_per_second=tokens_per_second)
        for j in jobs
    ]
    if dry_run:
        click.echo(f"{'job':<48} {'generations':>12} {'GPU-hours':>10}")
        for job, hour in zip(jobs, hours, strict=True):
            click.echo(f"{job.job_id:<48} {job.generations:>12} {hour:>10.2f}")
        click.echo(
            f"{len(jobs)} jobs, {sum(j.generations for j in jobs)} generations, "
            f"{sum(hours):.1f} GPU-hours at {tokens_per_second:g} tokens/s, {max_new_tokens} tokens each"
        )
        return

    from apiedit_kedro.cluster.runner import run_jobs

    extra = [f"{key}={value}" for key, value in _flatten(runtime_params) if key != "data_root"]
    run_jobs(
        jobs,
        project_root=PROJECT_ROOT,
        data_root=data_root_path,
        run_dir=run_dir,
        gpus_per_job=gpus_per_job,
        max_retries=max_retries,
        ray_address=ray_address,
        extra_params=extra,
    )
    if set(grid.regimes) == set(REGIMES):
        _kedro(
            env, "merge", {**runtime_params, "merge_shards": shards}, run_dir / "logs" / "merge.log"
        )
        logger.info("merged tables under %s/08_reporting/<model>/merged/", data_root_path)
    else:
        logger.info("merge needs both regimes; run it when the other regime's jobs are done")
