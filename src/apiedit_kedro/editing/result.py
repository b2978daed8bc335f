"""Weight deltas of an edit, per-edit statistics and exact restore.

ROME/MEMIT/PMET deltas are kept as low-rank factors (ΔW = left @ rightᵀ), FT as a dense tensor.
A method that adds modules instead of changing weights (GRACE) registers an ``Adaptor``: an object
that knows how to take its modules back out. Restore copies back a snapshot of the touched tensors
taken before the first edit, so it is bitwise exact (adding and subtracting a delta is not); the
pre-edit weight checksum is verified after restoring.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn

from apiedit_kedro.editing.fingerprint import weight_checksum

if TYPE_CHECKING:
    from apiedit_kedro.editing.architecture import ModelAnatomy
    from apiedit_kedro.editing.covariance import CovarianceStats
    from apiedit_kedro.editing.hparams import (
        FtHparams,
        GraceHparams,
        MemitHparams,
        PmetHparams,
        RomeHparams,
    )

__all__ = [
    "Adaptor",
    "DenseDelta",
    "EditContext",
    "EditResult",
    "LowRankDelta",
    "RestoreError",
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


def _inputs_to_fp32(_module, args):
    return (args[0].float(), *args[1:])


def _output_to(dtype: torch.dtype):
    def hook(_module, _args, output):
        return output.to(dtype)

    return hook


def _warn_survival(name: str, survival: float) -> None:
    if survival < SURVIVAL_WARNING:
        logger.warning(
            "%s: the applied update has cosine %.3f with the computed one; prefer an fp32 model",
            name,
            survival,
        )


class Adaptor(Protocol):
    """Modules an edit added to the model, with how to put the model back as it was."""

    def restore(self, model: nn.Module) -> None: ...


@dataclass
class EditResult:
    """Outcome of ``apply_edits``: deltas keyed by parameter name, adaptors, per-edit statistics."""

    method: str
    deltas: dict[str, LowRankDelta | DenseDelta] = field(default_factory=dict)
    stats: list[dict] = field(default_factory=list)
    checksum_before: str = ""
    snapshot: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    # first-seen state of each adapted site, keyed by the method's name for the site
    adaptors: dict[str, Adaptor] = field(default_factory=dict, repr=False)
    # parameter name -> (module, its original low-precision parameters, hook handles)
    promoted: dict[str, tuple] = field(default_factory=dict, repr=False)
    # running (realised·computed, ‖realised‖², ‖computed‖²) of the edit being applied
    _survival: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0], repr=False)

    def take_snapshot(self, model: nn.Module, names: list[str]) -> None:
        """Remember the current value of each named parameter (only the first time it is seen)."""
        parameters = dict(model.named_parameters())
        for name in names:
            if name not in self.snapshot:
                self.snapshot[name] = parameters[name].detach().clone()

    def _master(self, model: nn.Module, name: str) -> nn.Parameter:
        """The parameter ``name`` as an fp32 tensor that deltas are added to.

        A bf16/fp16 weight would round most of a small delta away (``cast(W + ΔW)``), and again at
        every sequential edit; so the edited module's weight is replaced by an fp32 copy and the
        module computes in fp32, casting its output back to the model dtype. Restore puts the
        original parameter objects back.
        """
        module_name, _, attr = name.rpartition(".")
        module = model.get_submodule(module_name)
        parameter = getattr(module, attr)
        if parameter.dtype == torch.float32:
            return parameter
        originals = {}
        for key, tensor in list(module.named_parameters(recurse=False)):
            originals[key] = tensor
            setattr(module, key, nn.Parameter(tensor.detach().float(), tensor.requires_grad))
        handles = [
            module.register_forward_pre_hook(_inputs_to_fp32),
            module.register_forward_hook(_output_to(parameter.dtype)),
        ]
        self.promoted[name] = (module, originals, handles)
        return getattr(module, attr)

    def _apply(self, model: nn.Module, name: str, delta: torch.Tensor) -> None:
        """W ← W + ΔW on the fp32 master, accumulating cos(realised ΔW, computed ΔW)."""
        self.take_snapshot(model, [name])
        parameter = self._master(model, name)
        with torch.no_grad():
            before = parameter.detach().clone()
            parameter.add_(delta.to(parameter.device))
            if not torch.isfinite(parameter).all():
                raise FloatingPointError("update produced NaN/Inf weights")
            realised = (parameter.detach() - before).double().cpu()
        computed = delta.double()
        terms = (
            float((realised * computed).sum()),
            float(realised.pow(2).sum()),
            float(computed.pow(2).sum()),
        )
        self._survival = [a + b for a, b in zip(self._survival, terms, strict=True)]
        if terms[2] > 0:
            _warn_survival(name, terms[0] / max((terms[1] * terms[2]) ** 0.5, 1e-300))

    def take_survival(self) -> float:
        """cos(realised, computed) over every delta applied since the last call (one edit)."""
        dot, realised_sq, computed_sq = self._survival
        self._survival = [0.0, 0.0, 0.0]
        if computed_sq == 0.0:
            return 1.0
        return dot / max((realised_sq * computed_sq) ** 0.5, 1e-300)

    def add_low_rank(
        self, model: nn.Module, name: str, left: torch.Tensor, right: torch.Tensor
    ) -> None:
        """Apply ΔW = left @ rightᵀ to parameter ``name`` and record it."""
        left, right = left.float().cpu(), right.float().cpu()
        self._apply(model, name, left @ right.T)
        current = self.deltas.get(name)
        self.deltas[name] = (
            LowRankDelta(left, right) if current is None else current.extended(left, right)
        )

    def add_dense(self, model: nn.Module, name: str, delta: torch.Tensor) -> None:
        """Apply a dense ΔW to parameter ``name`` and record it."""
        delta = delta.float().cpu()
        self._apply(model, name, delta)
        current = self.deltas.get(name)
        self.deltas[name] = DenseDelta(delta) if current is None else current.extended(delta)

    @property
    def touched(self) -> bool:
        """Whether anything was changed that restore must undo."""
        return bool(self.snapshot or self.adaptors or self.promoted)

    def restore(self, model: nn.Module, *, verify: bool = True) -> None:
        """Put the pre-edit weights (and adaptors) back bitwise; verify the weight checksum."""
        if not self.touched:
            raise RestoreError(f"{self.method} edit result holds no pre-edit snapshot")
        for module, originals, handles in self.promoted.values():
            for handle in handles:
                handle.remove()
            for key, tensor in originals.items():
                setattr(module, key, tensor)
        self.promoted.clear()
        parameters = dict(model.named_parameters())
        with torch.no_grad():
            for name, original in self.snapshot.items():
                parameters[name].copy_(original)
        for adaptor in reversed(list(self.adaptors.values())):
            adaptor.restore(model)
        if verify and self.checksum_before and weight_checksum(model) != self.checksum_before:
            raise RestoreError(
                f"{self.method}: weights after restore differ from the pre-edit checksum"
            )

    def drift(self) -> dict[str, float]:
        """Frobenius norm of the accumulated delta per parameter."""
        return {name: float(delta.dense().norm()) for name, delta in self.deltas.items()}


@dataclass
class EditContext:
    """What a method needs besides the requests: the model, its tokenizer and anatomy, typed
    hyperparameters, optional covariance statistics and the result being filled in."""

    model: nn.Module
    tokenizer: Any  # a transformers tokenizer; only its __call__/decode and special ids are used
    anatomy: ModelAnatomy
    hparams: FtHparams | GraceHparams | RomeHparams | MemitHparams | PmetHparams
    covariance: CovarianceStats | None
    result: EditResult


def combined_drift(results: list[EditResult]) -> dict[str, float]:
    """Norm of the summed delta per parameter over successive ``apply_edits`` calls (sequential
    regime with checkpoints: each call's result holds only its own edits)."""
    totals: dict[str, torch.Tensor] = {}
    for result in results:
        for name, delta in result.deltas.items():
            totals[name] = totals[name] + delta.dense() if name in totals else delta.dense().clone()
    return {name: float(total.norm()) for name, total in totals.items()}
