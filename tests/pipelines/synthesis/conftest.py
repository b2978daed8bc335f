"""Shared inputs of the synthesis tests: the real catalogue and parameters, real problems."""

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from apiedit_kedro.datasets import HumanEvalDataset

ROOT = Path(__file__).resolve().parents[3]
SHARED_MBPP = ROOT.parent / "shared" / "data" / "mbpp" / "mbpp.jsonl"
LOCAL_MBPP = ROOT / "data" / "01_raw" / "mbpp.jsonl"

# a slice with several problems per API (re.search, math.sqrt, sorted, ...) and specificity items
HUMANEVAL_IDS = ["HumanEval/25", "HumanEval/39", "HumanEval/87", "HumanEval/100", "HumanEval/101"]
MBPP_IDS = [2, 16, 32, 104, 195, 275, 293, 396, 482, 497, 541, 607, 643, 662, 670, 714, 731]


def _mbpp_path() -> Path:
    for path in (LOCAL_MBPP, SHARED_MBPP):
        if path.is_file():
            return path
    pytest.skip("MBPP is not present (data/01_raw/mbpp.jsonl or ../shared/data/mbpp/mbpp.jsonl)")


@pytest.fixture(scope="session")
def synthesis_params() -> dict:
    params = yaml.safe_load((ROOT / "conf/base/parameters_synthesis.yml").read_text())["synthesis"]
    params["max_problems_per_source"] = 0
    return params


@pytest.fixture(scope="session")
def api_catalog() -> dict:
    return yaml.safe_load((ROOT / "data/01_raw/api_catalog.yml").read_text())


@pytest.fixture(scope="session")
def raw_slice() -> tuple[pd.DataFrame, pd.DataFrame]:
    humaneval = HumanEvalDataset().load()
    records = [json.loads(line) for line in _mbpp_path().read_text().splitlines()]
    mbpp = pd.DataFrame([r for r in records if r["task_id"] in MBPP_IDS])
    return humaneval[humaneval["task_id"].isin(HUMANEVAL_IDS)].reset_index(drop=True), mbpp
