"""The synthesis pipeline on a real slice: SequentialRunner + DataCatalog, and a KedroSession."""

import io

import pandas as pd
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from kedro_helpers import KeptDataset

from apiedit_kedro.apis.references import find_api_references
from apiedit_kedro.pipelines.synthesis import create_pipeline, nodes


@pytest.fixture(scope="module")
def slice_outputs(raw_slice, api_catalog, synthesis_params):
    humaneval, mbpp = raw_slice
    catalog = DataCatalog(
        {
            "humaneval_raw": MemoryDataset(humaneval),
            "mbpp_raw": MemoryDataset(mbpp),
            "api_catalog": MemoryDataset(api_catalog),
            "params:synthesis": MemoryDataset(synthesis_params),
            "params:synthesis.max_problems_per_source": MemoryDataset(0),
            "params:synthesis.excluded_mbpp_ids": MemoryDataset(
                synthesis_params["excluded_mbpp_ids"]
            ),
            "params:synthesis.study_counts": MemoryDataset(synthesis_params["study_counts"]),
        }
    )
    names = (
        "problems",
        "api_usages",
        "api_candidates",
        "item_candidates",
        "validation_results",
        "benchmark",
        "api_mapping",
        "edit_requests",
        "synthesis_report",
    )
    for name in names:
        catalog[name] = KeptDataset(copy_mode="assign")
    SequentialRunner().run(create_pipeline(), catalog)
    return {name: catalog[name].load() for name in names}


def test_benchmark_has_three_disjoint_subsets(slice_outputs):
    benchmark = slice_outputs["benchmark"]
    assert set(benchmark["subset"]) == {"reliability", "generalization", "specificity"}
    assert benchmark["item_id"].is_unique
    assert "MBPP/2" not in set(benchmark["problem_id"])  # few-shot ids are never benchmark items
    edited = benchmark[benchmark["subset"] != "specificity"]
    specificity = benchmark[benchmark["subset"] == "specificity"]
    assert not set(edited["problem_id"]) & set(specificity["problem_id"])
    for api_id, group in edited.groupby("api_id"):
        assert (group["subset"] == "reliability").sum() >= 1, api_id
        assert (group["subset"] == "generalization").sum() >= 1, api_id
        assert group["problem_id"].is_unique, api_id
    assert specificity["api_id"].isna().all()
    assert (benchmark["timeout_s"] >= 1.0).all() and (benchmark["timeout_s"] <= 60.0).all()


def test_a_problem_with_two_apis_gives_an_item_per_api(slice_outputs):
    edited = slice_outputs["benchmark"].query("subset != 'specificity'")
    per_problem = edited.groupby("problem_id")["api_id"].nunique()
    assert (per_problem > 1).any()
    problem_id = per_problem[per_problem > 1].index[0]
    items = edited[edited["problem_id"] == problem_id]
    mappings = slice_outputs["api_mapping"].to_dict("records")
    for item in items.itertuples(index=False):
        # the item's own world removes only its API: the others stay in their old form
        references = find_api_references(item.reference_new, mappings)
        assert references.old[item.api_id] == 0 and references.new[item.api_id] > 0
        others = set(items["api_id"]) - {item.api_id}
        assert all(references.new[other] == 0 for other in others)
        assert list(item.world_api_ids) == [item.api_id]


def test_each_item_was_validated_in_every_world_that_evaluates_it(slice_outputs):
    validation = slice_outputs["validation_results"]
    benchmark = slice_outputs["benchmark"]
    api_mapping = slice_outputs["api_mapping"]
    order = api_mapping.sort_values("seq_order")["api_id"].tolist()
    ok = validation[validation["ok"]]
    instant = set(zip(ok["problem_id"], ok["api_id"], ok["check"], strict=True))
    sequential = ok[ok["check"] == "new_sequential"].set_index(["problem_id", "step"])
    edited = benchmark[benchmark["subset"] != "specificity"]
    for item in edited.itertuples(index=False):
        for check in ("new_instant", "old_instant", "new_pristine"):
            assert (item.problem_id, item.api_id, check) in instant, (item.item_id, check)
        assert list(item.sequential_steps), item.item_id
        for step, reference in zip(item.sequential_steps, item.sequential_references, strict=True):
            assert step > order.index(item.api_id)  # the item's own API is edited by then
            row = sequential.loc[(item.problem_id, step)]
            assert row["program"] == reference
            # the reference rewrites exactly the problem's APIs removed in that world
            removed = set(order[:step]) & set(item.problem_api_ids)
            assert set(row["api_id"].split(",")) == removed
    old = validation[validation["check"] == "old_instant"]
    assert (~old["full_pass"]).all() and (old["error_type"] != "").all()


def test_prompts_are_the_original_ones_and_name_no_new_api(slice_outputs):
    benchmark = slice_outputs["benchmark"]
    problems = slice_outputs["problems"].set_index("problem_id")
    mappings = slice_outputs["api_mapping"].to_dict("records")
    new_names = [m["new_qualname"].split(".")[-1] for m in mappings]
    for row in benchmark.itertuples(index=False):
        assert row.prompt == problems.loc[row.problem_id, "prompt"]
        assert not any(name in row.prompt for name in new_names), row.item_id
        if row.subset == "specificity":
            continue
        references = find_api_references(row.reference_new, mappings)
        assert references.old[row.api_id] == 0 and references.new[row.api_id] > 0
        if row.source == "humaneval":
            assert row.reference_new.startswith(row.prompt)
    by_item = benchmark.set_index("item_id")
    assert "my_re_search(" in by_item.loc["MBPP/16@re.search", "reference_new"]


def test_every_reliability_item_is_the_source_of_one_edit_request(slice_outputs):
    requests = slice_outputs["edit_requests"]
    benchmark = slice_outputs["benchmark"]
    mapping = slice_outputs["api_mapping"].set_index("api_id")
    reliability = benchmark[benchmark["subset"] == "reliability"]
    assert sorted(requests["source_item_id"]) == sorted(reliability["item_id"])
    assert set(requests["api_id"]) == set(mapping.index)
    for request in requests.itertuples(index=False):
        assert request.seq_order == mapping.loc[request.api_id, "seq_order"]
        new_name = mapping.loc[request.api_id, "new_qualname"].split(".")[-1]
        assert request.target_new.lstrip().startswith(new_name)
        assert not request.prompt[-1].isspace()
        assert request.prompt.endswith(request.subject) and request.subject.strip()
        assert new_name not in request.prompt
        assert list(request.locality_prompts)
        for rephrase in request.rephrase_prompts:
            assert new_name not in rephrase
            assert not request.prompt.endswith(rephrase)  # another context, not a suffix
    owners = requests.groupby("subject")["api_id"].nunique()
    assert (owners == 1).all(), owners[owners > 1]


def test_report_counts_the_benchmark_and_lists_every_exclusion(slice_outputs):
    report = slice_outputs["synthesis_report"]
    benchmark = slice_outputs["benchmark"]
    counts = report[
        (report["record"] == "count") & (report["source"] == "all") & (report["reason"] == "items")
    ]
    per_subset = dict(zip(counts["subset"], counts["value"], strict=False))
    for subset in ("reliability", "generalization", "specificity"):
        assert per_subset[subset] == (benchmark["subset"] == subset).sum()
    validated = report[report["record"] == "validated_api"]
    assert len(validated) == len(slice_outputs["api_mapping"])
    assert set(report["record"]) >= {"count", "study_count", "validated_api", "dropped_api"}


def test_a_broken_catalogue_entry_is_dropped_with_its_reason(slice_outputs, synthesis_params):
    # the adapter installed in the edited world disagrees with the rewrite: re.search keeps the
    # old argument order although call sites were rewritten to (string, pattern)
    candidates = slice_outputs["api_candidates"].copy()
    broken = candidates["api_id"] == "re.search"
    candidates.loc[broken, "impl"] = '{"usage": "same"}'
    items = slice_outputs["item_candidates"]
    problems, usages = slice_outputs["problems"], slice_outputs["api_usages"]
    validation = nodes.validate_in_sandbox(problems, items, usages, candidates, synthesis_params)
    benchmark, api_mapping, report = nodes.assemble_benchmark(
        problems, items, validation, candidates, synthesis_params
    )
    assert "re.search" not in set(api_mapping["api_id"])
    assert "re.search" not in set(benchmark["api_id"].dropna())
    dropped = report[(report["record"] == "dropped_api") & (report["api_id"] == "re.search")]
    assert len(dropped) == 1
    failures = report[
        (report["stage"] == "validation:new_instant") & (report["api_id"] == "re.search")
    ]
    assert len(failures) >= 2 and failures["reason"].str.startswith("expected to pass").all()


def test_same_seed_gives_the_same_benchmark_bytes(slice_outputs, synthesis_params):
    def benchmark_bytes(params):
        benchmark, _, _ = nodes.assemble_benchmark(
            slice_outputs["problems"],
            slice_outputs["item_candidates"],
            slice_outputs["validation_results"],
            slice_outputs["api_candidates"],
            params,
        )
        buffer = io.BytesIO()
        benchmark.to_parquet(buffer)
        return benchmark, buffer.getvalue()

    first, first_bytes = benchmark_bytes(synthesis_params)
    second, second_bytes = benchmark_bytes(synthesis_params)
    assert first_bytes == second_bytes
    pd.testing.assert_frame_equal(first, second)
    reseeded, _ = benchmark_bytes({**synthesis_params, "seed": synthesis_params["seed"] + 1})
    assert set(reseeded["item_id"]) == set(first["item_id"])


def test_a_shot_candidate_left_in_the_benchmark_pool_is_refused(slice_outputs):
    problems = slice_outputs["problems"]
    with pytest.raises(ValueError, match=r"excluded_mbpp_ids lacks .*'MBPP/610', 'MBPP/619'"):
        nodes.plan_benchmark_items(
            problems,
            slice_outputs["api_usages"],
            slice_outputs["api_candidates"],
            list(range(1, 11)),
        )
