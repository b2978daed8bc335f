"""Fixtures for the editing tests: tiny random models of each family and the tiny hyperparameters.

Torch runs single-threaded here: on the shared 2-core CI machine two intra-op threads contend with
other work and make tiny matmuls ~10x slower.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from editing_helpers import CONF


@pytest.fixture(autouse=True)
def _single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_params() -> dict:
    return yaml.safe_load((CONF / "tiny" / "parameters_editing.yml").read_text())


@pytest.fixture(scope="session")
def covariance_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("covariance")
