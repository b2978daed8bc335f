"""Per-architecture table of the module paths the editing methods touch.

Every supported family (Llama, Qwen2, Gemma 3) names its MLP ``down_proj``, attention ``o_proj`` and
final norm the same way; Gemma 3 adds a ``post_feedforward_layernorm`` between the MLP output and the
residual add, which ROME/MEMIT/PMET must account for (see ``ModelAnatomy.post_ffn_norm``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["SUPPORTED_MODEL_TYPES", "ModelAnatomy", "UnsupportedArchitectureError", "anatomy_of"]


@dataclass(frozen=True)
class _PathTable:
    layers: str
    down_proj: str
    o_proj: str
    mlp: str
    post_ffn_norm: str | None


_LLAMA_STYLE = _PathTable(
    layers="model.layers",
    down_proj="model.layers.{}.mlp.down_proj",
    o_proj="model.layers.{}.self_attn.o_proj",
    mlp="model.layers.{}.mlp",
    post_ffn_norm=None,
)

_ARCHITECTURES: dict[str, _PathTable] = {
    "llama": _LLAMA_STYLE,
    "qwen2": _LLAMA_STYLE,
    "gemma3_text": _PathTable(
        layers="model.layers",
        down_proj="model.layers.{}.mlp.down_proj",
        o_proj="model.layers.{}.self_attn.o_proj",
        mlp="model.layers.{}.mlp",
        post_ffn_norm="model.layers.{}.post_feedforward_layernorm",
    ),
}
SUPPORTED_MODEL_TYPES = tuple(_ARCHITECTURES)


class UnsupportedArchitectureError(ValueError):
    """The model's architecture is not in the editing table."""


@dataclass(frozen=True)
class ModelAnatomy:
    """Resolves layer-indexed module names of one model."""

    model: nn.Module
    paths: _PathTable
    model_type: str

    @property
    def num_layers(self) -> int:
        return len(self.model.get_submodule(self.paths.layers))

    def down_proj_name(self, layer: int) -> str:
        self.check_layer(layer)
        return self.paths.down_proj.format(layer)

    def down_proj(self, layer: int) -> nn.Linear:
        return self.model.get_submodule(self.down_proj_name(layer))

    def o_proj(self, layer: int) -> nn.Linear:
        self.check_layer(layer)
        return self.model.get_submodule(self.paths.o_proj.format(layer))

    def mlp(self, layer: int) -> nn.Module:
        self.check_layer(layer)
        return self.model.get_submodule(self.paths.mlp.format(layer))

    def decoder_layer(self, layer: int) -> nn.Module:
        self.check_layer(layer)
        return self.model.get_submodule(self.paths.layers)[layer]

    def post_ffn_gain(self, layer: int) -> torch.Tensor | None:
        """Elementwise gain of the norm after the MLP (Gemma 3), or None when there is none."""
        if self.paths.post_ffn_norm is None:
            return None
        norm = self.model.get_submodule(self.paths.post_ffn_norm.format(layer))
        # Gemma3RMSNorm scales by (1 + weight); keep that convention in one place.
        return 1.0 + norm.weight.detach().float()

    def post_ffn_eps(self, layer: int) -> float:
        if self.paths.post_ffn_norm is None:
            return 0.0
        return float(self.model.get_submodule(self.paths.post_ffn_norm.format(layer)).eps)

    def check_layer(self, layer: int) -> None:
        if not 0 <= int(layer) < self.num_layers:
            raise ValueError(
                f"layer {layer} does not exist: the model has {self.num_layers} layers "
                f"(0..{self.num_layers - 1}); fix the method's `layers` hyperparameter"
            )


def anatomy_of(model: nn.Module) -> ModelAnatomy:
    """Return the module table for ``model`` or fail naming the supported architectures."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in _ARCHITECTURES:
        raise UnsupportedArchitectureError(
            f"editing does not support model_type {model_type!r} ({type(model).__name__}); "
            f"supported: {', '.join(SUPPORTED_MODEL_TYPES)} "
            "(LlamaForCausalLM, Qwen2ForCausalLM, Gemma3ForCausalLM)"
        )
    return ModelAnatomy(model=model, paths=_ARCHITECTURES[model_type], model_type=model_type)
