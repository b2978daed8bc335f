"""Weight deltas of an edit, per-edit statistics, exact restore and safetensors persistence.

ROME/MEMIT/PMET deltas are kept as low-rank factors (ΔW = left @ rightᵀ), FT as a dense tensor, GRACE
as its codebook. Restore copies back a snapshot of the touched tensors taken before the first edit,
so it is bitwise exact (adding and subtracting a delta is not); the pre-edit weight checksum is
verified after restoring.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from apiedit_kedro.editing.fingerprint import weight_checksum

__all__ = [
    "DenseDelta",
    "EditContext",
    "EditResult",
    "LowRankDelta",
    "RestoreError",
    "apply_delta",
    "combined_drift",
]

logger = logging.getLogger(__name__)

SURVIVAL_WARNING = 0.9


class RestoreError(RuntimeError):
    """Restoring did not reproduce the pre-edit weights (or there is nothing to restore from)."""


@dataclass
class LowRankDelta:
    """ΔW = left @ rightᵀ with left [out, r] and right [in, r], float32."""

    left: torch.Tensor
    right: torch.Tensor

    def dense(self) -> torch.Tensor:
        return self.left @ self.right.T

    def extended(self, left: torch.Tensor, right: torch.Tensor) -> LowRankDelta:
        return LowRankDelta(
            torch.cat([self.left, left], dim=1), torch.cat([self.right, right], dim=1)
        )


@dataclass
class DenseDelta:
    tensor: torch.Tensor

    def dense(self) -> torch.Tensor:
        return self.tensor

    def extended(self, tensor: torch.Tensor) -> DenseDelta:
        return DenseDelta(self.tensor + tensor)


def apply_delta(parameter: torch.Tensor, delta: torch.Tensor) -> float:
    """W ← cast(W + ΔW) computed in fp32; returns the survival ratio ‖cast(W+ΔW) − W‖/‖ΔW‖."""
    with torch.no_grad():
        before = parameter.detach().float().clone()
        updated = before + delta.to(before.device)
        if not torch.isfinite(updated).all():
            raise FloatingPointError("update produced NaN/Inf weights")
        parameter.copy_(updated.to(parameter.dtype))
        norm = float(delta.norm())
        return float((parameter.float() - before).norm()) / norm if norm > 0 else 1.0


def _warn_survival(name: str, survival: float) -> None:
    if survival < SURVIVAL_WARNING:
        logger.warning(
            "%s: only %.0f%% of the update survived the cast to the model dtype; prefer an fp32 model",
            name,
            100 * survival,
        )


@dataclass
class EditResult:
    """Outcome of ``apply_edits``: deltas keyed by parameter name, codebook, per-edit statistics."""

    method: str
    deltas: dict[str, LowRankDelta | DenseDelta] = field(default_factory=dict)
    stats: list[dict] = field(default_factory=list)
    codebook: dict[str, torch.Tensor] | None = None
    codebook_meta: dict = field(default_factory=dict)
    checksum_before: str = ""
    snapshot: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    grace_snapshot: dict | None = field(default=None, repr=False)

    def take_snapshot(self, model: nn.Module, names: list[str]) -> None:
        """Remember the current value of each named parameter (only the first time it is seen)."""
        parameters = dict(model.named_parameters())
        for name in names:
            if name not in self.snapshot:
                self.snapshot[name] = parameters[name].detach().clone()

    def add_low_rank(
        self, model: nn.Module, name: str, left: torch.Tensor, right: torch.Tensor
    ) -> float:
        """Apply ΔW = left @ rightᵀ to parameter ``name`` and record it; returns the survival ratio."""
        self.take_snapshot(model, [name])
        left, right = left.float().cpu(), right.float().cpu()
        survival = apply_delta(dict(model.named_parameters())[name], left @ right.T)
        current = self.deltas.get(name)
        self.deltas[name] = (
            LowRankDelta(left, right) if current is None else current.extended(left, right)
        )
        _warn_survival(name, survival)
        return survival

    def add_dense(self, model: nn.Module, name: str, delta: torch.Tensor) -> float:
        """Apply a dense ΔW to parameter ``name`` and record it; returns the survival ratio."""
        self.take_snapshot(model, [name])
        delta = delta.float().cpu()
        survival = apply_delta(dict(model.named_parameters())[name], delta)
        current = self.deltas.get(name)
        self.deltas[name] = DenseDelta(delta) if current is None else current.extended(delta)
        _warn_survival(name, survival)
        return survival

    def restore(self, model: nn.Module, *, verify: bool = True) -> None:
        """Put the pre-edit weights (and codebook) back bitwise; verify the weight checksum."""
        if not self.snapshot and self.grace_snapshot is None:
            raise RestoreError(
                f"{self.method} edit result holds no pre-edit snapshot (loaded from disk?); call "
                "apply(model) before restore(model)"
            )
        parameters = dict(model.named_parameters())
        with torch.no_grad():
            for name, original in self.snapshot.items():
                parameters[name].copy_(original)
        if self.grace_snapshot is not None:
            from apiedit_kedro.editing.grace import restore_codebook

            restore_codebook(model, self.grace_snapshot)
        if verify and self.checksum_before and weight_checksum(model) != self.checksum_before:
            raise RestoreError(
                f"{self.method}: weights after restore differ from the pre-edit checksum"
            )

    def apply(self, model: nn.Module) -> None:
        """Re-apply saved deltas (or codebook) to an unedited model, snapshotting it for restore."""
        self.checksum_before = weight_checksum(model)
        parameters = dict(model.named_parameters())
        missing = sorted(set(self.deltas) - set(parameters))
        if missing:
            raise KeyError(f"{self.method} delta names parameters the model lacks: {missing}")
        self.take_snapshot(model, list(self.deltas))
        for name, delta in self.deltas.items():
            apply_delta(parameters[name], delta.dense())
        if self.codebook is not None:
            from apiedit_kedro.editing.grace import attach_codebook

            self.grace_snapshot = attach_codebook(model, self.codebook, self.codebook_meta)

    def drift(self) -> dict[str, float]:
        """Frobenius norm of the accumulated delta per parameter."""
        return {name: float(delta.dense().norm()) for name, delta in self.deltas.items()}

    def save(self, path: str | Path) -> None:
        tensors: dict[str, torch.Tensor] = {}
        for name, delta in self.deltas.items():
            if isinstance(delta, LowRankDelta):
                tensors[f"{name}::left"] = delta.left.contiguous()
                tensors[f"{name}::right"] = delta.right.contiguous()
            else:
                tensors[f"{name}::dense"] = delta.tensor.contiguous()
        for key, tensor in (self.codebook or {}).items():
            tensors[f"grace::{key}"] = tensor.contiguous()
        metadata = {
            "method": self.method,
            "stats": json.dumps(self.stats, default=str),
            "codebook_meta": json.dumps(self.codebook_meta),
        }
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(path), metadata=metadata)

    @classmethod
    def load(cls, path: str | Path) -> EditResult:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
        deltas: dict[str, LowRankDelta | DenseDelta] = {}
        codebook: dict[str, torch.Tensor] = {}
        for key, tensor in tensors.items():
            name, _, part = key.rpartition("::")
            if name == "grace":
                codebook[part] = tensor
            elif part == "dense":
                deltas[name] = DenseDelta(tensor)
            elif part == "left":
                deltas[name] = LowRankDelta(tensor, tensors[f"{name}::right"])
        return cls(
            method=metadata.get("method", ""),
            deltas=deltas,
            stats=json.loads(metadata.get("stats", "[]")),
            codebook=codebook or None,
            codebook_meta=json.loads(metadata.get("codebook_meta", "{}")),
        )


@dataclass
class EditContext:
    """What a method needs besides the requests: the model, its tokenizer and anatomy, typed
    hyperparameters, optional covariance statistics and the result being filled in."""

    model: nn.Module
    tokenizer: object
    anatomy: object
    hparams: object
    covariance: object
    result: EditResult


def combined_drift(results: list[EditResult]) -> dict[str, float]:
    """Norm of the summed delta per parameter over successive ``apply_edits`` calls (sequential
    regime with checkpoints: each call's result holds only its own edits)."""
    totals: dict[str, torch.Tensor] = {}
    for result in results:
        for name, delta in result.deltas.items():
            totals[name] = totals[name] + delta.dense() if name in totals else delta.dense().clone()
    return {name: float(total.norm()) for name, total in totals.items()}
