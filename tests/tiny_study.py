"""One full study run on the `tiny` environment, shared by the session, lineage and notebook tests."""

from pathlib import Path

import pandas as pd
import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
MBPP = PROJECT_ROOT / "data" / "01_raw" / "mbpp.jsonl"
SHARED_MBPP = PROJECT_ROOT.parent / "shared" / "data" / "mbpp" / "mbpp.jsonl"
SLICE = {"synthesis_max_problems": 40}
REPORTING = "08_reporting/tiny/all"


def mbpp_params() -> dict:
    if MBPP.exists():
        return {}
    if SHARED_MBPP.exists():
        return {"mbpp_path": str(SHARED_MBPP)}
    pytest.skip("MBPP is not at data/01_raw/mbpp.jsonl (run scripts/setup.sh)")


def latest(root: Path, relative: str) -> pd.DataFrame:
    """The latest version of a versioned parquet dataset under `root`."""
    versions = sorted((root / relative).iterdir())
    assert versions, f"no version of {relative}"
    return pd.read_parquet(versions[-1] / Path(relative).name)


def run_tiny_study(root: Path) -> Path:
    """synthesis, then instant, sequential, evaluation and adoption, in real Kedro sessions."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(PROJECT_ROOT)
    params = {"data_root": str(root), **SLICE, **mbpp_params()}
    with KedroSession.create(project_path=PROJECT_ROOT, env="tiny", runtime_params=params) as s:
        s.run(pipeline_names=["synthesis"])
    with KedroSession.create(project_path=PROJECT_ROOT, env="tiny", runtime_params=params) as s:
        s.run(pipeline_names=["instant", "sequential", "evaluation", "adoption"])
    return root
