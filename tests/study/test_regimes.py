"""Instant and sequential regimes on the tiny random Llama, then execution in both worlds.

Real objects throughout: a tiny transformer built in code, the real editing methods, the real
generation cache and the real sandbox.
"""

import json
import logging
import sqlite3

import pandas as pd
import pytest
from design_contracts import EXECUTION_CONTRACT, GENERATION_CONTRACT

from apiedit_kedro.editing import weight_checksum
from apiedit_kedro.models.cache import GenerationCache
from apiedit_kedro.models.prompts import HUMANEVAL_STOP_SEQUENCES
from apiedit_kedro.pipelines.editing.nodes import run_regime
from apiedit_kedro.pipelines.evaluation.nodes import (
    combine_execution_results,
    compute_pass_at_k,
    execute_generations,
    summarise_edit_metrics,
)
from apiedit_kedro.study.store import JsonStore

STUDY = {"seed": 0, "max_apis": None, "max_problems_per_subset": 1, "specificity_sample": 1}


@pytest.fixture
def run(tmp_path, mini_benchmark, mini_problems, mini_requests, mini_mapping, tiny_params):
    generation = {**tiny_params["generation"], "n_samples": 2, "max_new_tokens": 8}

    def run_method(regime, method, cache_name="generations.sqlite"):
        hparams = tiny_params.get(method, {}).get("hparams", {})
        return run_regime(
            regime,
            method,
            mini_benchmark,
            mini_problems,
            mini_requests,
            mini_mapping,
            tiny_params["model"],
            generation,
            hparams,
            STUDY,
            tiny_params["covariance"],
            "1/1",
            GenerationCache(tmp_path / cache_name),
            JsonStore(tmp_path / "state.sqlite"),
            tmp_path / "covariance",
        )

    return run_method


@pytest.mark.parametrize("method", ["none", "prepend_doc", "rome", "grace"])
def test_instant_outputs_follow_the_contract(run, method, tmp_path):
    generations, log = run("instant", method)
    assert set(generations.columns) >= GENERATION_CONTRACT
    # 2 APIs x (1 reliability + 1 generalization for sqrt, 1 reliability for join, 1 specificity)
    # x 2 samples
    assert len(generations) == (3 + 2) * 2
    assert set(generations["subset"]) == {"reliability", "generalization", "specificity"}
    assert set(generations["method"]) == {method}
    assert list(log["api_id"]) == ["os.path.join", "math.sqrt"]  # seq_order
    # HumanEval-format rows are generated with the format's stop sequences (bigcode's list).
    for completion in generations["completion"]:
        assert not any(stop in completion for stop in HUMANEVAL_STOP_SEQUENCES), completion
    with sqlite3.connect(tmp_path / "generations.sqlite") as connection:
        decodings = {
            json.loads(row[0])["stop_sequences"].__repr__()
            for row in connection.execute("SELECT DISTINCT decoding FROM generations")
        }
    assert decodings == {repr(list(HUMANEVAL_STOP_SEQUENCES))}
    assert log["restored_exact"].all()
    if method in ("rome", "grace"):
        assert {"rewrite_acc", "rephrase_acc", "locality", "edit_seconds"} <= set(log.columns)
        assert log["edit_seconds"].gt(0).all()
    if method == "grace":
        # Every prompt position and decoded token is one codebook query. (On this random model
        # the generation prompts' keys all lie outside the tiny radius, so it fires 0 times.)
        assert log["grace_queries"].gt(0).all()
        assert (log["grace_fired"] <= log["grace_queries"]).all()
    else:
        assert "grace_queries" not in log.columns


def test_prepend_doc_changes_the_prompt_not_the_weights(run, tmp_path):
    none, _ = run("instant", "none")
    with_doc, _ = run("instant", "prepend_doc")
    cache = GenerationCache(tmp_path / "generations.sqlite")
    # `none` sees 4 distinct prompts (the specificity problem is shared by both edits, same
    # weights): 8 samples. `prepend_doc` prefixes each API's doc, so the specificity prompt differs
    # per edit: 5 prompts, 10 samples, none of them shared with `none`.
    assert len(cache) == 8 + 10
    # The preamble is a comment in front of the prompt: the programs start with the problem prompt.
    assert with_doc["program"].str.startswith(("import", "def")).all()
    assert set(none["weight_state"]) == set(with_doc["weight_state"]) == {"base"}


def test_instant_rerun_reuses_edits_and_generations(run, tmp_path, caplog):
    first, first_log = run("instant", "rome")
    cache_size = len(GenerationCache(tmp_path / "generations.sqlite"))
    with caplog.at_level(logging.INFO, logger="apiedit_kedro.study.regimes"):
        second, second_log = run("instant", "rome")
    assert len(GenerationCache(tmp_path / "generations.sqlite")) == cache_size
    assert any("already edited and generated" in message for message in caplog.messages)
    pd.testing.assert_frame_equal(first, second)
    assert list(first_log["edit_seconds"]) == list(second_log["edit_seconds"])


def test_sequential_accumulates_edits_and_records_drift(run):
    generations, log = run("sequential", "rome")
    assert list(log["edit_step"]) == [1, 2]
    assert log["checkpoint"].all()
    assert log["drift_total"].iloc[1] >= log["drift_total"].iloc[0] > 0
    step_two = generations[generations["edit_step"] == 2]
    assert json.loads(step_two["world_api_ids"].iloc[0]) == ["os.path.join", "math.sqrt"]
    # At step 2 both APIs' problems and the specificity sample are generated.
    assert set(step_two["problem_id"]) == {"T/1", "T/2", "T/3", "T/4"}


def test_evaluation_executes_in_both_worlds_with_baseline_rows(
    run, tmp_path, mini_benchmark, mini_mapping
):
    store = JsonStore(tmp_path / "executions.sqlite")
    settings = {"default_timeout_s": 5.0, "workers": 2, "ks": [1, 2]}
    results, logs = [], []
    for method in ("none", "rome"):
        instant, instant_log = run("instant", method)
        sequential, sequential_log = run("sequential", method)
        results.append(
            execute_generations(instant, sequential, mini_benchmark, mini_mapping, store, settings)
        )
        logs += [instant_log, sequential_log]
    combined = combine_execution_results(*results)
    assert set(combined.columns) >= EXECUTION_CONTRACT
    # Edited + pristine world per sample; identical requests (same program, same world) are
    # executed once.
    executed = len(store)
    assert 0 < executed <= 2 * len(combined)
    again = execute_generations(instant, sequential, mini_benchmark, mini_mapping, store, settings)
    assert len(store) == executed
    pd.testing.assert_frame_equal(again, results[-1])

    table = compute_pass_at_k(combined, settings)
    assert {"none", "rome"} == set(table["method"])
    assert set(table["level"]) == {"compile", "partial", "full"}
    assert set(table["k"]) == {1, 2}
    assert table["value"].between(0, 1).all()

    summary = summarise_edit_metrics(*logs)
    assert {("none", "instant"), ("rome", "sequential")} <= set(
        zip(summary["method"], summary["regime"], strict=True)
    )
    assert summary.loc[summary["method"] == "rome", "n_edits"].tolist() == [2, 2]


def test_hand_written_programs_get_the_expected_verdicts(tmp_path, mini_benchmark, mini_mapping):
    """The evaluation world is the set of edited APIs: old code fails there, new code passes."""
    sqrt_row = mini_benchmark.iloc[0]
    rows = []
    for sample_idx, program in enumerate([sqrt_row["reference_old"], sqrt_row["reference_new"]]):
        rows.append(
            {
                "model": "tiny",
                "method": "none",
                "regime": "instant",
                "edit_step": 1,
                "api_id": "math.sqrt",
                "problem_id": "T/1",
                "subset": "reliability",
                "sample_idx": sample_idx,
                "completion": "",
                "program": program,
                "finish_reason": "stop",
                "gen_seconds": 0.0,
                "world_api_ids": json.dumps(["math.sqrt"]),
                "weight_state": "base",
            }
        )
    generations = pd.DataFrame(rows)
    results = execute_generations(
        generations,
        generations.iloc[0:0],
        mini_benchmark,
        mini_mapping,
        JsonStore(tmp_path / "exec.sqlite"),
        {"default_timeout_s": 5.0, "workers": 1},
    )
    old, new = results.iloc[0], results.iloc[1]
    assert not old["compiles"] and not old["full_pass"] and old["pristine_full_pass"]
    assert old["old_api_refs"] >= 1
    assert new["compiles"] and new["full_pass"] and not new["pristine_full_pass"]
    assert new["new_api_calls"] >= 1


def test_restore_is_exact_between_instant_edits(tiny_params, mini_requests):
    from apiedit_kedro.editing import apply_edits
    from apiedit_kedro.models.loading import load_model

    loaded = load_model(tiny_params["model"])
    before = weight_checksum(loaded.model)
    for request in mini_requests.to_dict("records"):
        result = apply_edits(
            loaded.model,
            loaded.tokenizer,
            [request],
            method="ft",
            hparams=tiny_params["ft"]["hparams"],
        )
        assert weight_checksum(loaded.model) != before
        result.restore(loaded.model)
        assert weight_checksum(loaded.model) == before


@pytest.mark.parametrize("method", ["rome", "ft"])
def test_an_instant_edit_applies_every_request_of_its_api(
    tmp_path, method, mini_benchmark, mini_problems, mini_requests, mini_mapping, tiny_params
):
    """ROME edits an API's requests one after another, FT as one batch; each gets a log row."""
    second = {
        **mini_benchmark.iloc[0].to_dict(),
        "item_id": "T/5@math.sqrt",
        "problem_id": "T/5",
        "prompt": mini_benchmark.iloc[0]["prompt"].replace("root", "sqroot"),
        "entry_point": "sqroot",
    }
    benchmark = pd.concat([mini_benchmark, pd.DataFrame([second])], ignore_index=True)
    extra = {
        **mini_requests.iloc[0].to_dict(),
        "edit_id": "edit:T/5@math.sqrt",
        "source_item_id": "T/5@math.sqrt",
        "prompt": "import math\n\ndef sqroot(x):\n    return",
    }
    requests = pd.concat([mini_requests, pd.DataFrame([extra])], ignore_index=True)
    generation = {**tiny_params["generation"], "n_samples": 1, "max_new_tokens": 4}

    def run_at(scale):
        return run_regime(
            "instant",
            method,
            benchmark,
            mini_problems,
            requests,
            mini_mapping,
            tiny_params["model"],
            generation,
            tiny_params[method]["hparams"],
            {**STUDY, "max_problems_per_subset": scale},
            tiny_params["covariance"],
            "1/1",
            GenerationCache(tmp_path / f"generations-{scale}.sqlite"),
            JsonStore(tmp_path / f"state-{scale}.sqlite"),
            tmp_path / "covariance",
        )

    generations, log = run_at(None)
    sqrt_rows = log[log["api_id"] == "math.sqrt"]
    assert sorted(sqrt_rows["edit_id"]) == ["edit:T/1@math.sqrt", "edit:T/5@math.sqrt"]
    assert (sqrt_rows["edit_step"] == 1).all() and sqrt_rows["restored_exact"].all()
    # both requests shaped the one weight state the API's items were generated under
    sqrt_states = set(generations.loc[generations["api_id"] == "math.sqrt", "weight_state"])
    assert len(sqrt_states) == 1
    assert set(generations.loc[generations["subset"] == "reliability", "problem_id"]) == {
        "T/1",
        "T/3",
        "T/5",
    }
    # a capped run evaluates one reliability item per API and edits only that item's request
    _, capped_log = run_at(1)
    assert list(capped_log.loc[capped_log["api_id"] == "math.sqrt", "edit_id"]) == [
        "edit:T/1@math.sqrt"
    ]
