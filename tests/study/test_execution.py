"""Sandbox requests built from generation rows: the prompt prefix is marked as not the model's."""

from __future__ import annotations

import json

import pandas as pd

from apiedit_kedro.study.contracts import GENERATION_KEYS
from apiedit_kedro.study.execution import build_requests

PROMPT = 'def add_one(x: int) -> int:\n    """Return x + 1."""\n'


def _generation(problem_id: str, program: str) -> dict:
    row = dict.fromkeys(GENERATION_KEYS, "x")
    row.update(problem_id=problem_id, sample_idx=0, edit_step=0, program=program)
    row["world_api_ids"] = json.dumps([])
    return row


def test_requests_mark_the_prompt_prefix_and_only_when_the_program_starts_with_it():
    benchmark = pd.DataFrame(
        [
            {"problem_id": "HumanEval/0", "prompt": PROMPT, "tests": ["assert add_one(1) == 2"]},
            {"problem_id": "MBPP/11", "prompt": "You are an expert...", "tests": ["assert f()"]},
        ]
    )
    generations = pd.DataFrame(
        [
            _generation("HumanEval/0", PROMPT + "    return x + 1\n"),
            _generation("MBPP/11", "def f():\n    return True\n"),
        ]
    )
    requests = build_requests(
        generations, benchmark, pd.DataFrame(columns=["api_id"]), default_timeout_s=3.0
    )
    assert [r["world"] for r in requests] == ["edited", "pristine"] * 2
    assert [r["prompt_chars"] for r in requests] == [len(PROMPT)] * 2 + [0, 0]
