"""MEMIT (Meng et al. 2023) and the layer-spreading loop it shares with PMET; hand-written
after the paper and its reference code.

Targets z_i = h0 + δ_i are optimised on the residual output of the last edit layer L; then, for each
edit layer in ascending order, with the model already holding the earlier layers' updates, the
remaining residual (Z − H) is split over the layers left and solved in float64:
ΔW = R Kᵀ(λC + KKᵀ)⁻¹. On Gemma 3 the residual share is mapped back through the post-feed-forward
RMSNorm (see ``_to_write_space``), because down_proj writes before that norm.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from apiedit_kedro.editing.architecture import ModelAnatomy
from apiedit_kedro.editing.hooks import capture_outputs, replay_lower_layers
from apiedit_kedro.editing.requests import EncodedRequest
from apiedit_kedro.editing.result import EditContext
from apiedit_kedro.editing.rome import check_loss_layer
from apiedit_kedro.editing.target import (
    Batch,
    build_batch,
    context_prefixes,
    mean_keys,
    optimise_targets,
)

__all__ = ["memit_edit", "memit_layer_update", "spread_over_layers"]

_GAIN_RIDGE = 0.01


def memit_layer_update(
    residual: torch.Tensor, keys: torch.Tensor, covariance: torch.Tensor, weight: float
) -> torch.Tensor:
    """X with ΔW = residual @ Xᵀ = R Kᵀ(λC + KKᵀ)⁻¹; residual [d, n], keys [d_ff, n], float64 solve."""
    keys64 = keys.double()
    system = weight * covariance.double() + keys64 @ keys64.T
    return torch.linalg.solve(system, keys64)


def _post_norm(anatomy: ModelAnatomy, layer: int, mlp_out: torch.Tensor) -> torch.Tensor:
    """The post-feed-forward RMSNorm applied to columns of down_proj outputs ([d, n])."""
    gain = anatomy.post_ffn_gain(layer).cpu()[:, None]
    return gain * mlp_out / (mlp_out.pow(2).mean(0) + anatomy.post_ffn_eps(layer)).sqrt()


def _to_write_space(
    anatomy: ModelAnatomy, layer: int, residual: torch.Tensor, mlp_out: torch.Tensor
) -> torch.Tensor:
    """The down_proj output change whose post-norm output moves by ``residual`` (Gemma 3).

    Ridge-regularised inverse of the linearised RMSNorm (Jacobian ≈ diag(gain)/rms(m)):
    Δm = rms(m)·gain·Δr / (gain² + μ) with μ = 0.01·mean(gain²). Coordinates with small gains
    cannot be moved through the norm; the ridge stops them from blowing up the update (measured
    on Gemma 3 270M: no mapping makes the edit diverge, an exact inverse overshoots).
    """
    gain = anatomy.post_ffn_gain(layer)
    if gain is None:
        return residual
    gain = gain.cpu()[:, None]
    ridge = _GAIN_RIDGE * gain.pow(2).mean()
    rms = (mlp_out.pow(2).mean(0) + anatomy.post_ffn_eps(layer)).sqrt()
    return rms * gain * residual / (gain.pow(2) + ridge)


def _memit_keys(model, anatomy: ModelAnatomy, layer: int, batches: list[Batch]) -> torch.Tensor:
    """k = ½·k(bare prompt) + ½·mean over the prefixed prompts, one column per request."""
    columns = []
    for batch in batches:
        keys = mean_keys(model, anatomy, [layer], batch)[0][: batch.n_rewrite]
        columns.append(0.5 * keys[0] + 0.5 * keys[1:].mean(0) if len(keys) > 1 else keys[0])
    return torch.stack(columns, dim=1)


@torch.no_grad()
def _outputs_at_key(model, module, batches: list[Batch]) -> torch.Tensor:
    """Output of ``module`` at the key position of the bare prompt, one column per request."""
    device = next(model.parameters()).device
    columns = []
    for batch in batches:
        with capture_outputs([module]) as captured:
            model.model(
                input_ids=batch.input_ids[:1].to(device),
                attention_mask=batch.attention_mask[:1].to(device),
                use_cache=False,
            )
        columns.append(captured[0][0, batch.key_positions[0]].float().cpu())
    return torch.stack(columns, dim=1)


def spread_over_layers(
    ctx: EditContext,
    batches: list[Batch],
    targets: torch.Tensor,
    *,
    measured: Callable[[], torch.Tensor],
    share: Callable[[int], float],
    target_space: str,
) -> tuple[dict[str, float], float]:
    """Ascending layer loop shared by MEMIT and PMET.

    Returns the delta norm per edited parameter and the share of the gap to the targets closed
    (1 = the targets are reached at the last edit layer).

    ``target_space`` is "residual" (MEMIT: decoder-layer output of the last edit layer) or "mlp"
    (PMET: down_proj output of the last edit layer); ``share(m)`` divides the remaining residual
    among the m layers left.
    """
    model, anatomy, hparams = ctx.model, ctx.anatomy, ctx.hparams
    norms: dict[str, float] = {}
    layers = sorted(hparams.layers)
    last = layers[-1]
    start_gap = float((targets - measured()).norm())
    for j, layer in enumerate(layers):
        keys = _memit_keys(model, anatomy, layer, batches)
        residual = (targets - measured()) / share(len(layers) - j)
        if anatomy.post_ffn_gain(layer) is not None and not (
            target_space == "mlp" and layer == last
        ):
            if target_space == "mlp":
                residual = _to_residual_space(
                    anatomy, last, residual, _outputs_at_key(model, anatomy.mlp(last), batches)
                )
            residual = _to_write_space(
                anatomy, layer, residual, _outputs_at_key(model, anatomy.mlp(layer), batches)
            )
        moment = ctx.covariance.second_moment(layer, hparams.mom2_ridge)
        solved = memit_layer_update(residual, keys, moment, hparams.mom2_update_weight)
        name = f"{anatomy.down_proj_name(layer)}.weight"
        ctx.result.add_low_rank(model, name, residual.float(), solved.float())
        norms[name] = float((residual.double() @ solved.T).norm())
    reached = 1.0 - float((targets - measured()).norm()) / max(start_gap, 1e-12)
    return norms, reached


def _to_residual_space(
    anatomy: ModelAnatomy, layer: int, change: torch.Tensor, mlp_out: torch.Tensor
) -> torch.Tensor:
    """The residual-stream change a down_proj output change at ``layer`` causes (Gemma 3)."""
    return _post_norm(anatomy, layer, mlp_out + change) - _post_norm(anatomy, layer, mlp_out)


def prepare_batches(ctx: EditContext, encs: list[EncodedRequest], method: str):
    """The checks MEMIT and PMET share, then (last edited layer, one batch per request)."""
    check_loss_layer(ctx.anatomy, ctx.hparams, method)
    if ctx.covariance is None:
        raise ValueError(
            f"{method} needs covariance statistics; pass covariance= (see "
            "load_or_compute_covariance)"
        )
    prefixes = context_prefixes(
        ctx.model, ctx.tokenizer, ctx.hparams.context_template_length_params, ctx.hparams.seed
    )
    return max(ctx.hparams.layers), [build_batch(ctx.tokenizer, enc, prefixes) for enc in encs]


def memit_edit(ctx: EditContext, encs: list[EncodedRequest]) -> dict:
    model, anatomy, hparams = ctx.model, ctx.anatomy, ctx.hparams
    last, batches = prepare_batches(ctx, encs, "memit")
    site = anatomy.decoder_layer(last)
    columns, losses, steps = [], [], []
    for batch in batches:
        with replay_lower_layers(model, anatomy.paths.layers, last):
            target = optimise_targets(model, batch, [site], hparams)
        columns.append(target.initial[0].cpu() + target.deltas[0].cpu())
        losses.append(target.loss)
        steps.append(target.steps)
    norms, reached = spread_over_layers(
        ctx,
        batches,
        torch.stack(columns, dim=1),
        measured=lambda: _outputs_at_key(model, site, batches),
        share=float,
        target_space="residual",
    )
    return {
        "final_loss": max(losses),
        "steps": max(steps),
        "delta_norm": norms,
        "target_reached": reached,
    }
