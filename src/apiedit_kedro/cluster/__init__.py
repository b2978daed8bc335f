"""Fan the study out over a Ray cluster: plan one job per (env, method, API shard) for the instant
regime and one per (env, method) for the sequential regime, run each as a `kedro run` subprocess in
a Ray task with its own GPU, and skip jobs that already finished. No Kedro import here: the
project command in `apiedit_kedro.cli` reads the configuration and hands plain values in.
"""

from apiedit_kedro.cluster.plan import FanoutError, Job, JobGrid, estimate_gpu_hours, plan_jobs
from apiedit_kedro.cluster.runner import run_jobs

__all__ = ["FanoutError", "Job", "JobGrid", "estimate_gpu_hours", "plan_jobs", "run_jobs"]
