"""PMET (Li et al., AAAI 2024): attention and FFN targets optimised together, FFN-only update.

Hand-written after the paper and its reference code: δ_A on layer L's ``o_proj`` output and δ_F on its ``down_proj`` output are
optimised jointly (adaptive NLL weight, separate norm balls); only z_F = f0 + δ_F is kept and spread
over the edit layers with a square-root share, ΔW = (R/√(m−j)) Kᵀ(KKᵀ + λC)⁻¹, solved in float64.
``o_proj`` is never modified.
"""

from __future__ import annotations

import math

import torch

from apiedit_kedro.editing.hooks import replay_lower_layers
from apiedit_kedro.editing.memit import _outputs_at_key, prepare_batches, spread_over_layers
from apiedit_kedro.editing.requests import EncodedRequest
from apiedit_kedro.editing.result import EditContext
from apiedit_kedro.editing.target import optimise_targets

__all__ = ["pmet_edit"]


def pmet_edit(ctx: EditContext, encs: list[EncodedRequest]) -> dict:
    model, anatomy, hparams = ctx.model, ctx.anatomy, ctx.hparams
    last, batches = prepare_batches(ctx, encs, "pmet")
    sites = [anatomy.o_proj(last), anatomy.mlp(last)]
    columns, losses, steps = [], [], []
    for batch in batches:
        with replay_lower_layers(model, anatomy.paths.layers, last):
            target = optimise_targets(
                model, batch, sites, hparams, nll_factor=hparams.nll_loss_factor, adaptive_nll=True
            )
        columns.append(target.initial[1].cpu() + target.deltas[1].cpu())
        losses.append(target.loss)
        steps.append(target.steps)
    mlp = anatomy.mlp(last)
    norms, reached = spread_over_layers(
        ctx,
        batches,
        torch.stack(columns, dim=1),
        measured=lambda: _outputs_at_key(model, mlp, batches),
        share=math.sqrt,
        target_space="mlp",
    )
    return {
        "final_loss": max(losses),
        "steps": max(steps),
        "delta_norm": norms,
        "target_reached": reached,
    }
