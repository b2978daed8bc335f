"""`kedro fanout` for real on a local Ray cluster on CPU (`num_gpus=0`: this machine has no GPU,
so jobs ask for `--gpus-per-job=0`), the `tiny` environment, greedy decoding.

One module-scoped Ray cluster is started here and every command connects to it with
`--ray-address`, which is also the path taken on a real cluster.
"""

import glob
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from apiedit_kedro.cli import cli
from apiedit_kedro.metrics.adoption import label_executions, with_usage_change
from apiedit_kedro.metrics.pass_at_k import pass_at_k_table
from apiedit_kedro.study.contracts import GENERATION_KEYS

pytestmark = pytest.mark.slow

PROJECT_ROOT = Path(__file__).resolve().parents[2]
MBPP = PROJECT_ROOT / "data" / "01_raw" / "mbpp.jsonl"
# Greedy, every API of the synthesis slice (6 on tiny from the first 20 problems), one problem per
# subset, 2 specificity.
PARAMS = "synthesis_max_problems=20,study.max_apis=null,generation.temperature=0"


@pytest.fixture(scope="module")
def ray_address():
    ray = pytest.importorskip("ray")
    context = ray.init(num_cpus=2, num_gpus=0, include_dashboard=False)
    yield context.address_info["address"]
    ray.shutdown()


@pytest.fixture(scope="module")
def synthesised(tmp_path_factory) -> Path:
    if not MBPP.exists():
        pytest.skip("MBPP is not at data/01_raw/mbpp.jsonl (run scripts/setup.sh)")
    root = tmp_path_factory.mktemp("synthesis")
    _kedro("run", "--env=tiny", "--pipelines=synthesis", f"--params=data_root={root},{PARAMS}")
    return root


def _fresh_root(synthesised: Path, tmp_path: Path) -> Path:
    root = tmp_path / "data"
    for stage in ("03_primary", "05_model_input"):
        shutil.copytree(synthesised / stage, root / stage)
    return root


def _env() -> dict:
    # Read at call time: `ray.init` sets variables (its auth token) that a connecting process needs.
    return {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true"}


def _kedro(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "kedro", *args], cwd=PROJECT_ROOT, env=_env(), check=True)


def _fanout_args(root: Path, address: str, methods: str, shards: int) -> list[str]:
    return [
        "fanout", "--env=tiny", f"--methods={methods}", f"--shards={shards}", "--gpus-per-job=0",
        f"--ray-address={address}", f"--data-root={root}", f"--params={PARAMS}",
    ]  # fmt: skip


def _latest(pattern: str) -> pd.DataFrame:
    versions = sorted(glob.glob(pattern))
    assert versions, f"nothing matches {pattern}"
    return pd.read_parquet(versions[-1])


def _comparable(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    # Wall-clock timings are the only columns that may differ between two runs.
    kept = frame.drop(columns=[c for c in frame.columns if "seconds" in c])
    return kept.sort_values(keys).reset_index(drop=True)


def _dry_run(root, *options):
    args = ["fanout", "--env=tiny", f"--data-root={root}", f"--params={PARAMS}", "--dry-run"]
    return CliRunner().invoke(cli, [*args, *options])


def test_dry_run_lists_exactly_the_expected_jobs(synthesised):
    result = _dry_run(synthesised, "--methods=none,rome", "--shards=2")
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.output.splitlines() if line.startswith("tiny.")]
    # Shards deal 6 APIs round-robin: 3 and 3. Each instant edit generates for its 2 problems and
    # the 2 specificity problems; sequential checkpoints after 1, 2, 4, 6 edits; n = 5 samples.
    sequential = sum(2 * step + 2 for step in (1, 2, 4, 6)) * 5
    expected = {
        "tiny.none.instant.shard_1_of_2": 3 * 4 * 5,
        "tiny.none.instant.shard_2_of_2": 3 * 4 * 5,
        "tiny.none.sequential.all": sequential,
        "tiny.rome.instant.shard_1_of_2": 3 * 4 * 5,
        "tiny.rome.instant.shard_2_of_2": 3 * 4 * 5,
        "tiny.rome.sequential.all": sequential,
    }
    assert {row[0]: int(row[1]) for row in rows} == expected
    # GPU-hours: generations x 24 new tokens (conf/tiny) / 20 tokens/s (conf/base fanout).
    assert float(rows[0][2]) == pytest.approx(round(60 * 24 / 20 / 3600, 2))
    assert "6 jobs, 580 generations" in result.output


@pytest.mark.parametrize(
    ("option", "named", "choices"),
    [
        ("--methods=none,bogus", "'bogus'", "rome"),
        ("--regimes=weekly", "'weekly'", "sequential"),
        ("--env=nonexistent", "'nonexistent'", "tiny"),
        ("--shards=0", "--shards must be at least 1, got 0", ""),
        ("--shards=7", "--shards=7", "between 1 and 6"),
    ],
)
def test_malformed_grid_fails_before_any_job(synthesised, tmp_path, option, named, choices):
    root = _fresh_root(synthesised, tmp_path)
    args = ["fanout", "--env=tiny", f"--data-root={root}", f"--params={PARAMS}", "--gpus-per-job=0"]
    args = [a for a in args if not (option.startswith("--env") and a.startswith("--env"))]
    result = CliRunner().invoke(cli, [*args, option])
    assert result.exit_code != 0
    assert named in result.output and choices in result.output
    assert not (root / "09_fanout").exists()


def test_sharded_fanout_merges_to_the_unsharded_study(synthesised, tmp_path, ray_address):
    sharded = _fresh_root(synthesised, tmp_path / "sharded")
    result = CliRunner().invoke(cli, _fanout_args(sharded, ray_address, "none,rome", 2))
    assert result.exit_code == 0, result.output
    run_dir = sharded / "09_fanout" / "tiny"
    assert len(list((run_dir / "jobs").glob("*.done"))) == 6
    assert (run_dir / "logs" / "merge.log").exists()
    # Every job wrote as many generations as the dry run planned.
    planned = _dry_run(sharded, "--methods=none,rome", "--shards=2").output
    for line in planned.splitlines():
        if line.startswith("tiny."):
            job_id, count = line.split()[:2]
            _, method, regime, shard = job_id.split(".")
            written = _latest(
                f"{sharded}/07_model_output/tiny/{shard}/{method}/{regime}_generations.parquet/*/*"
            )
            assert len(written) == int(count), job_id

    unsharded = _fresh_root(synthesised, tmp_path / "unsharded")
    _kedro(
        "run", "--env=tiny", "--pipelines=instant,sequential,evaluation", "--namespaces=none,rome",
        f"--params=data_root={unsharded},{PARAMS}",
    )  # fmt: skip
    base = f"{unsharded}/07_model_output/tiny/all"
    merged = f"{sharded}/08_reporting/tiny/merged"
    keys = [*(key for key in GENERATION_KEYS if key != "model"), "world"]
    expected = pd.concat(
        [_latest(f"{base}/{m}/execution_results.parquet/*/*") for m in ("none", "rome")]
    )
    got = _latest(f"{merged}/execution_results.parquet/*/*")
    pd.testing.assert_frame_equal(
        _comparable(got, keys), _comparable(expected, keys), check_like=True
    )
    pass_keys = ["method", "regime", "edit_step", "subset", "level", "k"]
    pass_keys = [
        k for k in pass_keys if k in got.columns or k in pass_at_k_table(expected, ks=(1,)).columns
    ]
    want = pass_at_k_table(expected.reset_index(drop=True), ks=(1, 3, 5))
    pd.testing.assert_frame_equal(
        _comparable(_latest(f"{merged}/pass_at_k.parquet/*/*"), pass_keys),
        _comparable(want, pass_keys),
        check_like=True,
    )
    # The adoption pipeline ran on the merged tables: its labels are those of the unsharded run's
    # executions, and the merged study has its own report.
    api_mapping = _latest(f"{sharded}/03_primary/api_mapping.parquet/*/*")
    label_keys = ["method", "regime", "edit_step", "api_id", "problem_id", "sample_idx"]
    pd.testing.assert_frame_equal(
        _comparable(_latest(f"{merged}/adoption_labels.parquet/*/*"), label_keys),
        _comparable(
            with_usage_change(
                label_executions(expected.reset_index(drop=True), api_mapping),
                _latest(f"{sharded}/03_primary/benchmark.parquet/*/*"),
            ),
            label_keys,
        ),
        check_like=True,
    )
    assert {"none", "rome"} <= set(_latest(f"{merged}/adoption_summary.parquet/*/*")["method"])
    assert "rome" in Path(merged, "study_report.html").read_text()
    for regime in ("instant", "sequential"):
        logs = pd.concat(
            [_latest(f"{base}/{m}/{regime}_edit_log.parquet/*/*") for m in ("none", "rome")]
        )
        merged_log = _latest(f"{merged}/{regime}_edit_log.parquet/*/*")
        log_keys = ["method", "edit_step", "api_id"]
        pd.testing.assert_frame_equal(
            _comparable(merged_log, log_keys)[["method", "api_id", "edit_step"]],
            _comparable(logs, log_keys)[["method", "api_id", "edit_step"]],
        )


def test_killed_fanout_resumes_without_redoing_finished_jobs(synthesised, tmp_path, ray_address):
    root = _fresh_root(synthesised, tmp_path)
    command = [sys.executable, "-m", "kedro", *_fanout_args(root, ray_address, "none", 2)]
    jobs = root / "09_fanout" / "tiny" / "jobs"
    output = tmp_path / "fanout.out"
    with open(output, "w") as sink:
        process = subprocess.Popen(
            command, cwd=PROJECT_ROOT, env=_env(), start_new_session=True, stdout=sink, stderr=sink
        )
    deadline = time.monotonic() + 300
    while not list(jobs.glob("*.done")) and time.monotonic() < deadline:
        assert process.poll() is None, output.read_text()[-3000:]
        time.sleep(0.5)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    finished_before = {path.name for path in jobs.glob("*.done")}
    assert finished_before and len(finished_before) < 3, "kill came too late to test a resume"
    time.sleep(2)  # job processes die with their Ray workers; let them go

    subprocess.run(command, cwd=PROJECT_ROOT, env=_env(), check=True)
    assert {path.name for path in jobs.glob("*.done")} == {
        "tiny.none.instant.shard_1_of_2.done",
        "tiny.none.instant.shard_2_of_2.done",
        "tiny.none.sequential.all.done",
    }
    logs = root / "09_fanout" / "tiny" / "logs"
    for done in finished_before:
        log = (logs / done.replace(".done", ".log")).read_text()
        assert log.count("$ ") == 1, f"{done} was run again after the resume"
