"""The update rules of ROME, MEMIT, PMET, GRACE and FT, each recomputed independently.

Every test runs the real edit on a tiny model with the tiny config (weight decay, norm clamp and
KL on; FT's box on), records the optimised target vector the method hands to its weight update,
and recomputes the update from activations read with the test's own hooks and a covariance built
explicitly from the raw sums, solved with ``torch.linalg.solve``. A wrong share, key or scale in
the engine then shows up as a mismatch instead of being reproduced by the same code.
"""

from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import pytest
import torch
from editing_helpers import PROMPT, TARGET, tiny_covariance

import apiedit_kedro.editing.memit as memit_module
import apiedit_kedro.editing.pmet as pmet_module
import apiedit_kedro.editing.rome as rome_module
from apiedit_kedro.editing import apply_edits
from apiedit_kedro.editing.grace import GraceAdapter, _place
from apiedit_kedro.editing.hparams import parse_hparams
from apiedit_kedro.editing.requests import parse_requests
from apiedit_kedro.editing.target import build_batch, context_prefixes
from apiedit_kedro.models.tiny import build_tiny_model

REQUEST = {"prompt": PROMPT, "target_new": TARGET, "edit_id": "heappush"}


def _record_targets(monkeypatch, module) -> list:
    """Wrap the module's target optimisation so the test sees the vectors it returns."""
    seen = []
    original = module.optimise_targets

    def spy(*args, **kwargs):
        outcome = original(*args, **kwargs)
        seen.append(outcome)
        return outcome

    monkeypatch.setattr(module, "optimise_targets", spy)
    return seen


def _batch(model, tokenizer, hparams):
    (enc,) = parse_requests([REQUEST], tokenizer, 4096)
    prefixes = context_prefixes(
        model, tokenizer, hparams.context_template_length_params, hparams.seed
    )
    return build_batch(tokenizer, enc, prefixes)


@torch.no_grad()
def _down_proj_inputs(model, layer: int, batch) -> torch.Tensor:
    """Input of layer ``layer``'s down_proj at each rewrite row's key position, float64."""
    store = []
    module = model.model.layers[layer].mlp.down_proj
    handle = module.register_forward_pre_hook(lambda _m, args: store.append(args[0]))
    try:
        model.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    finally:
        handle.remove()
    rows = torch.arange(batch.n_rewrite)
    return store[0][rows, batch.key_positions[: batch.n_rewrite]].double()


@torch.no_grad()
def _output_at_bare_key(model, module, batch) -> torch.Tensor:
    store = []

    def hook(_m, _a, output):
        store.append(output[0] if isinstance(output, tuple) else output)

    handle = module.register_forward_hook(hook)
    try:
        model.model(input_ids=batch.input_ids[:1], attention_mask=batch.attention_mask[:1])
    finally:
        handle.remove()
    return store[0][0, batch.key_positions[0]].double()


def _explicit_moment(covariance, layer: int, ridge: float) -> torch.Tensor:
    """C = S/n + γ·tr(S/n)/d_ff·I, written out from the raw sums."""
    moment = covariance.sums[layer].double() / covariance.counts[layer]
    size = moment.shape[0]
    return moment + ridge * torch.trace(moment) / size * torch.eye(size, dtype=torch.float64)


def _memit_key(model, layer: int, batch) -> torch.Tensor:
    """k = ½·k(bare prompt) + ½·mean of k over the prefixed prompts."""
    keys = _down_proj_inputs(model, layer, batch)
    return 0.5 * keys[0] + 0.5 * keys[1:].mean(0)


def _expected_update(model, layer, batch, residual, covariance, hparams) -> torch.Tensor:
    """ΔW = R kᵀ (λC + k kᵀ)⁻¹ for one request, with an explicit solve."""
    key = _memit_key(model, layer, batch)
    system = hparams.mom2_update_weight * _explicit_moment(
        covariance, layer, hparams.mom2_ridge
    ) + torch.outer(key, key)
    solved = torch.linalg.solve(system, key)
    return torch.outer(residual, solved)


def _setup(method: str, tiny_params, covariance_dir, family: str = "llama"):
    model, tokenizer = build_tiny_model(family, seed=0)
    covariance = tiny_covariance(model, tokenizer, tiny_params, covariance_dir)
    hparams = parse_hparams(method, tiny_params[method]["hparams"])
    return model, tokenizer, covariance, hparams, copy.deepcopy(model)


def _edited_weight(model, layer: int) -> torch.Tensor:
    return model.model.layers[layer].mlp.down_proj.weight.detach().double()


def test_rome_maps_k_star_to_v_star_with_a_rank_one_update_along_c_inverse_k(
    monkeypatch, tiny_params, covariance_dir
):
    # W' k* = v*  and  ΔW = r uᵀ with u ∝ C⁻¹ k̄ (k̄: mean key over the rewrite prompts)
    model, tokenizer, covariance, hparams, original = _setup("rome", tiny_params, covariance_dir)
    assert hparams.mom2_adjustment and hparams.v_weight_decay > 0
    seen = _record_targets(monkeypatch, rome_module)
    (layer,) = hparams.layers
    batch = _batch(original, tokenizer, hparams)
    keys = _down_proj_inputs(original, layer, batch)
    apply_edits(model, tokenizer, [REQUEST], method="rome", hparams=hparams, covariance=covariance)
    (target,) = seen
    value = (target.initial[0] + target.deltas[0]).double()
    edited = _edited_weight(model, layer)
    assert (edited @ keys[0] - value).norm() / value.norm() < 1e-4
    delta = edited - _edited_weight(original, layer)
    singular = torch.linalg.svdvals(delta)
    assert singular[1] / singular[0] < 1e-5
    direction = torch.linalg.solve(
        _explicit_moment(covariance, layer, hparams.mom2_ridge), keys.mean(0)
    )
    row_space = delta.T @ (delta @ direction)
    cosine = torch.nn.functional.cosine_similarity(row_space, direction, dim=0)
    assert cosine > 1 - 1e-6


def test_memit_splits_the_residual_over_layers_and_reaches_the_predicted_gap(
    monkeypatch, tiny_params, covariance_dir
):
    # R_j = (Z − H)/(m − j); ΔW_j = R_j kᵀ(λC + kkᵀ)⁻¹; H read at the last layer's output
    model, tokenizer, covariance, hparams, original = _setup("memit", tiny_params, covariance_dir)
    seen = _record_targets(monkeypatch, memit_module)
    batch = _batch(original, tokenizer, hparams)
    first, last = sorted(hparams.layers)
    site = original.model.layers[last]
    start = _output_at_bare_key(original, site, batch)
    result = apply_edits(
        model, tokenizer, [REQUEST], method="memit", hparams=hparams, covariance=covariance
    )
    (target,) = seen
    goal = (target.initial[0] + target.deltas[0]).double()

    replay = copy.deepcopy(original)
    expected_first = _expected_update(replay, first, batch, (goal - start) / 2, covariance, hparams)
    with torch.no_grad():
        replay.model.layers[first].mlp.down_proj.weight += expected_first.float()
    middle = _output_at_bare_key(replay, replay.model.layers[last], batch)
    expected_last = _expected_update(replay, last, batch, goal - middle, covariance, hparams)

    for layer, expected in ((first, expected_first), (last, expected_last)):
        applied = _edited_weight(model, layer) - _edited_weight(original, layer)
        assert (applied - expected).norm() / expected.norm() < 1e-4, layer
    # the last layer's step closes R·k_bareᵀ(λC + kkᵀ)⁻¹k of the gap left after the first layer
    key = _memit_key(replay, last, batch)
    system = hparams.mom2_update_weight * _explicit_moment(
        covariance, last, hparams.mom2_ridge
    ) + torch.outer(key, key)
    bare = _down_proj_inputs(replay, last, batch)[0]
    closed = float(bare @ torch.linalg.solve(system, key))
    final = _output_at_bare_key(model, model.model.layers[last], batch)
    predicted_gap = (goal - middle) * (1 - closed)
    assert (goal - final - predicted_gap).norm() / (goal - start).norm() < 1e-3
    reached = 1 - float((goal - final).norm() / (goal - start).norm())
    assert result.stats[0]["target_reached"] == pytest.approx(reached, abs=1e-4)


def test_pmet_divides_the_residual_by_the_square_root_of_the_layers_left(
    monkeypatch, tiny_params, covariance_dir
):
    # ΔW_j = (R/√(m−j)) kᵀ(λC + kkᵀ)⁻¹ with R = z_F − (down_proj output of the last layer)
    model, tokenizer, covariance, hparams, original = _setup("pmet", tiny_params, covariance_dir)
    seen = _record_targets(monkeypatch, pmet_module)
    batch = _batch(original, tokenizer, hparams)
    first, last = sorted(hparams.layers)
    start = _output_at_bare_key(original, original.model.layers[last].mlp, batch)
    apply_edits(model, tokenizer, [REQUEST], method="pmet", hparams=hparams, covariance=covariance)
    (target,) = seen
    goal = (target.initial[1] + target.deltas[1]).double()
    expected = _expected_update(
        original, first, batch, (goal - start) / math.sqrt(2), covariance, hparams
    )
    applied = _edited_weight(model, first) - _edited_weight(original, first)
    assert (applied - expected).norm() / expected.norm() < 1e-4


def _fake_request(label: tuple[int, ...], edit_id: str):
    return SimpleNamespace(label=label, request=SimpleNamespace(edit_id=edit_id))


def test_grace_adds_expands_and_splits_by_its_radius_rules():
    # add if d > ε_init + ε_i*; same label: ε_i* ← d if d > ε_i*; other label:
    # ε_i* ← d/2 − 1e-5 and ε_new ← d/2
    hparams = parse_hparams("grace", {"layers": [0], "eps": 1.0})
    adapter = GraceAdapter(torch.nn.Linear(8, 3))
    generator = torch.Generator().manual_seed(0)
    origin = torch.zeros(8)
    step = torch.zeros(8)
    step[0] = 1.0
    slot, action = _place(adapter, origin, _fake_request((5,), "a"), hparams, generator)
    assert (slot, action) == (0, "add") and float(adapter.radii[0]) == pytest.approx(1.0)

    slot, action = _place(adapter, 1.5 * step, _fake_request((5,), "b"), hparams, generator)
    assert (slot, action, len(adapter.keys)) == (0, "expand", 1)
    assert float(adapter.radii[0]) == pytest.approx(1.5)

    slot, action = _place(adapter, -0.8 * step, _fake_request((7,), "c"), hparams, generator)
    assert (slot, action, len(adapter.keys)) == (1, "split", 2)
    assert float(adapter.radii[0]) == pytest.approx(0.4 - 1e-5, abs=1e-7)
    assert float(adapter.radii[1]) == pytest.approx(0.4, abs=1e-7)

    slot, action = _place(adapter, 3.0 * step, _fake_request((5,), "d"), hparams, generator)
    assert (slot, action, len(adapter.keys)) == (2, "add", 3)  # d = 3 > ε + ε_0 = 1.4


def _force_target(model, enc):
    """Make the target tokens overwhelmingly likely after ``enc``'s prompt (loss ≈ 0).

    FT's loss feeds the LM head only the hidden states at the target positions, one row each.
    """
    targets = torch.tensor(enc.target_ids)

    def hook(_module, _args, output):
        if output.dim() == 2 and output.shape[0] == len(targets):
            output = output.clone()
            output[torch.arange(len(targets)), targets] += 1e4
        return output

    return model.get_output_embeddings().register_forward_hook(hook)


def test_ft_skips_steps_whose_loss_is_below_the_threshold(monkeypatch, tiny_params):
    # skip the Adam step when the batch loss < 1e-2; stop once the epoch's mean loss < 1e-2.
    # Adam moves every coordinate by ~lr whatever the gradient's size, so a step on an already
    # learned request would still change W; the rule must leave it bitwise unchanged.
    model, tokenizer = build_tiny_model("llama", seed=0)
    hparams = parse_hparams("ft", tiny_params["ft"]["hparams"])
    assert hparams.norm_constraint is not False
    (enc,) = parse_requests([REQUEST], tokenizer, 4096)
    steps = []
    original_step = torch.optim.Adam.step
    monkeypatch.setattr(
        torch.optim.Adam, "step", lambda self, *a, **k: (steps.append(1), original_step(self))[1]
    )
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    handle = _force_target(model, enc)
    try:
        result = apply_edits(model, tokenizer, [REQUEST], method="ft", hparams=hparams)
    finally:
        handle.remove()
    assert steps == []
    assert result.stats[0]["steps"] == 1
    assert all(torch.equal(p, before[name]) for name, p in model.named_parameters())
    # without the forced target the loss is far above the threshold: every epoch steps once
    few = parse_hparams("ft", {**tiny_params["ft"]["hparams"], "num_steps": 3})
    apply_edits(model, tokenizer, [REQUEST], method="ft", hparams=few)
    assert len(steps) == 3


@pytest.mark.parametrize("replacement", ["replace_last", "replace_all"])
def test_grace_fires_inside_a_longer_prompt_only_under_replace_all(replacement, tiny_params):
    # replace_last: the query is the forward's last position, so an edit context followed by
    # more tokens leaves every output unchanged; replace_all replaces at the edit context's end.
    from apiedit_kedro.editing.grace import firing_counts, query_at

    model, tokenizer = build_tiny_model("llama", seed=0)
    (enc,) = parse_requests([REQUEST], tokenizer, 4096)
    extended = torch.tensor([enc.prompt_ids + tokenizer(" x = 1\n")["input_ids"][-4:]])
    with torch.no_grad():
        unedited = model(input_ids=extended).logits
    hparams = {**tiny_params["grace"]["hparams"], "replacement": replacement}
    apply_edits(model, tokenizer, [REQUEST], method="grace", hparams=hparams)
    with torch.no_grad():
        queried, fired = firing_counts(model)
        logits = model(input_ids=extended).logits
        queried_after, fired_after = firing_counts(model)
        if replacement == "replace_last":
            assert (queried_after - queried, fired_after - fired) == (1, 0)
            assert torch.equal(logits, unedited)
        else:
            assert (queried_after - queried, fired_after - fired) == (extended.shape[1], 1)
            assert not torch.equal(logits, unedited)
        # the bare edit prompt fires at its last position at prefill, and teacher forcing
        # reaches the same position through query_at
        model(input_ids=torch.tensor([enc.prompt_ids]))
        assert firing_counts(model)[1] - fired_after == 1
        with query_at(model, len(enc.prompt_ids) - 1):
            model(input_ids=extended)
        assert firing_counts(model)[1] - fired_after == 2
