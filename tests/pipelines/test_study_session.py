"""The study end to end in real Kedro sessions on the `tiny` environment.

synthesis (a slice of HumanEval and MBPP) -> instant -> sequential -> evaluation -> adoption with
the tiny random Llama, the real editing methods, the real sandbox; then method selection with `namespaces`, API
shards, and resuming a run killed mid-generation (a real subprocess).
"""

import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from design_contracts import EXECUTION_CONTRACT, GENERATION_CONTRACT, PASS_AT_K_CONTRACT
from tiny_study import PROJECT_ROOT, SLICE
from tiny_study import latest as _latest
from tiny_study import mbpp_params as _mbpp_params

from apiedit_kedro.study.regimes import STUDY_METHODS

pytestmark = pytest.mark.slow


def test_every_method_and_regime_produces_contract_outputs(study_root):
    run_dir = "07_model_output/tiny/all"
    for method in STUDY_METHODS:
        for regime in ("instant", "sequential"):
            generations = _latest(study_root, f"{run_dir}/{method}/{regime}_generations.parquet")
            assert set(generations.columns) >= GENERATION_CONTRACT
            assert set(generations["method"]) == {method}
            assert set(generations["regime"]) == {regime}
            log = _latest(study_root, f"{run_dir}/{method}/{regime}_edit_log.parquet")
            assert len(log) == 2  # conf/tiny: max_apis 2
        results = _latest(study_root, f"{run_dir}/{method}/execution_results.parquet")
        assert set(results.columns) >= EXECUTION_CONTRACT
        assert set(results["world"]) == {"edited"}


def test_instant_edits_are_restored_exactly(study_root):
    for method in ("ft", "grace", "rome", "memit", "pmet"):
        log = _latest(study_root, f"07_model_output/tiny/all/{method}/instant_edit_log.parquet")
        assert log["restored_exact"].all()
        assert log["edit_seconds"].gt(0).all()


def test_pass_at_k_has_baseline_rows_for_every_table(study_root):
    table = _latest(study_root, "08_reporting/tiny/all/pass_at_k.parquet")
    assert set(table.columns) >= PASS_AT_K_CONTRACT
    assert set(table["method"]) == set(STUDY_METHODS)
    assert set(table["level"]) == {"compile", "partial", "full"}
    assert set(table["k"]) == {1, 3, 5}  # conf/tiny samples n = 5
    assert set(table["regime"]) == {"instant", "sequential"}
    for (regime, step, subset), group in table.groupby(["regime", "edit_step", "subset"]):
        assert "none" in set(group["method"]), (regime, step, subset)
    assert table["value"].between(0, 1).all()
    metrics = _latest(study_root, "08_reporting/tiny/all/edit_metrics.parquet")
    assert set(metrics["method"]) == set(STUDY_METHODS)


def test_namespaces_and_shards_select_what_they_say(study_root):
    from kedro.framework.session import KedroSession

    params = {"data_root": str(study_root), "api_shard": "2/2", **SLICE, **_mbpp_params()}
    with KedroSession.create(project_path=PROJECT_ROOT, env="tiny", runtime_params=params) as s:
        s.run(pipeline_names=["instant"], namespaces=["rome"])
    shard_dir = study_root / "07_model_output" / "tiny" / "shard_2_of_2"
    assert sorted(path.name for path in shard_dir.iterdir()) == ["rome"]
    shard_log = _latest(
        study_root, "07_model_output/tiny/shard_2_of_2/rome/instant_edit_log.parquet"
    )
    full_log = _latest(study_root, "07_model_output/tiny/all/rome/instant_edit_log.parquet")
    requests = _latest(study_root, "05_model_input/edit_requests.parquet").sort_values("seq_order")
    # Shard 2 of 2 deals every second API in seq_order; conf/tiny caps at 2 APIs per run.
    apis = list(dict.fromkeys(requests["api_id"]))
    assert list(dict.fromkeys(shard_log["api_id"])) == apis[1::2][:2]
    assert set(shard_log["api_id"]) != set(full_log["api_id"])


def _cache_rows(path: Path) -> int:
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(path, timeout=5) as connection:
            return connection.execute("SELECT COUNT(*) FROM generations").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def test_a_killed_run_resumes_without_regenerating(study_root, tmp_path):
    """Kill `kedro run` mid-generation, run it again: finished samples come from the cache."""
    data_root = tmp_path / "resume"
    # Reuse the synthesis outputs of the shared run under a fresh data root (fresh caches).
    for relative in ("03_primary", "05_model_input"):
        shutil.copytree(study_root / relative, data_root / relative)
    # One sample per batch and long completions: the run is slow enough to be caught mid-way.
    params = [f"data_root={data_root}", "generation.batch_size=1", "generation.n_samples=5"]
    params.append("generation.max_new_tokens=64")
    params += [f"{key}={value}" for key, value in {**SLICE, **_mbpp_params()}.items()]
    command = [
        sys.executable,
        "-m",
        "kedro",
        "run",
        "--env=tiny",
        "--pipeline=instant",
        "--namespaces=none",
        f"--params={','.join(params)}",
    ]
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true"}
    cache = data_root / "07_model_output" / "cache" / "generations.sqlite"
    process = subprocess.Popen(
        command,
        cwd=PROJECT_ROOT,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 240
    while _cache_rows(cache) < 3 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert process.poll() is None, "the run finished before it could be interrupted"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    kept = _cache_rows(cache)
    assert kept >= 3

    finished = subprocess.run(
        command, check=False, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    log = finished.stdout + finished.stderr
    counts = [
        re.search(r"(\d+) of (\d+) samples cached, (\d+) to generate", line)
        for line in log.splitlines()
    ]
    counts = [match for match in counts if match]
    assert counts, log[-3000:]
    assert int(counts[0].group(1)) >= 3  # the killed run's samples are reused...
    generated = sum(int(match.group(3)) for match in counts)
    assert generated == _cache_rows(cache) - kept  # ...and never generated again


def test_adoption_outputs_cover_every_edited_sample(study_root):
    from apiedit_kedro.metrics.adoption import LABELS

    results = _latest(study_root, "08_reporting/tiny/all/execution_results.parquet")
    labels = _latest(study_root, "08_reporting/tiny/all/adoption_labels.parquet")
    edited = results[results["subset"] != "specificity"]
    assert len(labels) == len(edited)
    assert set(labels["label"]) <= set(LABELS)
    summary = _latest(study_root, "08_reporting/tiny/all/adoption_summary.parquet")
    assert set(summary["method"]) == set(STUDY_METHODS)
    assert "new_api_reference" in set(summary["measure"])
    parts = _latest(study_root, "08_reporting/tiny/all/failure_decomposition.parquet")
    assert "none" not in set(parts["method"]) and len(parts) > 0
    total = parts["compile_part"] + parts["post_compile_part"]
    assert (total - parts["pass_change"]).abs().max() < 1e-12
    taxonomy = _latest(study_root, "08_reporting/tiny/all/error_taxonomy.parquet")
    failed = (~results["full_pass"]).sum()
    assert taxonomy["count"].sum() == failed
    comparison = _latest(study_root, "08_reporting/tiny/all/paired_comparison.parquet")
    assert set(comparison["reference"]) == {"none", "prepend_doc"}


def test_study_report_is_self_contained_and_says_the_scale_is_too_small(study_root):
    report = (study_root / "08_reporting/tiny/all/study_report.html").read_text()
    for heading in ("RQ1", "RQ2", "RQ3", "RQ4", "Edit costs", "Run"):
        assert f"<h2>{heading}" in report
    assert "too small to conclude anything" in report
    assert report.count("data:image/png;base64,") == 3
    assert not re.search(r"""(src|href)=['"](?!data:)""", report)  # nothing to fetch
    markdown = (study_root / "08_reporting/tiny/all/study_report.md").read_text()
    assert "| method | subset | correct_adoption |" in markdown
    for plot in ("adoption_plot", "sequential_plot", "failure_plot"):
        assert (study_root / f"08_reporting/tiny/all/{plot}.png").stat().st_size > 1000


def test_adoption_regenerates_from_stored_datasets(study_root, tmp_path):
    from kedro.framework.session import KedroSession

    report = study_root / "08_reporting/tiny/all/study_report.html"
    report.unlink()
    params = {"data_root": str(study_root), **SLICE, **_mbpp_params()}
    with KedroSession.create(project_path=PROJECT_ROOT, env="tiny", runtime_params=params) as s:
        s.run(pipeline_names=["adoption"])
    assert report.exists()


def test_adoption_before_any_evaluation_names_the_missing_dataset(tmp_path):
    from kedro.framework.session import KedroSession

    from apiedit_kedro.hooks import MissingInputError

    params = {"data_root": str(tmp_path), **SLICE, **_mbpp_params()}
    with (
        KedroSession.create(project_path=PROJECT_ROOT, env="tiny", runtime_params=params) as s,
        pytest.raises(MissingInputError, match=r"execution_results.*--pipeline=evaluation"),
    ):
        s.run(pipeline_names=["adoption"])
    assert not (tmp_path / "08_reporting").exists()  # failed before any node ran


def test_execution_results_without_label_columns_fail_naming_them(study_root):
    from apiedit_kedro.metrics.adoption import MissingColumnsError
    from apiedit_kedro.pipelines.adoption.nodes import label_adoption

    results = _latest(study_root, "08_reporting/tiny/all/execution_results.parquet")
    benchmark = _latest(study_root, "03_primary/benchmark.parquet")
    mapping = _latest(study_root, "03_primary/api_mapping.parquet")
    with pytest.raises(MissingColumnsError, match="completion, world_api_ids"):
        label_adoption(results.drop(columns=["completion", "world_api_ids"]), benchmark, mapping)
