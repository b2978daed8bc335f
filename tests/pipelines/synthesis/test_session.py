"""`kedro run --pipeline=synthesis` end to end through a real KedroSession, on a slice.

The full run takes about a minute on 2 cores (measured in the pipeline README), so CI runs the
same pipeline and catalog on the first 40 problems of each source (`synthesis_max_problems`).
"""

from pathlib import Path

import pandas as pd
from kedro_helpers import mbpp_path

from apiedit_kedro.study.prompting import MBPP_SHOT_POOL


def test_session_runs_synthesis_into_the_data_root(kedro_project_session, tmp_path):
    mbpp = mbpp_path()
    data_root = tmp_path / "data"
    session = kedro_project_session(
        runtime_params={
            "data_root": str(data_root),
            "synthesis_max_problems": 40,
            "mbpp_path": str(mbpp),
        }
    )
    session.run(pipeline_names=["synthesis"])

    def latest(folder: str, name: str) -> pd.DataFrame:
        versions = sorted(Path(data_root, folder, f"{name}.parquet").iterdir())
        return pd.read_parquet(versions[-1] / f"{name}.parquet")

    problems = latest("03_primary", "problems")
    assert set(problems["source"]) == {"humaneval", "mbpp"}
    # the MBPP few-shot candidates are always kept for the shots
    assert len(problems) == 40 + len(MBPP_SHOT_POOL) + 40
    benchmark = latest("03_primary", "benchmark")
    assert set(benchmark["subset"]) == {"reliability", "generalization", "specificity"}
    requests = latest("05_model_input", "edit_requests")
    assert set(requests["api_id"]) == set(latest("03_primary", "api_mapping")["api_id"])
    report = latest("08_reporting", "synthesis_report")
    assert (report["record"] == "study_count").any()
