"""Replaying the frozen lower layers inside an edit loop changes no number, only the work done."""

from __future__ import annotations

import contextlib

import pytest
import torch
from editing_helpers import FAMILIES, PROMPT, TARGET, tiny_covariance

from apiedit_kedro.editing import apply_edits, ft, grace, memit, pmet, rome
from apiedit_kedro.editing.architecture import anatomy_of
from apiedit_kedro.editing.hooks import replay_lower_layers
from apiedit_kedro.models.tiny import build_tiny_model


def _layer_calls(model, layer: int) -> list[int]:
    calls = [0]

    def count(*_):
        calls[0] += 1

    anatomy_of(model).decoder_layer(layer).register_forward_hook(count)
    return calls


def _loss_and_gradient(model, ids, delta):
    hidden = model.model(input_ids=ids, use_cache=False).last_hidden_state
    loss = model.lm_head(hidden + delta).logsumexp(-1).sum()
    (gradient,) = torch.autograd.grad(loss, delta)
    return loss.detach(), gradient


@pytest.mark.parametrize("family", FAMILIES)
def test_lower_layers_run_once_and_every_loss_and_gradient_is_bit_identical(family):
    model, tokenizer = build_tiny_model(family, seed=2)
    model.requires_grad_(False)
    ids = torch.tensor([tokenizer(PROMPT + TARGET).input_ids])
    other = torch.tensor([tokenizer(PROMPT).input_ids])
    delta = torch.zeros(model.config.hidden_size, requires_grad=True)
    expected = [_loss_and_gradient(model, x, delta) for x in (ids, ids, other, ids)]

    layers = anatomy_of(model).paths.layers
    lower_calls = _layer_calls(model, 0)
    originals = list(model.get_submodule(layers))
    with replay_lower_layers(model, layers, first_layer=1):
        replayed = [_loss_and_gradient(model, x, delta) for x in (ids, ids, other, ids)]
    assert lower_calls[0] == 2  # once for `ids`, once for `other`
    for (loss, gradient), (again, again_gradient) in zip(expected, replayed, strict=True):
        assert torch.equal(loss, again) and torch.equal(gradient, again_gradient)
    # the real layers are back, and run again on every forward
    assert list(model.get_submodule(layers)) == originals
    model.model(input_ids=ids, use_cache=False)
    assert lower_calls[0] == 3


@contextlib.contextmanager
def _no_replay(*_args, **_kwargs):
    yield


@pytest.mark.parametrize(
    "method, layers",
    [("ft", [1]), ("grace", [1]), ("rome", [1]), ("memit", [0, 1]), ("pmet", [0, 1])],
)
def test_edits_equal_the_edits_without_replay(
    method, layers, tiny_params, covariance_dir, monkeypatch
):
    hparams = {**tiny_params[method]["hparams"], "layers": layers}
    request = {"prompt": PROMPT, "target_new": TARGET, "edit_id": "e1", "subject": "heap"}
    results = {}
    for replay in (False, True):
        with monkeypatch.context() as patch:
            if not replay:
                for module in (ft, grace, rome, memit, pmet):
                    patch.setattr(module, "replay_lower_layers", _no_replay)
            model, tokenizer = build_tiny_model("llama", seed=3)
            covariance = None
            if method in ("rome", "memit", "pmet"):
                params = {method: {"hparams": hparams}, "covariance": tiny_params["covariance"]}
                covariance = tiny_covariance(model, tokenizer, params, covariance_dir)
            lower, edited = _layer_calls(model, 0), _layer_calls(model, 1)
            result = apply_edits(
                model, tokenizer, [request], method=method, hparams=hparams, covariance=covariance
            )
            skipped = edited[0] - lower[0]  # forwards that ran layer 1 but not layer 0
            results[replay] = (result.stats[0]["final_loss"], dict(model.state_dict()), skipped)
    (loss, weights, skipped), (plain_loss, plain_weights, none) = results[True], results[False]
    assert loss == plain_loss
    assert weights.keys() == plain_weights.keys()
    assert all(torch.equal(weights[name], plain_weights[name]) for name in weights)
    assert none == 0 and skipped > 0  # the optimisation loop's forwards skipped layer 0
