import pytest

from apiedit_kedro.models.generation import (
    DecodingError,
    DecodingParams,
    generate,
    generate_jobs,
)
from apiedit_kedro.models.tiny import build_tiny_model


def _texts(generations):
    return [(g.prompt_index, g.sample_idx, g.completion, g.new_tokens) for g in generations]


@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma3"])
def test_batched_greedy_equals_one_at_a_time(family, code_prompts):
    model, tokenizer = build_tiny_model(family, seed=3)
    params = DecodingParams(max_new_tokens=12)
    batched = generate(model, tokenizer, code_prompts, params, batch_size=4, progress=False)
    single = [
        generate(model, tokenizer, [prompt], params, batch_size=1, progress=False)[0]
        for prompt in code_prompts
    ]
    assert [g.completion for g in batched] == [g.completion for g in single]
    assert all(g.finish_reason == "length" and g.new_tokens == 12 for g in batched)
    # Prompts really have different lengths, so the batch really was left-padded.
    assert len({len(tokenizer(p).input_ids) for p in code_prompts}) == len(code_prompts)


def test_stop_sequences_cut_exactly_per_row(tiny_llama, code_prompts):
    model, tokenizer = tiny_llama
    free = generate(
        model, tokenizer, code_prompts, DecodingParams(max_new_tokens=20), progress=False
    )
    target = free[1].completion
    stop = target[6:9]  # a snippet from the middle of row 1's free-running output
    assert stop and target.find(stop) > 0
    stopped = generate(
        model,
        tokenizer,
        code_prompts,
        DecodingParams(max_new_tokens=20, stop_sequences=(stop,)),
        batch_size=4,
        progress=False,
    )
    row = stopped[1]
    assert row.completion == target[: target.find(stop)]
    assert row.finish_reason == "stop"
    assert row.new_tokens < 20  # stopped during generation, not only truncated afterwards
    for free_row, stopped_row in zip(free, stopped, strict=True):
        if stop not in free_row.completion:
            assert stopped_row.completion == free_row.completion
            assert stopped_row.finish_reason == "length"


def test_same_seed_reproduces_samples_whatever_the_batch(tiny_llama, code_prompts):
    model, tokenizer = tiny_llama
    params = DecodingParams(max_new_tokens=10, temperature=0.9, top_p=0.9, n_samples=3, seed=7)
    first = generate(model, tokenizer, code_prompts, params, batch_size=5, progress=False)
    # Different batch size, different prompt order and only a subset of jobs.
    reordered = list(reversed(code_prompts))
    second = generate(model, tokenizer, reordered, params, batch_size=2, progress=False)
    by_text = {(code_prompts[g.prompt_index], g.sample_idx): g.completion for g in first}
    assert all(by_text[(reordered[g.prompt_index], g.sample_idx)] == g.completion for g in second)
    subset = generate_jobs(model, tokenizer, code_prompts, [(2, 1)], params, progress=False)
    assert subset[0].completion == by_text[(code_prompts[2], 1)]
    # Samples of one prompt differ from each other, and another seed gives other samples.
    assert len({g.completion for g in first if g.prompt_index == 0}) == 3
    other = generate(
        model,
        tokenizer,
        code_prompts,
        DecodingParams(**{**params.__dict__, "seed": 8}),
        progress=False,
    )
    assert [g.completion for g in other] != [g.completion for g in first]


def test_tiny_top_p_keeps_only_the_most_likely_token(tiny_llama, code_prompts):
    model, tokenizer = tiny_llama
    greedy = generate(
        model, tokenizer, code_prompts, DecodingParams(max_new_tokens=8), progress=False
    )
    nucleus = DecodingParams(max_new_tokens=8, temperature=1.5, top_p=1e-6, n_samples=2)
    sampled = generate(model, tokenizer, code_prompts, nucleus, progress=False)
    expected = [g.completion for g in greedy for _ in range(2)]
    assert [g.completion for g in sampled] == expected


def test_greedy_samples_are_generated_once(tiny_llama):
    model, tokenizer = tiny_llama
    calls = []
    handle = model.register_forward_hook(lambda *_: calls.append(1))
    try:
        out = generate(
            model,
            tokenizer,
            ["x = 1"],
            DecodingParams(max_new_tokens=5, n_samples=3),
            progress=False,
        )
    finally:
        handle.remove()
    assert [g.sample_idx for g in out] == [0, 1, 2]
    assert len({g.completion for g in out}) == 1
    assert len(calls) == 5  # one row: 1 prefill + 4 decode steps


def test_bad_settings_fail_before_generating(tiny_llama):
    model, tokenizer = tiny_llama
    with pytest.raises(DecodingError, match="top_p"):
        DecodingParams(top_p=0)
    with pytest.raises(DecodingError, match="prompt 1 has"):
        generate(
            model,
            tokenizer,
            ["x", "y " * 600],
            DecodingParams(max_new_tokens=500),
            context_length=1024,
            progress=False,
        )
    assert DecodingParams.from_params(
        {"temperature": 0.8, "batch_size": 4, "stop_sequences": ["a"]}
    ) == DecodingParams(temperature=0.8, stop_sequences=("a",))


def test_eos_finishes_a_row(tiny_llama):
    model, tokenizer = tiny_llama

    def prefer_eos(module, inputs, logits):
        logits[..., tokenizer.eos_token_id] += 1e4
        return logits

    handle = model.lm_head.register_forward_hook(prefer_eos)
    try:
        (generation,) = generate(
            model, tokenizer, ["x = 1"], DecodingParams(max_new_tokens=5), progress=False
        )
    finally:
        handle.remove()
    assert (generation.completion, generation.finish_reason, generation.new_tokens) == (
        "",
        "eos",
        1,
    )


def test_prompts_with_their_own_stops_in_one_batch_equal_each_run_alone(tiny_llama, code_prompts):
    """HumanEval and MBPP prompts decode together; each row is cut by its own stop strings only."""
    model, tokenizer = tiny_llama
    plain = generate(
        model, tokenizer, code_prompts, DecodingParams(max_new_tokens=12), progress=False
    )
    # each prompt stops at a string from its own completion, which the others need not contain
    stops = [(g.completion[2:4],) if g.completion[2:4].strip() else ("\n",) for g in plain]
    together = generate(
        model,
        tokenizer,
        code_prompts,
        DecodingParams(max_new_tokens=12),
        batch_size=4,
        progress=False,
        prompt_stops=stops,
    )
    for generation, own in zip(together, stops, strict=True):
        alone = generate(
            model,
            tokenizer,
            [code_prompts[generation.prompt_index]],
            DecodingParams(max_new_tokens=12, stop_sequences=own),
            progress=False,
        )[0]
        assert (generation.completion, generation.finish_reason, generation.new_tokens) == (
            alone.completion,
            alone.finish_reason,
            alone.new_tokens,
        )
    assert {g.finish_reason for g in together} & {"stop"}
