"""The update rules on small matrices: ROME's exact key->value map, MEMIT = ROME with covariance,
FT's L-infinity box, GRACE's deferral radius."""

from __future__ import annotations

import pytest
import torch
from editing_helpers import PROMPT, TARGET
from torch import nn

from apiedit_kedro.editing import apply_edits, weight_checksum
from apiedit_kedro.editing.grace import GraceAdapter
from apiedit_kedro.editing.memit import memit_layer_update
from apiedit_kedro.editing.rome import rome_rank_one
from apiedit_kedro.models.tiny import build_tiny_model


def _spd(size: int, generator: torch.Generator) -> torch.Tensor:
    basis = torch.randn(size, 4 * size, generator=generator, dtype=torch.float64)
    return basis @ basis.T / (4 * size)


def test_rome_maps_key_to_target_value_exactly():
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(8, 20, generator=generator)
    key, value = torch.randn(20, generator=generator), torch.randn(8, generator=generator)
    covariance = _spd(20, generator)
    direction = torch.linalg.solve(covariance, key.double()).float()
    r, u = rome_rank_one(weight, key, value, direction)
    updated = weight + torch.outer(r, u)
    assert torch.linalg.matrix_rank(torch.outer(r, u)) == 1
    assert (updated @ key - value).norm() / value.norm() < 1e-5


def test_memit_one_layer_one_edit_equals_rome_with_covariance():
    generator = torch.Generator().manual_seed(1)
    weight = torch.randn(8, 20, generator=generator, dtype=torch.float64)
    key, target = (
        torch.randn(20, generator=generator, dtype=torch.float64),
        torch.randn(8, generator=generator, dtype=torch.float64),
    )
    covariance = _spd(20, generator)
    residual = (target - weight @ key)[:, None]
    r, u = rome_rank_one(weight, key, target, torch.linalg.solve(covariance, key))
    rome_delta = torch.outer(r, u).double()
    # lambda -> 0: MEMIT's least-squares step reaches the target exactly, like ROME
    memit_delta = residual @ memit_layer_update(residual, key[:, None], covariance, 1e-9).T
    # ROME's rank-one factors are float32: entries near 0 carry ~1e-6 absolute rounding.
    assert torch.allclose(memit_delta, rome_delta, rtol=1e-5, atol=1e-6)
    # any lambda: same direction, scaled by a/(1+a) with a = k'C^-1k / lambda (Sherman-Morrison)
    lam = 3.0
    a = float(key @ torch.linalg.solve(covariance, key)) / lam
    scaled = residual @ memit_layer_update(residual, key[:, None], covariance, lam).T
    assert torch.allclose(scaled, rome_delta * a / (1 + a), rtol=1e-6, atol=1e-9)


def test_ft_never_leaves_the_epsilon_box_and_changes_one_tensor():
    model, tokenizer = build_tiny_model("llama", seed=0)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    epsilon = 1e-3
    hparams = {"layers": [1], "num_steps": 10, "lr": 0.5, "norm_constraint": epsilon}
    apply_edits(
        model, tokenizer, [{"prompt": PROMPT, "target_new": TARGET}], method="ft", hparams=hparams
    )
    changed = [name for name, p in model.named_parameters() if not torch.equal(p, before[name])]
    assert changed == ["model.layers.1.mlp.down_proj.weight"]
    delta = model.get_parameter(changed[0]).detach() - before[changed[0]]
    assert float(delta.abs().max()) <= epsilon * (1 + 1e-5)
    assert float(delta.abs().max()) > 0.5 * epsilon  # the box is reached: lr far exceeds epsilon


def test_grace_leaves_outputs_unchanged_outside_every_radius():
    generator = torch.Generator().manual_seed(2)
    inner = nn.Linear(16, 4)
    adapter = GraceAdapter(inner)
    keys = torch.randn(3, 16, generator=generator)
    for i, key in enumerate(keys):
        adapter.add_entry(key, torch.full((4,), 10.0 + i), 0.5, (i,), f"e{i}")
    far = keys[:, None, :] + 5.0 * torch.randn(3, 7, 16, generator=generator)
    with torch.no_grad():
        assert torch.equal(adapter(far), inner(far))
        near = keys[1] + 0.01 * torch.randn(16, generator=generator)
        mixed = torch.stack([far[0, 0], near])[None]
        out = adapter(mixed)
        assert torch.equal(out[0, 0], inner(mixed)[0, 0])
        assert torch.equal(out[0, 1], torch.full((4,), 11.0))


def test_grace_codebook_changes_the_checksum_and_restore_removes_it():
    model, tokenizer = build_tiny_model("qwen2", seed=0)
    before = weight_checksum(model)
    result = apply_edits(
        model,
        tokenizer,
        [{"prompt": PROMPT, "target_new": TARGET}],
        method="grace",
        hparams={"layers": [1], "n_iter": 2, "eps": 1e-3},
    )
    assert isinstance(model.model.layers[1].mlp.down_proj, GraceAdapter)
    assert weight_checksum(model) != before
    result.restore(model)
    assert isinstance(model.model.layers[1].mlp.down_proj, nn.Linear)
    assert weight_checksum(model) == before


@pytest.mark.parametrize("ridge", [1e-6, 1e-2])
def test_covariance_solve_matches_dense_inverse(ridge):
    from apiedit_kedro.editing.covariance import CovarianceStats

    generator = torch.Generator().manual_seed(3)
    samples = torch.randn(50, 10, generator=generator, dtype=torch.float64)
    stats = CovarianceStats(sums={0: samples.T @ samples}, counts={0: 50})
    rhs = torch.randn(10, generator=generator, dtype=torch.float64)
    expected = torch.linalg.inv(stats.second_moment(0, ridge)) @ rhs
    assert torch.allclose(stats.solve(0, rhs, ridge), expected, rtol=1e-8)


def test_grace_firing_counts_queries_and_fires_per_position():
    from apiedit_kedro.editing.grace import firing_counts

    model = nn.Sequential(GraceAdapter(nn.Linear(4, 3), replacement="replace_all"))
    key = torch.tensor([1.0, 0.0, 0.0, 0.0])
    model[0].add_entry(key, torch.ones(3), 0.1, (1,), "e0")
    inputs = torch.stack([key, key + 0.05, torch.tensor([0.0, 5.0, 0.0, 0.0])])[None]
    model(inputs)  # 3 positions: two within the radius, one far away
    assert firing_counts(model) == (3, 2)
    model(inputs[:, 2:])
    assert firing_counts(model) == (4, 2)


def test_grace_replace_last_queries_only_the_last_position():
    from apiedit_kedro.editing.grace import firing_counts

    model = nn.Sequential(GraceAdapter(nn.Linear(4, 3)))
    key = torch.tensor([1.0, 0.0, 0.0, 0.0])
    model[0].add_entry(key, torch.ones(3), 0.1, (1,), "e0")
    far = torch.tensor([0.0, 5.0, 0.0, 0.0])
    with torch.no_grad():
        out = model(torch.stack([key, key + 0.05, far])[None])  # within radius, but not last
        assert firing_counts(model) == (1, 0)
        assert torch.equal(out, model[0].inner(torch.stack([key, key + 0.05, far])[None]))
        out = model(torch.stack([far, key])[None, :, :].repeat(2, 1, 1))  # two rows, key last
        assert firing_counts(model) == (3, 2)
        assert torch.equal(out[:, 1], torch.ones(2, 3))
