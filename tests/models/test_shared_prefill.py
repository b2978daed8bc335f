"""Batching and shared prefill change how tokens are computed, never which tokens come out."""

import pytest
import torch

from apiedit_kedro.models import generation as generation_module
from apiedit_kedro.models.generation import DecodingParams, generate
from apiedit_kedro.models.tiny import build_tiny_model

MAX_NEW = 10


def _greedy_without_cache(model, tokenizer, prompt: str) -> list[int]:
    """Independent reference: one row, no padding, no KV cache, a full forward per token."""
    ids = tokenizer(prompt).input_ids
    new = []
    with torch.inference_mode():
        for _ in range(MAX_NEW):
            logits = model(input_ids=torch.tensor([ids + new]), use_cache=False).logits
            new.append(int(logits[0, -1].argmax()))
            if new[-1] == tokenizer.eos_token_id:
                return new[:-1]
    return new


@pytest.mark.parametrize("family", ["llama", "gemma3"])
@pytest.mark.parametrize("batch_size", [1, 3, 8])
@pytest.mark.parametrize("shared_prefill", [False, True])
# 2 spare cache columns: the cache outgrows its buffer every other step (64 never does here)
@pytest.mark.parametrize("cache_room", [64, 2])
def test_greedy_tokens_equal_a_cacheless_loop(
    family, batch_size, shared_prefill, cache_room, code_prompts, monkeypatch
):
    monkeypatch.setattr(generation_module, "_CACHE_ROOM", cache_room)
    model, tokenizer = build_tiny_model(family, seed=5)
    params = DecodingParams(max_new_tokens=MAX_NEW, n_samples=2)
    generated = generate(
        model,
        tokenizer,
        code_prompts,
        params,
        batch_size=batch_size,
        shared_prefill=shared_prefill,
        progress=False,
    )
    for generation in generated:
        expected = _greedy_without_cache(model, tokenizer, code_prompts[generation.prompt_index])
        assert generation.completion == tokenizer.decode(expected, skip_special_tokens=True)


@pytest.mark.parametrize("family", ["llama", "gemma3"])
@pytest.mark.parametrize("cache_room", [64, 2])
def test_seeded_samples_equal_across_batch_size_and_shared_prefill(
    family, cache_room, code_prompts, monkeypatch
):
    monkeypatch.setattr(generation_module, "_CACHE_ROOM", cache_room)
    model, tokenizer = build_tiny_model(family, seed=6)
    params = DecodingParams(
        max_new_tokens=MAX_NEW, temperature=1.0, top_p=0.95, n_samples=5, seed=11
    )
    runs = {
        (batch_size, shared): generate(
            model,
            tokenizer,
            code_prompts,
            params,
            batch_size=batch_size,
            shared_prefill=shared,
            progress=False,
        )
        for batch_size in (1, 8)
        for shared in (False, True)
    }
    plain = [(g.completion, g.new_tokens, g.finish_reason) for g in runs[(1, False)]]
    for key, generations in runs.items():
        assert [(g.completion, g.new_tokens, g.finish_reason) for g in generations] == plain, key
    # The samples of one prompt differ, so the expanded cache rows really are sampled apart.
    assert len({g.completion for g in runs[(8, True)] if g.prompt_index == 1}) > 1


def test_shared_prefill_runs_each_distinct_prompt_once(tiny_llama, code_prompts):
    model, tokenizer = tiny_llama
    prefill_rows = []

    def record(module, args, kwargs):
        ids = kwargs.get("input_ids")
        if ids is not None and ids.shape[1] > 1:
            prefill_rows.append(ids.shape[0])

    handle = model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        generate(
            model,
            tokenizer,
            code_prompts[:2],
            DecodingParams(max_new_tokens=4, temperature=1.0, n_samples=4, seed=1),
            batch_size=8,
            progress=False,
        )
    finally:
        handle.remove()
    assert prefill_rows == [2]  # one prefill forward of the 2 distinct prompts for 8 rows
