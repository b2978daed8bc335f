"""Deltas on a bf16 model: the applied update equals the computed one, also across edits.

Casting W + ΔW back to bf16 keeps ~8 mantissa bits of W, so a small ΔW (FT's ε-box, a late
sequential edit) mostly rounds away. The edited weight is kept as an fp32 master instead; the
per-edit ``delta_survival`` is cos(applied ΔW, computed ΔW).
"""

from __future__ import annotations

import pytest
import torch
from editing_helpers import PROMPT, TARGET, tiny_covariance

from apiedit_kedro.editing import apply_edits, weight_checksum
from apiedit_kedro.models.tiny import build_tiny_model

REQUESTS = [
    {"prompt": PROMPT, "target_new": TARGET, "edit_id": "a"},
    {"prompt": "import bisect\n\ndef find(a, x):\n    return ", "target_new": "insort(a, x)"},
]


def _bf16(family: str = "llama"):
    model, tokenizer = build_tiny_model(family, seed=0)
    return model.to(torch.bfloat16), tokenizer


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0))


def test_ft_box_delta_survives_a_bf16_model_exactly():
    model, tokenizer = _bf16()
    name = "model.layers.1.mlp.down_proj.weight"
    original = model.get_parameter(name).detach().clone()
    hparams = {"layers": [1], "num_steps": 5, "lr": 5e-4, "norm_constraint": 1e-4}
    result = apply_edits(model, tokenizer, REQUESTS[:1], method="ft", hparams=hparams)
    computed = result.deltas[name].dense()
    applied = model.get_parameter(name).detach().float() - original.float()
    # equal up to fp32 rounding of W + ΔW (|W| < 1: one ulp is below 1e-7)
    assert float((applied - computed).abs().max()) < 1e-7
    assert float(applied.abs().max()) <= 1e-4 + 1e-7
    assert result.stats[0]["delta_survival"] == pytest.approx(1.0, abs=1e-9)
    # the same delta cast into the bf16 weight, as W <- cast(W + ΔW) did, loses much of it
    cast = (original.float() + computed).to(torch.bfloat16).float() - original.float()
    assert _cosine(cast, computed) < 0.99
    # the forward uses the fp32 master and still returns the model dtype
    logits = model(**tokenizer(PROMPT, return_tensors="pt")).logits
    assert logits.dtype == torch.bfloat16


@pytest.mark.parametrize("method", ["rome", "memit", "pmet", "ft", "grace"])
def test_sequential_edits_on_bf16_apply_the_summed_delta_and_restore(
    method, tiny_params, covariance_dir
):
    model, tokenizer = _bf16()
    covariance = tiny_covariance(model, tokenizer, tiny_params, covariance_dir)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    checksum = weight_checksum(model)
    result = apply_edits(
        model,
        tokenizer,
        REQUESTS,
        method=method,
        hparams=tiny_params[method],
        covariance=covariance,
    )
    survival = [stats["delta_survival"] for stats in result.stats]
    if method == "grace":  # its value is emitted as a bf16 activation: 8 mantissa bits survive
        assert all(0.999 < value < 1 for value in survival)
    else:
        assert all(value > 1 - 1e-6 for value in survival)
    for name, delta in result.deltas.items():
        applied = model.get_parameter(name).detach().float() - before[name].float()
        assert _cosine(applied, delta.dense()) > 1 - 1e-6
        assert float((applied - delta.dense()).abs().max()) < 1e-6
    result.restore(model)
    assert weight_checksum(model) == checksum
    for name, parameter in model.named_parameters():
        assert parameter.dtype == torch.bfloat16 and torch.equal(parameter, before[name])
