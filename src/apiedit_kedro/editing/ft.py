"""FT-M: constrained fine-tuning of ``down_proj`` weights on the target tokens only.

The trainable update D is an fp32 side path (y = W x + D x) so it is not lost to bf16 rounding while
training; after every Adam step D is clamped elementwise to [−ε, ε] (an L∞ box around the pre-edit
weights, ``norm_constraint``; false = unconstrained). D is finally added to an fp32 master of the
weight (``EditResult``), so a bf16 model keeps all of it.
"""

from __future__ import annotations

from contextlib import ExitStack

import torch
import torch.nn.functional as F

from apiedit_kedro.editing.hooks import replay_lower_layers
from apiedit_kedro.editing.requests import EncodedRequest
from apiedit_kedro.editing.result import EditContext
from apiedit_kedro.editing.target import target_nll

__all__ = ["ft_edit"]

_SKIP_LOSS = 1e-2


def _side_path(delta: torch.Tensor):
    def hook(_module, args, output):
        return output + F.linear(args[0].float(), delta).to(output.dtype)

    return hook


def ft_edit(ctx: EditContext, encs: list[EncodedRequest]) -> dict:
    model, anatomy, hparams, result = ctx.model, ctx.anatomy, ctx.hparams, ctx.result
    modules = [anatomy.down_proj(layer) for layer in hparams.layers]
    device = next(model.parameters()).device
    deltas = [
        torch.zeros_like(m.weight, dtype=torch.float32, device=device, requires_grad=True)
        for m in modules
    ]
    optimiser = torch.optim.Adam(deltas, lr=hparams.lr, weight_decay=hparams.weight_decay)
    box = None if hparams.norm_constraint is False else float(hparams.norm_constraint)
    generator = torch.Generator().manual_seed(hparams.seed)
    epoch_loss, epochs = float("nan"), 0
    frozen = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)
    try:
        with ExitStack() as stack:
            for module, delta in zip(modules, deltas, strict=True):
                stack.callback(module.register_forward_hook(_side_path(delta)).remove)
            stack.enter_context(
                replay_lower_layers(model, anatomy.paths.layers, min(hparams.layers))
            )
            for epoch in range(1, hparams.num_steps + 1):
                epochs = epoch
                order = torch.randperm(len(encs), generator=generator).tolist()
                losses = []
                for start in range(0, len(order), hparams.batch_size):
                    chunk = [encs[i] for i in order[start : start + hparams.batch_size]]
                    loss = torch.stack([target_nll(model, enc) for enc in chunk]).mean()
                    losses.append(float(loss.detach()))
                    if losses[-1] < _SKIP_LOSS:
                        continue
                    optimiser.zero_grad()
                    loss.backward()
                    optimiser.step()
                    if box is not None:
                        with torch.no_grad():
                            for delta in deltas:
                                delta.clamp_(-box, box)
                epoch_loss = sum(losses) / len(losses)
                if epoch_loss < _SKIP_LOSS:
                    break
    finally:
        for parameter, flag in zip(model.parameters(), frozen, strict=True):
            parameter.requires_grad_(flag)
    norms = {}
    for layer, delta in zip(hparams.layers, deltas, strict=True):
        name = f"{anatomy.down_proj_name(layer)}.weight"
        result.add_dense(model, name, delta.detach())
        norms[name] = float(delta.detach().norm())
    return {
        "final_loss": epoch_loss,
        "steps": epochs,
        "delta_norm": norms,
    }
