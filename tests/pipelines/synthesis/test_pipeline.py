"""The synthesis pipeline on a real slice: SequentialRunner + DataCatalog, and a KedroSession."""

import io

import pandas as pd
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from apiedit_kedro.apis.references import find_api_references
from apiedit_kedro.pipelines.synthesis import create_pipeline, nodes


class _KeptDataset(MemoryDataset):
    """Keeps intermediate results after the runner releases them, so tests can inspect them."""

    def _release(self) -> None:
        pass


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
            "params:synthesis.study_counts": MemoryDataset(synthesis_params["study_counts"]),
        }
    )
    names = (
        "problems",
        "api_usages",
        "api_candidates",
        "rewritten_references",
        "validation_results",
        "benchmark",
        "api_mapping",
        "edit_requests",
        "synthesis_report",
    )
    for name in names:
        catalog[name] = _KeptDataset(copy_mode="assign")
    SequentialRunner().run(create_pipeline(), catalog)
    return {name: catalog[name].load() for name in names}


def test_benchmark_has_three_disjoint_subsets(slice_outputs):
    benchmark = slice_outputs["benchmark"]
    assert set(benchmark["subset"]) == {"reliability", "generalization", "specificity"}
    assert benchmark["problem_id"].is_unique
    assert "MBPP/2" not in set(benchmark["problem_id"])  # few-shot ids are never benchmark items
    edited = benchmark[benchmark["subset"] != "specificity"]
    for api_id, group in edited.groupby("api_id"):
        assert (group["subset"] == "reliability").sum() >= 1, api_id
        assert (group["subset"] == "generalization").sum() >= 1, api_id
    assert benchmark.loc[benchmark["subset"] == "specificity", "api_id"].isna().all()
    assert (benchmark["timeout_s"] >= 1.0).all() and (benchmark["timeout_s"] <= 60.0).all()


def test_references_were_validated_in_both_worlds(slice_outputs):
    validation = slice_outputs["validation_results"]
    benchmark = slice_outputs["benchmark"]
    edited = set(benchmark.loc[benchmark["subset"] != "specificity", "problem_id"])
    kept = validation[validation["problem_id"].isin(edited)]
    assert set(kept["check"]) == {"reference_pristine", "new_edited", "old_edited", "new_pristine"}
    assert kept["ok"].all()
    old = kept[kept["check"] == "old_edited"]
    assert (~old["full_pass"]).all() and (old["error_type"] != "").all()


def test_prompts_and_references_use_only_the_new_api(slice_outputs):
    benchmark = slice_outputs["benchmark"]
    mappings = slice_outputs["api_mapping"].to_dict("records")
    edited = benchmark[benchmark["subset"] != "specificity"]
    for row in edited.itertuples(index=False):
        assert not any(find_api_references(row.reference_new, mappings).old.values()), (
            row.problem_id
        )
        assert find_api_references(row.reference_new, mappings).new[row.api_id] > 0
        if row.source == "humaneval":
            assert row.reference_new.startswith(row.prompt)
            assert not any(find_api_references(row.prompt, mappings).old.values())
        else:
            assert row.prompt.startswith("You are an expert Python programmer")
    by_id = benchmark.set_index("problem_id")
    assert "my_re_search(" in by_id.loc["MBPP/16", "reference_new"]


def test_edit_requests_point_at_the_new_call(slice_outputs):
    requests = slice_outputs["edit_requests"]
    mapping = slice_outputs["api_mapping"].set_index("api_id")
    assert sorted(requests["seq_order"]) == list(range(len(requests)))
    assert set(requests["api_id"]) == set(mapping.index)
    for request in requests.itertuples(index=False):
        new_name = mapping.loc[request.api_id, "new_qualname"].split(".")[-1]
        assert request.target_new.startswith(new_name)
        assert request.prompt.endswith(request.subject) and request.subject.strip()
        assert list(request.locality_prompts) and list(request.rephrase_prompts)


def test_report_counts_the_benchmark_and_lists_every_exclusion(slice_outputs):
    report = slice_outputs["synthesis_report"]
    benchmark = slice_outputs["benchmark"]
    counts = report[(report["record"] == "count") & (report["source"] == "all")]
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
    rewritten = slice_outputs["rewritten_references"]
    problems, usages = slice_outputs["problems"], slice_outputs["api_usages"]
    validation = nodes.validate_in_sandbox(
        problems, rewritten, usages, candidates, synthesis_params
    )
    benchmark, api_mapping, report = nodes.assemble_benchmark(
        problems=problems,
        rewritten=rewritten,
        api_usages=usages,
        validation=validation,
        api_candidates=candidates,
        params=synthesis_params,
    )
    assert "re.search" not in set(api_mapping["api_id"])
    assert "re.search" not in set(benchmark["api_id"].dropna())
    dropped = report[(report["record"] == "dropped_api") & (report["api_id"] == "re.search")]
    assert len(dropped) == 1
    failures = report[
        (report["stage"] == "validation:new_edited") & report["api_id"].str.contains("re.search")
    ]
    assert len(failures) >= 2 and failures["reason"].str.startswith("expected to pass").all()


def test_same_seed_gives_the_same_benchmark_bytes(slice_outputs, synthesis_params):
    def benchmark_bytes(params):
        benchmark, _, _ = nodes.assemble_benchmark(
            problems=slice_outputs["problems"],
            rewritten=slice_outputs["rewritten_references"],
            api_usages=slice_outputs["api_usages"],
            validation=slice_outputs["validation_results"],
            api_candidates=slice_outputs["api_candidates"],
            params=params,
        )
        buffer = io.BytesIO()
        benchmark.to_parquet(buffer)
        return benchmark, buffer.getvalue()

    first, first_bytes = benchmark_bytes(synthesis_params)
    second, second_bytes = benchmark_bytes(synthesis_params)
    assert first_bytes == second_bytes
    pd.testing.assert_frame_equal(first, second)
    reseeded, _ = benchmark_bytes({**synthesis_params, "seed": synthesis_params["seed"] + 1})
    assert set(reseeded["problem_id"]) == set(first["problem_id"])
