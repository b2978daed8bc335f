"""Shared fixtures: a real Kedro session on this project, writing into a temporary data root."""

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest
import yaml
from kedro_helpers import mbpp_path

PROJECT_ROOT = Path(__file__).resolve().parents[1]

os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core CI box they spin."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def project_root() -> Path:
    return PROJECT_ROOT


@pytest.fixture
def kedro_project_session(tmp_path: Path) -> Iterator[Callable[..., object]]:
    """Factory for real `KedroSession`s on this project.

    Outputs go under a fresh temporary `data_root` unless the caller passes its own, so tests never
    touch the repository's `data/` folder.
    """
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(PROJECT_ROOT)
    sessions = []

    def create(env: str | None = None, runtime_params: dict | None = None) -> KedroSession:
        params = {"data_root": str(tmp_path / "data")}
        params.update(runtime_params or {})
        session = KedroSession.create(project_path=PROJECT_ROOT, env=env, runtime_params=params)
        sessions.append(session)
        return session

    yield create
    for session in sessions:
        session.close()


@pytest.fixture(scope="session")
def study_root(tmp_path_factory) -> Path:
    """One full default study run on the tiny environment, shared by every test that reads it."""
    from tiny_study import run_tiny_study

    return run_tiny_study(tmp_path_factory.mktemp("study"))


# ----------------------------------------------------------------- synthesis inputs
# a slice with several problems per API (re.search, math.sqrt, sorted, ...) and specificity items
HUMANEVAL_IDS = ["HumanEval/25", "HumanEval/39", "HumanEval/87", "HumanEval/100", "HumanEval/101"]
MBPP_IDS = [2, 16, 32, 104, 195, 275, 293, 396, 482, 497, 541, 607, 643, 662, 670, 714, 731]


@pytest.fixture(scope="session")
def synthesis_params() -> dict:
    params = yaml.safe_load((PROJECT_ROOT / "conf/base/parameters_synthesis.yml").read_text())[
        "synthesis"
    ]
    params["max_problems_per_source"] = 0
    return params


@pytest.fixture(scope="session")
def api_catalog() -> dict:
    return yaml.safe_load((PROJECT_ROOT / "data/01_raw/api_catalog.yml").read_text())


@pytest.fixture(scope="session")
def raw_slice() -> tuple[pd.DataFrame, pd.DataFrame]:
    from apiedit_kedro.datasets import HumanEvalDataset

    humaneval = HumanEvalDataset().load()
    records = [json.loads(line) for line in mbpp_path().read_text().splitlines()]
    mbpp = pd.DataFrame([r for r in records if r["task_id"] in MBPP_IDS])
    return humaneval[humaneval["task_id"].isin(HUMANEVAL_IDS)].reset_index(drop=True), mbpp
