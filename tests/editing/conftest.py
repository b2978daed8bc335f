"""Fixtures for the editing tests: tiny random models of each family and the tiny hyperparameters.

Torch runs single-threaded in every test (tests/conftest.py): on the shared 2-core CI machine two
intra-op threads contend with other work and make tiny matmuls ~10x slower.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from editing_helpers import CONF


@pytest.fixture(scope="session")
def tiny_params() -> dict:
    return yaml.safe_load((CONF / "tiny" / "parameters_editing.yml").read_text())


@pytest.fixture(scope="session")
def covariance_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("covariance")
