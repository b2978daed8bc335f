"""Run planned jobs as Ray tasks, each a `kedro run` subprocess, with one progress bar of jobs.

A job that exits 0 leaves a marker `<run_dir>/jobs/<job_id>.done`; a rerun skips marked jobs, and a
job interrupted mid-way resumes from its own caches. Ray schedules the GPUs and retries failures
(`max_retries`); a subprocess per job frees GPU memory when it ends.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from tqdm.auto import tqdm

from apiedit_kedro.cluster.plan import Job

logger = logging.getLogger(__name__)
PR_SET_PDEATHSIG = 1


class JobFailed(RuntimeError):
    """A job's `kedro run` exited non-zero; its log names the cause."""


def _die_with_parent() -> None:
    """Linux: the job's `kedro run` is killed when its Ray worker dies, so a cancelled or orphaned
    job never keeps writing to shared storage behind a rerun."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _run_one(command: list[str], project_root: str, log_path: str, done_path: str) -> str:
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true"}
    # The worker's own interpreter: `kedro` need not be on the worker's PATH.
    command = [sys.executable, "-m", *command]
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"$ {' '.join(command)}\n")
        log.flush()
        code = subprocess.run(
            command,
            cwd=project_root,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            check=False,
            preexec_fn=_die_with_parent,
        ).returncode
    if code != 0:
        raise JobFailed(f"{' '.join(command)} exited {code}; see {log_path}")
    Path(done_path).parent.mkdir(parents=True, exist_ok=True)
    Path(done_path).touch()
    return done_path


def pending_jobs(jobs: Sequence[Job], run_dir: Path) -> list[Job]:
    return [job for job in jobs if not (run_dir / "jobs" / f"{job.job_id}.done").exists()]


def run_jobs(
    jobs: Sequence[Job],
    *,
    project_root: Path,
    data_root: Path,
    run_dir: Path,
    gpus_per_job: float,
    max_retries: int,
    ray_address: str | None,
    extra_params: Sequence[str] = (),
) -> list[Job]:
    """Run the jobs that have no done-marker; returns the jobs that ran."""
    import ray

    todo = pending_jobs(jobs, run_dir)
    logger.info(
        "%d of %d jobs already finished; running %d", len(jobs) - len(todo), len(jobs), len(todo)
    )
    if not todo:
        return []
    if not ray.is_initialized():
        ray.init(address=ray_address, log_to_driver=False)
    task = ray.remote(num_gpus=gpus_per_job, max_retries=max_retries, retry_exceptions=True)(
        _run_one
    )
    futures = {
        task.remote(
            job.kedro_command(data_root, extra_params),
            str(project_root),
            str(run_dir / "logs" / f"{job.job_id}.log"),
            str(run_dir / "jobs" / f"{job.job_id}.done"),
        ): job
        for job in todo
    }
    remaining = list(futures)
    with tqdm(total=len(todo), desc="fanout jobs", unit="job") as bar:
        while remaining:
            ready, remaining = ray.wait(remaining, num_returns=1)
            ray.get(ready[0])
            logger.info("finished %s", futures[ready[0]].job_id)
            bar.update(1)
    return todo
