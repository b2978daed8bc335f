"""Job planning: the grid, its validation before any job starts, and the GPU-hour estimate.

Sequential jobs are never sharded: edits accumulate across all APIs in `seq_order`, so splitting the
APIs would measure a different (shorter) edit sequence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REGIMES = ("instant", "sequential")


class FanoutError(ValueError):
    """A malformed grid: raised before any job starts, naming the value and the valid choices."""


@dataclass(frozen=True)
class Job:
    env: str
    method: str
    regime: str
    shard: str  # "K/N"; sequential jobs are always "1/1"
    generations: int  # planned completions (for the GPU-hour estimate)

    @property
    def job_id(self) -> str:
        index, count = self.shard.split("/")
        shard = "all" if count == "1" else f"shard_{index}_of_{count}"
        return f"{self.env}.{self.method}.{self.regime}.{shard}"

    def kedro_command(self, data_root: Path, extra_params: Sequence[str] = ()) -> list[str]:
        """The plain `kedro run` of this job; its caches live in its own folder under data_root."""
        params = [
            f"api_shard={self.shard}",
            f"data_root={data_root}",
            f"cache_dir={data_root / '07_model_output' / 'cache' / self.job_id}",
            *extra_params,
        ]
        return [
            "kedro",
            "run",
            f"--env={self.env}",
            f"--pipelines={self.regime}",
            f"--namespaces={self.method}",
            f"--params={','.join(params)}",
        ]


@dataclass(frozen=True)
class JobGrid:
    env: str
    methods: tuple[str, ...]
    regimes: tuple[str, ...]
    shards: int


def parse_choices(text: str, valid: Sequence[str], what: str) -> tuple[str, ...]:
    """A comma-separated list (or `all`) checked against the valid choices."""
    chosen = (
        tuple(valid) if text == "all" else tuple(v.strip() for v in text.split(",") if v.strip())
    )
    if not chosen:
        raise FanoutError(f"--{what} is empty; choose from {', '.join(valid)} or 'all'")
    for value in chosen:
        if value not in valid:
            raise FanoutError(
                f"unknown {what[:-1]} {value!r} in --{what}; valid: {', '.join(valid)} or 'all'"
            )
    return chosen


def validate_grid(grid: JobGrid, *, envs: Sequence[str], n_apis: int) -> None:
    if grid.env not in envs:
        raise FanoutError(f"unknown env {grid.env!r} (--env); valid: {', '.join(sorted(envs))}")
    if grid.shards < 1:
        raise FanoutError(f"--shards must be at least 1, got {grid.shards}")
    if "instant" in grid.regimes and grid.shards > n_apis:
        raise FanoutError(
            f"--shards={grid.shards} is more than the {n_apis} APIs of env {grid.env!r}: "
            f"some shards would have no API; use --shards between 1 and {n_apis}"
        )


def _cap(values: Sequence[int], limit: int | None) -> list[int]:
    return list(values) if limit is None else list(values)[:limit]


def instant_generations(
    problems_per_api: Sequence[int], *, max_apis: int | None, specificity: int, n_samples: int
) -> int:
    """Completions of one instant shard: each edited API's problems plus the specificity sample."""
    apis = _cap(problems_per_api, max_apis)
    return sum(count + specificity for count in apis) * n_samples


def sequential_generations(
    problems_per_api: Sequence[int],
    checkpoints: Sequence[int],
    *,
    specificity: int,
    n_samples: int,
) -> int:
    """At each checkpoint: every API edited so far plus the specificity sample."""
    return sum(sum(problems_per_api[:step]) + specificity for step in checkpoints) * n_samples


def plan_jobs(
    grid: JobGrid,
    *,
    problems_per_api: Sequence[int],
    max_apis: int | None,
    specificity: int,
    n_samples: int,
    checkpoints_for,
) -> list[Job]:
    """The job list: instant jobs per (method, shard), then one sequential job per method.

    `problems_per_api` is in `seq_order`; shards deal the APIs round-robin, like the pipelines do.
    """
    jobs = []
    for method in grid.methods:
        if "instant" in grid.regimes:
            for index in range(1, grid.shards + 1):
                shard_apis = list(problems_per_api[index - 1 :: grid.shards])
                count = instant_generations(
                    shard_apis, max_apis=max_apis, specificity=specificity, n_samples=n_samples
                )
                jobs.append(Job(grid.env, method, "instant", f"{index}/{grid.shards}", count))
        if "sequential" in grid.regimes:
            apis = _cap(problems_per_api, max_apis)
            count = sequential_generations(
                apis, checkpoints_for(len(apis)), specificity=specificity, n_samples=n_samples
            )
            jobs.append(Job(grid.env, method, "sequential", "1/1", count))
    return jobs


def estimate_gpu_hours(job: Job, *, max_new_tokens: int, tokens_per_second: float) -> float:
    """Upper bound: every completion runs to `max_new_tokens` at the card's generation throughput."""
    return job.generations * max_new_tokens / tokens_per_second / 3600.0
