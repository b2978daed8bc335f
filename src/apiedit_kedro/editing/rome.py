"""ROME: a rank-one update of one layer's ``down_proj`` (Meng et al. 2022), hand-written.

u = k̄ (or C⁻¹k̄ with ``mom2_adjustment``), normalised; v* = h0 + δ from the target optimisation on the
MLP output; ΔW = (v* − W k*) uᵀ / (k*·u), so the edited layer maps k* to v* exactly. ``r_rome`` uses
k̄ in place of k* (Gupta et al. 2024) for steadier sequential edits.
"""

from __future__ import annotations

import torch

from apiedit_kedro.editing.architecture import ModelAnatomy
from apiedit_kedro.editing.hooks import replay_lower_layers
from apiedit_kedro.editing.requests import EncodedRequest
from apiedit_kedro.editing.result import EditContext
from apiedit_kedro.editing.target import build_batch, context_prefixes, mean_keys, optimise_targets

__all__ = ["rome_edit", "rome_rank_one"]


def rome_rank_one(
    weight: torch.Tensor, key: torch.Tensor, value: torch.Tensor, direction: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(r, u) with W + r uᵀ mapping ``key`` to ``value``; ``direction`` is u before normalising."""
    u = direction.float() / direction.float().norm()
    residual = value.float() - weight.float() @ key.float()
    r = residual / torch.dot(key.float(), u)
    return r, u


def check_loss_layer(anatomy: ModelAnatomy, hparams, method: str) -> None:
    last = anatomy.num_layers - 1
    if hparams.v_loss_layer not in (-1, last):
        raise ValueError(
            f"{method}.hparams.v_loss_layer={hparams.v_loss_layer}: only the last layer ({last} or -1) "
            "is supported, where the logits are the model's own"
        )


def rome_edit(ctx: EditContext, enc: EncodedRequest) -> dict:
    model, tokenizer, anatomy = ctx.model, ctx.tokenizer, ctx.anatomy
    hparams, covariance, result = ctx.hparams, ctx.covariance, ctx.result
    (layer,) = hparams.layers
    check_loss_layer(anatomy, hparams, "rome")
    if hparams.mom2_adjustment and covariance is None:
        raise ValueError(
            "rome.hparams.mom2_adjustment is on but no covariance was given; pass covariance="
        )
    prefixes = context_prefixes(
        model, tokenizer, hparams.context_template_length_params, hparams.seed
    )
    batch = build_batch(tokenizer, enc, prefixes)
    keys = mean_keys(model, anatomy, [layer], batch)[0]
    mean_key = keys[: batch.n_rewrite].mean(0)
    direction = (
        covariance.solve(layer, mean_key, hparams.mom2_ridge).float()
        if hparams.mom2_adjustment
        else mean_key
    )
    with replay_lower_layers(model, anatomy.paths.layers, layer):
        target = optimise_targets(model, batch, [anatomy.mlp(layer)], hparams)
    value = target.initial[0].cpu() + target.deltas[0].cpu()
    plain_key = mean_key if hparams.rome_variant == "r_rome" else keys[0]
    weight = anatomy.down_proj(layer).weight.detach().float().cpu()
    r, u = rome_rank_one(weight, plain_key, value, direction)
    name = f"{anatomy.down_proj_name(layer)}.weight"
    result.add_low_rank(model, name, r[:, None], u[:, None])
    return {
        "final_loss": target.loss,
        "steps": target.steps,
        "delta_norm": {name: float(r.norm() * u.norm())},
    }
