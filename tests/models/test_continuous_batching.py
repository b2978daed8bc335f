"""Continuous batching: rows that finish leave, queued jobs take their place, tokens never change."""

import itertools

import pytest

from apiedit_kedro.models.generation import DecodingParams, generate
from apiedit_kedro.models.tiny import build_tiny_model

MAX_NEW = 12


def _record_forwards(model):
    calls = []

    def record(module, args, kwargs):
        calls.append((tuple(kwargs["input_ids"].shape), kwargs["attention_mask"].shape[1]))

    return calls, model.register_forward_pre_hook(record, with_kwargs=True)


def _past_the_window(prompts):
    """Prompts of different lengths, all longer than the tiny Gemma 3's 32-token sliding window:
    a row that joins late is left-padded, and padding anywhere else would shift the window."""
    return [
        f"# helper {i}: " + "compute the values carefully " * (6 + 3 * i) + "\n" + prompt
        for i, prompt in enumerate(prompts)
    ]


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_a_row_that_stops_early_is_replaced_and_tokens_stay_the_same(family, code_prompts):
    model, tokenizer = build_tiny_model(family, seed=3)
    if family == "gemma3":
        code_prompts = _past_the_window(code_prompts)
    longest = max(range(len(code_prompts)), key=lambda i: len(tokenizer(code_prompts[i]).input_ids))
    plain = generate(
        model,
        tokenizer,
        code_prompts,
        DecodingParams(max_new_tokens=MAX_NEW),
        batch_size=1,
        progress=False,
    )
    # The longest prompt's first two new tokens as a stop string: that row ends at once, so its
    # slot goes to a queued prompt and its left columns become padding for every other row.
    first_two = tokenizer(plain[longest].completion, add_special_tokens=False).input_ids[:2]
    stop = tokenizer.decode(first_two)
    assert stop.strip()
    params = DecodingParams(max_new_tokens=MAX_NEW, stop_sequences=(stop,))
    reference = generate(model, tokenizer, code_prompts, params, batch_size=1, progress=False)

    calls, handle = _record_forwards(model)
    try:
        batched = generate(model, tokenizer, code_prompts, params, batch_size=2, progress=False)
    finally:
        handle.remove()

    assert [(g.completion, g.finish_reason, g.new_tokens) for g in batched] == [
        (g.completion, g.finish_reason, g.new_tokens) for g in reference
    ]
    assert batched[longest].finish_reason == "stop"
    decode_rows = [shape[0] for shape, _ in calls if shape[1] == 1]
    assert max(decode_rows) == 2  # never more rows than batch_size
    # A prefill followed by a decode step of more rows than it prefilled: the new row joined
    # rows that were still running instead of waiting for the batch to empty.
    joined = [
        (before, after)
        for (before, _), (after, _) in itertools.pairwise(calls)
        if before[1] > 1 and after[1] == 1 and after[0] > before[0]
    ]
    assert joined, "no queued job was admitted while others were decoding"
    # Once the longest row left, its leading columns were dropped: a decode step's attention
    # mask got narrower than the step before instead of one column wider.
    widths = [width for shape, width in calls if shape[1] == 1]
    assert any(after < before for before, after in itertools.pairwise(widths))


def test_sampled_rows_keep_their_seeds_when_admitted_late(code_prompts):
    model, tokenizer = build_tiny_model("gemma3", seed=4)
    params = DecodingParams(max_new_tokens=8, temperature=1.0, top_p=0.9, n_samples=3, seed=9)
    one_by_one = generate(model, tokenizer, code_prompts, params, batch_size=1, progress=False)
    queued = generate(model, tokenizer, code_prompts, params, batch_size=5, progress=False)
    assert [(g.completion, g.new_tokens) for g in queued] == [
        (g.completion, g.new_tokens) for g in one_by_one
    ]
