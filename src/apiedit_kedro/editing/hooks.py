"""Forward hooks that read or perturb module activations at chosen (row, position) pairs.

transformers 5 returns plain tensors from decoder layers, MLPs and Linears but tuples from
``self_attn``; outputs are unwrapped and re-wrapped by type, never by ``out[0]`` (spec §2).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["StopForward", "add_to_output", "capture_inputs", "capture_outputs", "stop_after"]


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
