"""Shared constants and helpers of the editing tests (imported by name, like sandbox_helpers)."""

from __future__ import annotations

from pathlib import Path

from apiedit_kedro.editing import covariance_layers, load_or_compute_covariance

CONF = Path(__file__).resolve().parents[2] / "conf"
FAMILIES = ("llama", "qwen2", "gemma3")
PROMPT = "import heapq\n\ndef push(heap, item):\n    return "
TARGET = "heappush(heap, item)"


def tiny_covariance(model, tokenizer, params: dict, directory: Path):
    settings = params["covariance"]
    return load_or_compute_covariance(
        model,
        tokenizer,
        covariance_layers(params),
        corpus=settings["corpus"],
        token_budget=settings["token_budget"],
        max_len=settings["max_len"],
        cache_dir=directory,
    )
