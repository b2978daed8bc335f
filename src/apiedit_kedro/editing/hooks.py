"""Forward hooks that read or perturb module activations at chosen (row, position) pairs.

transformers 5 returns plain tensors from decoder layers, MLPs and Linears but tuples from
``self_attn``; outputs are unwrapped and re-wrapped by type, never by ``out[0]``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

__all__ = [
    "StopForward",
    "add_to_output",
    "capture_inputs",
    "capture_outputs",
    "replay_lower_layers",
    "stop_after",
]


class StopForward(Exception):
    """Raised by a hook to end a forward pass early once the needed layers have run."""


def _split(output):
    if isinstance(output, torch.Tensor):
        return output, None
    return output[0], output


def _join(tensor: torch.Tensor, original):
    if original is None:
        return tensor
    return (tensor, *original[1:])


@contextmanager
def capture_inputs(modules: Sequence[nn.Module]) -> Iterator[list[torch.Tensor | None]]:
    """Record the first positional input of each module on the last forward (index-aligned)."""
    captured: list[torch.Tensor | None] = [None] * len(modules)

    def make_hook(slot: int) -> Callable:
        def hook(_module, args):
            captured[slot] = args[0]

        return hook

    handles = [m.register_forward_pre_hook(make_hook(i)) for i, m in enumerate(modules)]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def capture_outputs(modules: Sequence[nn.Module]) -> Iterator[list[torch.Tensor | None]]:
    """Record the (tensor part of the) output of each module on the last forward."""
    captured: list[torch.Tensor | None] = [None] * len(modules)

    def make_hook(slot: int) -> Callable:
        def hook(_module, _args, output):
            captured[slot] = _split(output)[0]

        return hook

    handles = [m.register_forward_hook(make_hook(i)) for i, m in enumerate(modules)]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def add_to_output(
    module: nn.Module, rows: torch.Tensor, positions: torch.Tensor, delta: torch.Tensor
) -> Iterator[list[torch.Tensor | None]]:
    """Add ``delta`` (fp32, cast to the activation dtype) to the output at (rows[i], positions[i]).

    Yields a one-slot list holding the unperturbed output of the last forward, from which callers
    read h0.
    """
    seen: list[torch.Tensor | None] = [None]

    def hook(_module, _args, output):
        tensor, original = _split(output)
        seen[0] = tensor.detach()
        patched = tensor.clone()
        patched[rows, positions] = patched[rows, positions] + delta.to(tensor.dtype)
        return _join(patched, original)

    handle = module.register_forward_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()


@contextmanager
def stop_after(module: nn.Module) -> Iterator[None]:
    """End the forward pass right after ``module`` runs (caller catches StopForward)."""

    def hook(_module, _args, _output):
        raise StopForward

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


class _PassThrough(nn.Module):
    """Stands in for a decoder layer whose output is replayed: returns its input unchanged."""

    def forward(self, hidden_states, *args, **kwargs):
        return hidden_states


def _input_key(kwargs: dict) -> tuple:
    parts = []
    for name in ("input_ids", "attention_mask", "position_ids"):
        value = kwargs.get(name)
        if value is not None:
            parts.append((name, tuple(value.shape), value.detach().cpu().numpy().tobytes()))
    return tuple(parts)


@contextmanager
def replay_lower_layers(model: nn.Module, layers_path: str, first_layer: int) -> Iterator[None]:
    """Run the decoder layers below ``first_layer`` once per distinct input, then replay them.

    Inside an edit's optimisation loop nothing below the edited layer changes and the same
    prompt is run at every step, so the hidden state entering ``first_layer`` is the same every
    time; recomputing it is most of a step's forward (15 of Gemma 3 270M's 18 layers for GRACE at
    layer 15, 12 for FT at layer 12). Replaying the stored tensor is bit-identical: the same
    kernels computed it from the same input. Keyed by the decoder's ``input_ids``,
    ``attention_mask`` and ``position_ids``, so a different input runs the layers again. Only
    for forwards without a KV cache (the edit loops run ``use_cache=False``).
    """
    if first_layer <= 0:
        yield
        return
    stack = model.get_submodule(layers_path)
    decoder = model.get_submodule(layers_path.rpartition(".")[0])
    lower = [stack[i] for i in range(first_layer)]
    skipped = [_PassThrough() for _ in lower]
    stored: dict[tuple, torch.Tensor] = {}
    current: dict[str, tuple | None] = {"key": None}

    def swap_in(layers: Sequence[nn.Module]) -> None:
        for index, layer in enumerate(layers):
            stack[index] = layer

    def before_decoder(_module, _args, kwargs):
        current["key"] = _input_key(kwargs)
        if current["key"] in stored:
            swap_in(skipped)

    def after_decoder(*_):
        swap_in(lower)

    def before_first(_module, args, kwargs):
        key = current["key"]
        if key not in stored:
            stored[key] = (args[0] if args else kwargs["hidden_states"]).detach()
            return None
        if args:
            return (stored[key], *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": stored[key]}

    handles = [
        decoder.register_forward_pre_hook(before_decoder, with_kwargs=True),
        decoder.register_forward_hook(after_decoder, always_call=True),
        stack[first_layer].register_forward_pre_hook(before_first, with_kwargs=True),
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        swap_in(lower)
