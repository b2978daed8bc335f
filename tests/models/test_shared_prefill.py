"""Batching and shared prefill change how tokens are computed, never which tokens come out."""

import pytest
import torch

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
def test_greedy_tokens_equal_a_cacheless_loop(family, batch_size, shared_prefill, code_prompts):
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
def test_seeded_samples_equal_across_batch_size_and_shared_prefill(family, code_prompts):
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


# A prefix longer than the tiny Gemma 3's 32-token sliding window, so the suffix prefilled on its
# copied KV cache attends across the window's edge exactly as a whole-prompt prefill would.
SHARED_PREFIX = (
    "# Example 1\ndef first(xs):\n    return xs[0]\n\n"
    "# Example 2\ndef last(xs):\n    return xs[-1]\n\n"
    "# Example 3\ndef middle(xs):\n    return xs[len(xs) // 2]\n\n"
)
PREFIXED_PROMPTS = [
    SHARED_PREFIX + "def total(xs):\n",
    SHARED_PREFIX + "def count_even(numbers):\n    return",
    SHARED_PREFIX + "x =",
]


def _forward_shapes(model):
    shapes = []

    def record(module, args, kwargs):
        ids = kwargs.get("input_ids")
        shapes.append(tuple(ids.shape))

    return shapes, model.register_forward_pre_hook(record, with_kwargs=True)


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_common_prefix_is_prefilled_once_and_changes_no_token(family, code_prompts):
    model, tokenizer = build_tiny_model(family, seed=7)
    ids = [tokenizer(p).input_ids for p in PREFIXED_PROMPTS]
    prefix = next(i for i in range(len(ids[0])) if len({tuple(p[: i + 1]) for p in ids}) > 1)
    assert prefix > 32  # crosses the sliding window
    # prompts that share nothing with the others, as HumanEval prompts beside MBPP ones; the
    # longest of all is admitted first, so the batch's lines are not in admission order
    others = ['def longest(words):\n    """' + "Join the words. " * 30 + '"""\n', code_prompts[0]]
    prompts = [others[0], *PREFIXED_PROMPTS, others[1]]
    shapes, handle = _forward_shapes(model)
    try:
        generated = generate(
            model,
            tokenizer,
            prompts,
            DecodingParams(max_new_tokens=MAX_NEW),
            batch_size=8,
            progress=False,
        )
    finally:
        handle.remove()
    prefills = [shape for shape in shapes if shape[1] > 1]
    # the prefix once, then each prompt's own tokens on a copy of its cache, then the other
    # prompts together, left-padded
    longest_other = max(len(tokenizer(p).input_ids) for p in others)
    assert longest_other > max(len(p) for p in ids)
    assert prefills[0] == (1, prefix)
    assert sorted(prefills[1:4]) == sorted((1, len(p) - prefix) for p in ids)
    assert prefills[4:] == [(2, longest_other)]
    for generation in generated:
        expected = _greedy_without_cache(model, tokenizer, prompts[generation.prompt_index])
        assert generation.completion == tokenizer.decode(expected, skip_special_tokens=True)


def test_seeded_samples_with_a_shared_prefix_equal_the_unshared_path():
    model, tokenizer = build_tiny_model("gemma3", seed=8)
    params = DecodingParams(max_new_tokens=MAX_NEW, temperature=0.9, top_p=0.9, n_samples=3, seed=4)
    shared, unshared = (
        generate(
            model,
            tokenizer,
            PREFIXED_PROMPTS,
            params,
            batch_size=batch_size,
            shared_prefill=flag,
            progress=False,
        )
        for batch_size, flag in ((8, True), (1, False))
    )
    assert [(g.completion, g.finish_reason) for g in shared] == [
        (g.completion, g.finish_reason) for g in unshared
    ]
