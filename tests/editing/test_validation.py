"""Bad input fails early with an error naming the offender; a failed edit leaves the model unchanged."""

from __future__ import annotations

import pytest
import torch
from editing_helpers import CONF, PROMPT, TARGET, tiny_covariance
from transformers import GPT2Config, GPT2LMHeadModel

from apiedit_kedro.editing import (
    METHODS,
    CovarianceStats,
    EditError,
    HparamError,
    RequestError,
    UnsupportedArchitectureError,
    apply_edits,
    parse_hparams,
    weight_checksum,
)
from apiedit_kedro.models.tiny import build_tiny_model

GOOD = {"prompt": PROMPT, "target_new": TARGET, "edit_id": "good"}


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (
            {"prompt": PROMPT, "target_new": TARGET, "subject": "bisect", "edit_id": "bad"},
            "subject 'bisect'",
        ),
        ({"prompt": PROMPT, "target_new": "  ", "edit_id": "bad"}, "empty target_new"),
        (
            {"prompt": "x = 1\n" * 2000, "target_new": TARGET, "edit_id": "bad"},
            "longer than the model context",
        ),
    ],
)
@pytest.mark.parametrize("method", METHODS)
def test_bad_request_names_it_and_changes_nothing(
    bad, message, method, tiny_params, covariance_dir
):
    model, tokenizer = build_tiny_model("llama", seed=0)
    covariance = tiny_covariance(model, tokenizer, tiny_params, covariance_dir)
    checksum = weight_checksum(model)
    with pytest.raises(RequestError, match=rf"request 1 \(bad\).*{message}"):
        apply_edits(
            model,
            tokenizer,
            [GOOD, bad],
            method=method,
            hparams=tiny_params[method],
            covariance=covariance,
        )
    assert weight_checksum(model) == checksum


@pytest.mark.parametrize("method", ["memit", "pmet"])
def test_failure_after_the_first_layer_leaves_the_model_unchanged(
    method, tiny_params, covariance_dir
):
    model, tokenizer = build_tiny_model("gemma3", seed=0)
    covariance = tiny_covariance(model, tokenizer, tiny_params, covariance_dir)
    # corrupt statistics for the last edit layer only: layer 0 is updated, then layer 1 fails
    broken = CovarianceStats(
        sums={0: covariance.sums[0], 1: torch.full_like(covariance.sums[1], float("nan"))},
        counts=covariance.counts,
    )
    apply_edits(
        model, tokenizer, [GOOD], method=method, hparams=tiny_params[method], covariance=covariance
    )
    edited = weight_checksum(model)
    with pytest.raises(EditError, match=rf"{method} edit of good failed"):
        apply_edits(
            model, tokenizer, [GOOD], method=method, hparams=tiny_params[method], covariance=broken
        )
    assert weight_checksum(model) == edited  # the earlier call's edit stays, the failed call's goes


def test_failed_grace_edit_removes_its_codebook_entry(tiny_params):
    model, tokenizer = build_tiny_model("llama", seed=0)
    checksum = weight_checksum(model)
    hparams = {**tiny_params["grace"]["hparams"], "edit_lr": 1e38}  # the value overflows to inf/NaN
    with pytest.raises(EditError, match="grace edit of good failed"):
        apply_edits(model, tokenizer, [GOOD], method="grace", hparams=hparams)
    assert weight_checksum(model) == checksum
    assert isinstance(model.model.layers[1].mlp.down_proj, torch.nn.Linear)


def test_unknown_method_lists_the_five():
    model, tokenizer = build_tiny_model("llama", seed=0)
    with pytest.raises(ValueError, match="ft, grace, rome, memit, pmet"):
        apply_edits(model, tokenizer, [GOOD], method="mend", hparams={})


def test_unsupported_architecture_lists_the_supported_ones():
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50))
    _, tokenizer = build_tiny_model("llama", seed=0)
    with pytest.raises(UnsupportedArchitectureError, match="llama, qwen2, gemma3_text"):
        apply_edits(model, tokenizer, [GOOD], method="ft", hparams={"layers": [0]})


def test_missing_covariance_and_bad_layers_fail_before_work(tiny_params):
    model, tokenizer = build_tiny_model("llama", seed=0)
    with pytest.raises(ValueError, match="memit needs covariance"):
        apply_edits(model, tokenizer, [GOOD], method="memit", hparams=tiny_params["memit"])
    with pytest.raises(ValueError, match="layer 7 does not exist"):
        apply_edits(model, tokenizer, [GOOD], method="ft", hparams={"layers": [7]})
    with pytest.raises(
        ValueError, match=r"one request at a time.*batch mode exists for ft, memit, pmet"
    ):
        apply_edits(
            model, tokenizer, [GOOD], method="rome", hparams=tiny_params["rome"], mode="batch"
        )
    with pytest.raises(ValueError, match="pmet needs covariance"):
        apply_edits(model, tokenizer, [GOOD], method="pmet", hparams=tiny_params["pmet"])
    with pytest.raises(ValueError, match="choose one of ft, grace, rome, memit, pmet"):
        apply_edits(model, tokenizer, [GOOD], method="romee", hparams={})


def test_hparams_are_typed_and_checked():
    typed = parse_hparams("ft", {"layers": [1], "lr": "5e-4", "norm_constraint": "false"})
    assert typed.lr == 5e-4 and typed.norm_constraint is False
    with pytest.raises(HparamError, match=r"rome.hparams: unknown key\(s\) \['v_lrr'\]"):
        parse_hparams("rome", {"layers": [1], "v_lrr": 0.5})
    with pytest.raises(HparamError, match="exactly one layer"):
        parse_hparams("grace", {"layers": [1, 2]})


@pytest.mark.parametrize("env", sorted(p.parent.name for p in CONF.glob("*/parameters_model.yml")))
def test_every_environment_has_valid_hparams_for_all_methods(env):
    """As Kedro resolves them: base merged softly with the environment, globals interpolated."""
    from kedro.config import OmegaConfigLoader

    loader = OmegaConfigLoader(
        str(CONF), base_env="base", default_run_env=env, merge_strategy={"parameters": "soft"}
    )
    params = loader["parameters"]
    for method in METHODS:
        typed = parse_hparams(method, params[method]["hparams"])
        assert typed.layers
    assert {"corpus", "token_budget", "max_len"} <= set(params["covariance"])


def test_weight_checksum_sees_one_bit():
    model, _ = build_tiny_model("llama", seed=0)
    checksum = weight_checksum(model)
    with torch.no_grad():
        weight = model.model.layers[0].mlp.down_proj.weight
        weight.view(-1)[0] = torch.nextafter(weight.view(-1)[0], torch.tensor(1.0))
    assert weight_checksum(model) != checksum
