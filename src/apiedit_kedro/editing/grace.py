"""GRACE (Hartvigsen et al. 2023): a codebook adaptor on one ``down_proj``; base weights never change.

Hand-written after the paper. Each entry holds a detached key (layer input), a trained value (layer
output) and a deferral radius. With ``replacement: replace_last`` (EasyEdit's and CLMEEval's setting)
only the last position of each forward is queried: the last prompt token at prefill, then each new
token while decoding, so an edit context repeated inside a longer prompt does not fire mid-prompt.
Deviation from EasyEdit's stale ``key_id`` (the edited prompt's last position kept for later
forwards): the query is always the current input's last position. Teacher-forced scoring of
prompt ⊕ target runs in one forward whose last position is a target token, so it must name the
query position with ``query_at`` (training does) to see what generation sees. ``replace_all``
queries every position.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from apiedit_kedro.editing.architecture import ModelAnatomy
from apiedit_kedro.editing.hooks import replay_lower_layers
from apiedit_kedro.editing.hparams import GraceHparams
from apiedit_kedro.editing.requests import EncodedRequest
from apiedit_kedro.editing.result import EditContext
from apiedit_kedro.editing.target import target_nll

__all__ = ["CodebookSnapshot", "GraceAdapter", "firing_counts", "grace_edit", "query_at"]

logger = logging.getLogger(__name__)

_SPLIT_MARGIN = 1e-5


class GraceAdapter(nn.Module):
    """Wraps a Linear; a queried position whose input lies within an entry's radius outputs its value."""

    def __init__(self, inner: nn.Linear, replacement: str = "replace_last") -> None:
        super().__init__()
        self.inner = inner
        self.replacement = replacement
        # position queried under replace_last instead of the last one (teacher forcing)
        self.query_position: int | None = None
        self.register_buffer("keys", torch.zeros(0, inner.in_features))
        self.register_buffer("values", torch.zeros(0, inner.out_features))
        self.register_buffer("radii", torch.zeros(0))
        self.labels: list[tuple[int, ...]] = []
        self.edit_ids: list[str] = []
        self.trainable: tuple[int, nn.Parameter] | None = None
        self.fired = 0
        self.queried = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        output = self.inner(x)
        if len(self.keys) == 0:
            return output
        queries = x.detach().float().reshape(-1, x.shape[-1])
        distances = torch.cdist(queries, self.keys)
        nearest, index = distances.min(dim=1)
        fire = nearest <= self.radii[index]
        if self.replacement == "replace_last" and x.dim() > 1:
            length = x.shape[-2]
            position = length - 1
            if self.query_position is not None and self.query_position < length:
                position = self.query_position
            queried = torch.zeros(x.shape[:-1], dtype=torch.bool, device=x.device)
            queried[..., position] = True
            queried = queried.reshape(-1)
            fire = fire & queried
            self.queried += int(queried.sum())
        else:
            self.queried += len(fire)
        self.fired += int(fire.sum())
        if not bool(fire.any()):
            return output
        values = self.values
        if self.trainable is not None:
            slot, parameter = self.trainable
            values = values.clone()
            values[slot] = parameter
        flat = output.reshape(-1, output.shape[-1])
        replaced = torch.where(fire[:, None], values[index].to(output.dtype), flat)
        return replaced.reshape(output.shape)

    def add_entry(
        self, key: torch.Tensor, value: torch.Tensor, radius: float, label, edit_id: str
    ) -> int:
        self.keys = torch.cat([self.keys, key[None].float()])
        self.values = torch.cat([self.values, value[None].float()])
        self.radii = torch.cat([self.radii, torch.tensor([radius])])
        self.labels.append(tuple(label))
        self.edit_ids.append(edit_id)
        return len(self.keys) - 1


def firing_counts(model: nn.Module) -> tuple[int, int]:
    """(positions queried, positions where an entry fired) so far, over the model's adaptors.

    The difference across a generation is that generation's firing rate: how often the codebook
    replaced the layer output while the model wrote its samples.
    """
    adapters = [module for module in model.modules() if isinstance(module, GraceAdapter)]
    return sum(a.queried for a in adapters), sum(a.fired for a in adapters)


@contextmanager
def query_at(model: nn.Module, position: int) -> Iterator[None]:
    """Query ``position`` instead of the last one in every replace_last adaptor of ``model``.

    For teacher-forced scoring of prompt ⊕ target in one forward: ``position`` is the last prompt
    token, the position generation would query at prefill.
    """
    adapters = [module for module in model.modules() if isinstance(module, GraceAdapter)]
    previous = [adapter.query_position for adapter in adapters]
    for adapter in adapters:
        adapter.query_position = position
    try:
        yield
    finally:
        for adapter, value in zip(adapters, previous, strict=True):
            adapter.query_position = value


def _adapter_at(model, anatomy: ModelAnatomy, layer: int, replacement: str) -> GraceAdapter:
    mlp = anatomy.mlp(layer)
    if not isinstance(mlp.down_proj, GraceAdapter):
        mlp.down_proj = GraceAdapter(mlp.down_proj, replacement)
    mlp.down_proj.replacement = replacement
    return mlp.down_proj


@dataclass
class CodebookSnapshot:
    """The adaptor state at one layer before an ``apply_edits`` call (an ``Adaptor``)."""

    anatomy: ModelAnatomy
    layer: int
    attached: bool
    keys: torch.Tensor | None = None
    values: torch.Tensor | None = None
    radii: torch.Tensor | None = None
    labels: list[tuple[int, ...]] = field(default_factory=list)
    edit_ids: list[str] = field(default_factory=list)

    @classmethod
    def take(cls, anatomy: ModelAnatomy, layer: int) -> CodebookSnapshot:
        adapter = anatomy.mlp(layer).down_proj
        if not isinstance(adapter, GraceAdapter):
            return cls(anatomy, layer, attached=False)
        return cls(
            anatomy,
            layer,
            attached=True,
            keys=adapter.keys.clone(),
            values=adapter.values.clone(),
            radii=adapter.radii.clone(),
            labels=list(adapter.labels),
            edit_ids=list(adapter.edit_ids),
        )

    def restore(self, model: nn.Module) -> None:
        """Detach the adaptor (if the call attached it) or put its codebook back as it was."""
        mlp = self.anatomy.mlp(self.layer)
        if not isinstance(mlp.down_proj, GraceAdapter):
            return
        if not self.attached:
            mlp.down_proj = mlp.down_proj.inner
            return
        adapter = mlp.down_proj
        adapter.keys, adapter.values, adapter.radii = self.keys, self.values, self.radii
        adapter.labels, adapter.edit_ids = list(self.labels), list(self.edit_ids)


def _query(model, adapter: GraceAdapter, enc: EncodedRequest) -> torch.Tensor:
    """down_proj input at the last prompt token (the codebook query of this edit)."""
    captured: list[torch.Tensor] = []
    handle = adapter.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
    try:
        with torch.no_grad():
            ids = torch.tensor([enc.prompt_ids], device=next(model.parameters()).device)
            model.model(input_ids=ids, use_cache=False)
    finally:
        handle.remove()
    return captured[0][0, -1].float().detach()


def _place(
    adapter: GraceAdapter,
    query: torch.Tensor,
    enc: EncodedRequest,
    hparams: GraceHparams,
    generator,
) -> tuple[int, str]:
    """Add / split / expand per GRACE's rules; returns the entry to train and what happened."""
    label = enc.label
    cold = torch.rand(adapter.inner.out_features, generator=generator)
    if len(adapter.keys) == 0:
        return adapter.add_entry(query, cold, hparams.eps, label, enc.request.edit_id), "add"
    distances = torch.cdist(query[None], adapter.keys)[0]
    distance, nearest = (float(v) for v in distances.min(dim=0))
    nearest = int(nearest)
    if distance > hparams.eps + float(adapter.radii[nearest]):
        return adapter.add_entry(query, cold, hparams.eps, label, enc.request.edit_id), "add"
    if adapter.labels[nearest] != label:
        adapter.radii[nearest] = distance / 2 - _SPLIT_MARGIN
        return adapter.add_entry(query, cold, distance / 2, label, enc.request.edit_id), "split"
    if distance > float(adapter.radii[nearest]):
        adapter.radii[nearest] = distance
    return nearest, "expand"


def grace_edit(ctx: EditContext, enc: EncodedRequest) -> dict:
    model, anatomy, hparams, result = ctx.model, ctx.anatomy, ctx.hparams, ctx.result
    (layer,) = hparams.layers
    site = f"grace.{layer}"
    if site not in result.adaptors:
        result.adaptors[site] = CodebookSnapshot.take(anatomy, layer)
    adapter = _adapter_at(model, anatomy, layer, hparams.replacement)
    generator = torch.Generator().manual_seed(hparams.seed + len(adapter.keys))
    query = _query(model, adapter, enc)
    slot, action = _place(adapter, query, enc, hparams, generator)
    value = nn.Parameter(adapter.values[slot].clone())
    optimiser = torch.optim.Adam([value], lr=hparams.edit_lr)
    adapter.trainable = (slot, value)
    frozen = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)
    try:
        with (
            query_at(model, len(enc.prompt_ids) - 1),
            replay_lower_layers(model, anatomy.paths.layers, layer),
        ):
            for _ in range(hparams.n_iter):
                loss = target_nll(model, enc)
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
            with torch.no_grad():
                loss_value = float(target_nll(model, enc))
    finally:
        adapter.trainable = None
        for parameter, flag in zip(model.parameters(), frozen, strict=True):
            parameter.requires_grad_(flag)
    if not torch.isfinite(value).all():
        raise FloatingPointError("GRACE value became NaN/Inf")
    adapter.values[slot] = value.detach()
    # what the layer emits is the stored value cast to the activation dtype
    emitted = adapter.values[slot].to(adapter.inner.weight.dtype).double()
    survival = float(torch.nn.functional.cosine_similarity(emitted, value.detach().double(), dim=0))
    return {
        "final_loss": loss_value,
        "steps": hparams.n_iter,
        "delta_norm": {"codebook_values": float(adapter.values.norm())},
        "grace_action": action,
        "codebook_size": len(adapter.keys),
        "delta_survival": survival,
    }
