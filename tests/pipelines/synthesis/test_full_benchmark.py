"""The whole benchmark, synthesized from all of HumanEval and MBPP (about a minute on 2 cores).

What the model sees is checked item by item, in every world the item is evaluated in: no prompt
names a new API, and no prompt (shots included) uses an API removed in that world.
"""

import json

import pandas as pd
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from kedro_helpers import KeptDataset, mbpp_path

from apiedit_kedro.apis.mapping import parse_mappings
from apiedit_kedro.apis.references import find_api_references
from apiedit_kedro.benchmark.items import prompt_uses
from apiedit_kedro.datasets import HumanEvalDataset
from apiedit_kedro.pipelines.synthesis import create_pipeline
from apiedit_kedro.study.prompting import mbpp_shots

OUTPUTS = ("problems", "benchmark", "api_mapping", "edit_requests", "synthesis_report")


@pytest.fixture(scope="module")
def full(api_catalog, synthesis_params):
    records = [json.loads(line) for line in mbpp_path().read_text().splitlines()]
    catalog = DataCatalog(
        {
            "humaneval_raw": MemoryDataset(HumanEvalDataset().load()),
            "mbpp_raw": MemoryDataset(pd.DataFrame(records)),
            "api_catalog": MemoryDataset(api_catalog),
            "params:synthesis": MemoryDataset(synthesis_params),
            "params:synthesis.max_problems_per_source": MemoryDataset(0),
            "params:synthesis.excluded_mbpp_ids": MemoryDataset(
                synthesis_params["excluded_mbpp_ids"]
            ),
            "params:synthesis.study_counts": MemoryDataset(synthesis_params["study_counts"]),
        }
    )
    for name in OUTPUTS:
        catalog[name] = KeptDataset(copy_mode="assign")
    SequentialRunner().run(create_pipeline(), catalog)
    return {name: catalog[name].load() for name in OUTPUTS}


def _worlds(item, order):
    """Every world the item is evaluated in: its instant world and its sequential checkpoints."""
    yield list(item.world_api_ids)
    for step in item.sequential_steps:
        yield order[:step]


def test_no_prompt_names_a_new_api_or_uses_a_removed_one_in_its_worlds(full):
    benchmark, api_mapping = full["benchmark"], full["api_mapping"]
    mappings = {m.api_id: m for m in parse_mappings(api_mapping.to_dict("records"))}
    new_names = sorted({m.new_name for m in mappings.values()})
    order = api_mapping.sort_values("seq_order")["api_id"].tolist()
    shots = mbpp_shots(full["problems"])
    records = {row["api_id"]: row for row in api_mapping.to_dict("records")}
    checked = 0
    for item in benchmark.itertuples(index=False):
        assert not [name for name in new_names if name in item.prompt], item.item_id
        for world in _worlds(item, order):
            world_mappings = [mappings[api_id] for api_id in world]
            if item.source == "humaneval":
                assert not prompt_uses(item.prompt, world_mappings), (item.item_id, world)
            else:
                chosen = shots.for_world([records[api_id] for api_id in world])
                assert len(chosen) >= 2, world
                for shot in chosen:
                    code = "\n".join([shot["reference_solution"], *shot["tests"]])
                    assert not any(find_api_references(code, world_mappings).old.values())
                tests = "\n".join(item.tests)
                assert not any(find_api_references(tests, world_mappings).old.values())
            checked += 1
    assert checked > len(benchmark)


def test_every_reliability_item_is_edited_and_no_two_apis_share_a_subject(full):
    benchmark, requests = full["benchmark"], full["edit_requests"]
    reliability = benchmark[benchmark["subset"] == "reliability"]
    assert sorted(requests["source_item_id"]) == sorted(reliability["item_id"])
    owners = requests.groupby("subject")["api_id"].nunique()
    assert (owners == 1).all(), owners[owners > 1].index.tolist()
    assert not requests["prompt"].str[-1].str.isspace().any()


def test_the_benchmark_has_the_size_and_usage_mix_it_reports(full):
    benchmark, api_mapping = full["benchmark"], full["api_mapping"]
    edited = benchmark[benchmark["subset"] != "specificity"]
    assert len(edited) >= 797
    assert len(api_mapping) >= 60
    assert edited["usage_enforced"].mean() >= 0.5
    for kind in ("reorder", "pack_varargs", "keyword_only", "rename_keywords"):
        assert edited.loc[edited["usage_kind"] == kind, "usage_enforced"].any(), kind
    report = full["synthesis_report"]
    counts = report[report["record"] == "count"].set_index(["reason", "subset", "source"])["value"]
    assert counts[("items", "all", "all")] == len(benchmark)
    assert counts[("validated APIs", "", "")] == len(api_mapping)
    assert counts[("usage-enforced items", "", "")] == edited["usage_enforced"].sum()
    # items that are evaluated in no sequential world are the exception, not the rule
    assert (edited["sequential_steps"].map(len) > 0).mean() > 0.95
