"""Tiny randomly initialised causal LMs of the three supported families, built in code.

Tests need real transformer architectures (Llama, Qwen2, Gemma 3) without downloading weights.
The tokenizer is a byte-level BPE trained with the `tokenizers` library on a few KB of the
standard library's own Python source, so code prompts split into sensible tokens. It is trained
once per process and cached; every model family shares it.
"""

from __future__ import annotations

import functools
import inspect
import logging

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

logger = logging.getLogger(__name__)

TINY_FAMILIES = ("llama", "qwen2", "gemma3")
TINY_VOCAB_SIZE = 768
BOS, EOS, PAD = "<s>", "</s>", "<pad>"
_SPECIAL_TOKENS = [PAD, BOS, EOS]

# Small, stable std-lib modules whose source is plain Python code (not C stubs).
_TRAINING_MODULES = ("bisect", "heapq", "textwrap", "fnmatch", "colorsys", "keyword")

_SHARED_DIMENSIONS = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 4096,
}


def _training_corpus() -> list[str]:
    import importlib

    texts = []
    for name in _TRAINING_MODULES:
        texts.append(inspect.getsource(importlib.import_module(name)))
    return texts


@functools.cache
def _trained_tokenizer_json() -> str:
    """Train the byte-level BPE once per process; returns its serialized form."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB_SIZE,
        special_tokens=_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_training_corpus(), trainer=trainer)
    # Prepend BOS like the real Llama/Gemma tokenizers do, so position 0 is never a content token.
    bos_id = tokenizer.token_to_id(BOS)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, bos_id)]
    )
    logger.debug("trained tiny BPE tokenizer with %d tokens", tokenizer.get_vocab_size())
    return tokenizer.to_str()


def build_tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A fresh tokenizer object (mutations by one caller never leak to another)."""
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_trained_tokenizer_json()),
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
    )
    tokenizer.padding_side = "left"
    return tokenizer


def _config(family: str, tokenizer: PreTrainedTokenizerFast):
    token_ids = {
        "vocab_size": len(tokenizer),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    if family == "llama":
        return LlamaConfig(**_SHARED_DIMENSIONS, **token_ids, tie_word_embeddings=False)
    if family == "qwen2":
        return Qwen2Config(**_SHARED_DIMENSIONS, **token_ids, tie_word_embeddings=False)
    # Gemma 3: tied embeddings, a small head_dim and one sliding-window layer followed by
    # one global layer, so the hybrid attention pattern of the real model is exercised.
    return Gemma3TextConfig(
        **_SHARED_DIMENSIONS,
        **token_ids,
        head_dim=16,
        sliding_window=32,
        layer_types=["sliding_attention", "full_attention"],
        tie_word_embeddings=True,
    )


_MODEL_CLASSES = {
    "llama": LlamaForCausalLM,
    "qwen2": Qwen2ForCausalLM,
    "gemma3": Gemma3ForCausalLM,
}


def build_tiny_model(
    family: str, *, seed: int = 0
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A tiny (< 1 M parameters) random fp32 model of `family` in eval mode, and its tokenizer.

    The same `seed` always gives the same weights.
    """
    if family not in _MODEL_CLASSES:
        raise ValueError(
            f"unknown tiny model family {family!r}; choose one of {', '.join(TINY_FAMILIES)}"
        )
    tokenizer = build_tiny_tokenizer()
    config = _config(family, tokenizer)
    config._attn_implementation = "eager"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _MODEL_CLASSES[family](config)
    model.to(torch.float32).eval()
    return model, tokenizer
