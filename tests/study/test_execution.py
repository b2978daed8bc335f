"""Sandbox requests built from generation rows: the prompt prefix is marked as not the model's."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from apiedit_kedro.study.contracts import GENERATION_KEYS
from apiedit_kedro.study.execution import WorldMismatchError, build_requests

PROMPT = 'def add_one(x: int) -> int:\n    """Return x + 1."""\n'


def _generation(problem_id: str, program: str) -> dict:
    row = dict.fromkeys(GENERATION_KEYS, "x")
    row.update(problem_id=problem_id, sample_idx=0, edit_step=0, program=program, api_id="")
    row["world_api_ids"] = json.dumps([])
    return row


def test_requests_mark_the_prompt_prefix_and_only_when_the_program_starts_with_it():
    benchmark = pd.DataFrame(
        [
            {"problem_id": "HumanEval/0", "prompt": PROMPT, "tests": ["assert add_one(1) == 2"]},
            {"problem_id": "MBPP/11", "prompt": "You are an expert...", "tests": ["assert f()"]},
        ]
    ).assign(item_id=lambda b: b["problem_id"], api_id=None, world_api_ids=[[], []])
    benchmark["sequential_steps"] = [[], []]
    generations = pd.DataFrame(
        [
            _generation("HumanEval/0", PROMPT + "    return x + 1\n"),
            _generation("MBPP/11", "def f():\n    return True\n"),
        ]
    )
    requests = build_requests(
        generations, benchmark, pd.DataFrame(columns=["api_id", "seq_order"]), default_timeout_s=3.0
    )
    assert [r["world"] for r in requests] == ["edited", "pristine"] * 2
    assert [r["prompt_chars"] for r in requests] == [len(PROMPT)] * 2 + [0, 0]


@pytest.mark.parametrize(
    ("regime", "step", "world", "valid"),
    [
        ("instant", 1, ["math.sqrt"], True),
        ("instant", 1, ["os.path.join", "math.sqrt"], False),
        ("sequential", 2, ["os.path.join", "math.sqrt"], True),
        # T/1's sqrt item was validated at step 2 only (sqrt is edited second)
        ("sequential", 1, ["os.path.join"], False),
        ("sequential", 2, ["math.sqrt", "os.path.join"], False),
    ],
)
def test_a_generation_runs_only_in_a_world_its_item_was_validated_in(
    mini_benchmark, mini_mapping, regime, step, world, valid
):
    row = _generation("T/1", mini_benchmark.iloc[0]["reference_new"])
    row.update(regime=regime, edit_step=step, api_id="math.sqrt", subset="reliability")
    row["world_api_ids"] = json.dumps(world)
    build = lambda: build_requests(  # noqa: E731
        pd.DataFrame([row]), mini_benchmark, mini_mapping, default_timeout_s=3.0
    )
    if valid:
        assert [r["world"] for r in build()] == ["edited", "pristine"]
    else:
        with pytest.raises(WorldMismatchError, match=r"T/1@math\.sqrt"):
            build()
