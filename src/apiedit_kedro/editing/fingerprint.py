"""Content fingerprints of models and weights, for cache keys and exact-restore checks.

``_name_or_path`` is empty for models built from a config, so caches are keyed by a hash of the
config plus a few weight tensors instead.
"""

from __future__ import annotations

import hashlib
import json

import torch
from torch import nn

__all__ = ["model_fingerprint", "tensor_digest", "weight_checksum"]

_VOLATILE_CONFIG_KEYS = {
    "_name_or_path",
    "transformers_version",
    "torch_dtype",
    "dtype",
    "_commit_hash",
}


def tensor_digest(tensor: torch.Tensor, digest=None):
    """Feed the raw bytes of ``tensor`` into a hashlib object (created when None)."""
    digest = digest or hashlib.sha256()
    data = tensor.detach().contiguous().cpu()
    digest.update(str(data.dtype).encode())
    digest.update(str(tuple(data.shape)).encode())
    # hash the tensor's own buffer: a bytes copy of Gemma's embedding alone would be 640 MiB
    digest.update(data.view(-1).view(torch.uint8).numpy())
    return digest


def weight_checksum(model: nn.Module) -> str:
    """sha256 over every parameter and buffer (names, dtypes, shapes, bytes) of ``model``.

    A GRACE adaptor registers its codebook as buffers, so an attached codebook changes the checksum.
    """
    digest = hashlib.sha256()
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        digest.update(name.encode())
        tensor_digest(tensor, digest)
    return digest.hexdigest()


def model_fingerprint(model: nn.Module) -> str:
    """Stable id of a model's identity: its config and samples of its first and last weights.

    Edits only touch MLP ``down_proj`` weights (or add a GRACE codebook), so an edited model keeps
    its fingerprint: context templates and covariance computed on the unedited model stay valid
    for sequential edits.
    """
    config = {
        key: value
        for key, value in model.config.to_dict().items()
        if key not in _VOLATILE_CONFIG_KEYS
    }
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    named = list(model.named_parameters())
    for _name, tensor in (named[0], named[-1]):
        flat = tensor.detach().reshape(-1)
        tensor_digest(flat[:4096].float(), digest)
    return digest.hexdigest()[:24]
