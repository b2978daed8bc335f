"""benchmarks/edit_cost.py's covariance-order diagnostic: `--covariance-order path` must make the
child read exactly the sampled blocks, sorted by (file, offset), and key its cache apart."""

import importlib.util

import pytest

from apiedit_kedro.editing import covariance
from tests.kedro_helpers import PROJECT_ROOT

SCRIPT = PROJECT_ROOT / "benchmarks" / "edit_cost.py"


@pytest.fixture
def edit_cost(monkeypatch):
    spec = importlib.util.spec_from_file_location("edit_cost", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # the diagnostic swaps the module's block order for the process; restore it after the test
    monkeypatch.setattr(covariance, "_blocks", covariance._blocks)
    covariance.chunk_list_hash.cache_clear()
    yield module
    covariance.chunk_list_hash.cache_clear()


def test_path_order_reads_the_same_blocks_sorted_and_changes_the_chunk_hash(edit_cost, tmp_path):
    for name, size in (("b.py", 900), ("a.py", 2500), ("c.py", 40)):
        (tmp_path / name).write_text("x = 1\n" * (size // 6))
    files = covariance.corpus_files(str(tmp_path))
    sampled = list(covariance._blocks(files, 64, 3))
    sampled_hash = covariance.chunk_list_hash(str(tmp_path), 64, 3)
    covariance.chunk_list_hash.cache_clear()

    edit_cost._read_corpus_in_path_order()

    in_path_order = covariance._blocks(files, 64, 3)
    width = 4 * 64
    expected = [
        (index, offset)
        for index, name in enumerate(("a.py", "b.py", "c.py"))
        for offset in range(0, (tmp_path / name).stat().st_size, width)
    ]
    assert in_path_order == expected
    assert sorted(sampled) == expected and sampled != expected
    assert covariance.chunk_list_hash(str(tmp_path), 64, 3) != sampled_hash
