import time
from pathlib import Path

import pytest
import torch
import yaml

from apiedit_kedro.models.cards import ModelCard, ModelCardError
from apiedit_kedro.models.generation import DecodingParams, generate
from apiedit_kedro.models.loading import ModelNotAvailableError, load_model

CONF = Path(__file__).resolve().parents[2] / "conf"


def _card(env: str) -> dict:
    return yaml.safe_load((CONF / env / "parameters_model.yml").read_text())["model"]


@pytest.mark.parametrize(
    "env",
    [
        "base",
        "gemma3_270m",
        "smollm2_135m",
        "codellama_7b",
        "codeqwen15_7b",
        "deepseek_coder_67b",
        "tiny",
    ],
)
def test_every_environment_card_is_valid(env):
    card = ModelCard.from_params(_card(env))
    assert card.name == ("gemma3_270m" if env == "base" else env)


def test_tiny_card_loads_with_left_padding():
    loaded = load_model(_card("tiny"))
    assert type(loaded.model).__name__ == "LlamaForCausalLM"
    assert loaded.tokenizer.padding_side == "left" and loaded.device.type == "cpu"


@pytest.mark.parametrize("env", ["codellama_7b", "codeqwen15_7b", "deepseek_coder_67b"])
def test_missing_hub_model_fails_fast_with_one_clear_error(env, tmp_path, monkeypatch):
    # An empty HF cache stands in for a machine that never downloaded the 7B weights.
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    card = _card(env)
    started = time.perf_counter()
    with pytest.raises(ModelNotAvailableError) as error:
        load_model(card)
    assert time.perf_counter() - started < 5
    message = str(error.value)
    assert repr(env) in message
    assert f"huggingface-cli download {card['hub_id']}" in message
    assert "model.path" in message


def test_missing_package_and_local_dir_name_the_card(tmp_path):
    with pytest.raises(ModelNotAvailableError, match=r"'ghost'.*package 'no_such_gguf_pkg'"):
        load_model({"name": "ghost", "source": "gguf_package", "package": "no_such_gguf_pkg"})
    with pytest.raises(ModelNotAvailableError, match=r"'mine'.*no config\.json"):
        load_model({"name": "mine", "source": "local", "path": str(tmp_path)})


def test_local_directory_round_trip(tmp_path):
    tiny = load_model(_card("tiny"))
    tiny.model.save_pretrained(tmp_path)
    tiny.tokenizer.save_pretrained(tmp_path)
    local = load_model(
        {"name": "copy", "source": "local", "path": str(tmp_path), "dtype": "float32"}
    )
    params = DecodingParams(max_new_tokens=6)
    prompts = ["def f(x):\n", "import os"]
    expected = generate(tiny.model, tiny.tokenizer, prompts, params, progress=False)
    assert [
        g.completion
        for g in generate(local.model, local.tokenizer, prompts, params, progress=False)
    ] == [g.completion for g in expected]
    assert next(local.model.parameters()).dtype == torch.float32


def test_bad_cards_are_rejected_naming_the_field():
    with pytest.raises(ModelCardError, match=r"'x'.*unknown key\(s\) \['edit_layer'\].*extra"):
        ModelCard.from_params(
            {"name": "x", "source": "tiny", "tiny_family": "llama", "edit_layer": 3}
        )
    with pytest.raises(ModelCardError, match="'x': source 'hub' needs `hub_id`"):
        ModelCard.from_params({"name": "x", "source": "hub"})
    with pytest.raises(ModelCardError, match="prompt_style must be one of completion, chat"):
        ModelCard.from_params(
            {"name": "x", "source": "tiny", "tiny_family": "llama", "prompt_style": "fim"}
        )


def test_fingerprint_tracks_outputs_not_device():
    base = _card("tiny")
    card = ModelCard.from_params(base)
    assert card.fingerprint() == ModelCard.from_params({**base, "device": "cuda"}).fingerprint()
    assert card.fingerprint() != ModelCard.from_params({**base, "seed": 1}).fingerprint()
