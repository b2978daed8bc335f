"""Selecting work: API shards, the default scale, specificity samples and checkpoints."""

import pandas as pd
import pytest

from apiedit_kedro.study.selection import (
    StudyConfigError,
    checkpoints,
    parse_shard,
    problems_for_api,
    select_edit_requests,
    shard_tag,
    specificity_sample,
)


def _requests(n_apis, per_api=2):
    """`per_api` requests for each of `n_apis` APIs; API i has seq_order n_apis - 1 - i."""
    return pd.DataFrame(
        [
            {"edit_id": f"e{i}.{j}", "api_id": f"api{i}", "seq_order": n_apis - 1 - i}
            for i in range(n_apis)
            for j in range(per_api)
        ]
    )


def test_shards_partition_the_apis_in_seq_order_and_keep_their_requests_together():
    requests = _requests(7)
    shards = [select_edit_requests(requests, shard=f"{k}/3", max_apis=None) for k in (1, 2, 3)]
    seen = [edit for shard in shards for edit in shard["edit_id"]]
    assert sorted(seen) == sorted(requests["edit_id"])
    assert list(shards[0]["seq_order"]) == [0, 0, 3, 3, 6, 6]
    for shard in shards:
        assert (shard.groupby("api_id").size() == 2).all()
    assert shard_tag("2/3") == "shard_2_of_3"
    assert shard_tag("1/1") == "all"


def test_max_apis_caps_apis_after_sharding():
    selected = select_edit_requests(_requests(10), shard="2/2", max_apis=2)
    assert list(selected["seq_order"]) == [1, 1, 3, 3]
    assert selected["api_id"].nunique() == 2


@pytest.mark.parametrize("spec", ["0/3", "4/3", "2", "a/b", ""])
def test_bad_shard_spec_names_the_parameter(spec):
    with pytest.raises(StudyConfigError, match="api_shard"):
        parse_shard(spec)


def test_problems_for_api_caps_each_subset(mini_benchmark):
    chosen = problems_for_api(mini_benchmark, "math.sqrt", 1)
    assert list(chosen["subset"]) == ["reliability", "generalization"]
    assert list(problems_for_api(mini_benchmark, "os.path.join", None)["problem_id"]) == ["T/3"]


def test_a_sequential_step_takes_only_items_validated_in_its_world(mini_benchmark):
    assert problems_for_api(mini_benchmark, "math.sqrt", None, step=1).empty
    assert list(problems_for_api(mini_benchmark, "math.sqrt", None, step=2)["problem_id"]) == [
        "T/1",
        "T/2",
    ]
    assert list(problems_for_api(mini_benchmark, "os.path.join", None, step=1)["problem_id"]) == [
        "T/3"
    ]


def test_specificity_sample_is_seeded():
    benchmark = pd.DataFrame({"problem_id": [f"S/{i}" for i in range(20)], "subset": "specificity"})
    first = specificity_sample(benchmark, 5, seed=3)
    assert first.equals(specificity_sample(benchmark, 5, seed=3))
    assert len(first) == 5
    assert not first.equals(specificity_sample(benchmark, 5, seed=4))


def test_checkpoints_are_powers_of_two_and_the_last():
    assert checkpoints(1) == [1]
    assert checkpoints(4) == [1, 2, 4]
    assert checkpoints(10) == [1, 2, 4, 8, 10]
