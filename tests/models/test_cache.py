import sqlite3

import pytest

from apiedit_kedro.models.cache import GenerationCache, generate_cached
from apiedit_kedro.models.generation import DecodingParams, generate
from apiedit_kedro.study.store import StoreFormatError


class _ForwardCounter:
    """Counts real forward passes of a real model (a hook, not a mock)."""

    def __init__(self, model):
        self.calls = 0
        self._handle = model.register_forward_hook(self._count)

    def _count(self, *_):
        self.calls += 1

    def remove(self):
        self._handle.remove()


def _cached(model, tokenizer, prompts, params, cache, *, weight_state="base"):
    return generate_cached(
        model,
        tokenizer,
        prompts,
        params,
        cache=cache,
        card_fingerprint="tiny-card",
        weight_state=weight_state,
        batch_size=2,
        progress=False,
    )


def test_cache_hit_does_not_call_the_model(tiny_llama, code_prompts, tmp_path):
    model, tokenizer = tiny_llama
    params = DecodingParams(max_new_tokens=6, temperature=0.8, n_samples=2, seed=1)
    counter = _ForwardCounter(model)
    try:
        with GenerationCache(tmp_path / "cache.sqlite") as cache:
            first = _cached(model, tokenizer, code_prompts, params, cache)
            generating_calls = counter.calls
            assert generating_calls > 0 and len(cache) == len(code_prompts) * 2
            again = _cached(model, tokenizer, code_prompts, params, cache)
            assert counter.calls == generating_calls
        # Persisted: a new process (new connection) reads the same samples without the model.
        with GenerationCache(tmp_path / "cache.sqlite") as reopened:
            third = _cached(model, tokenizer, code_prompts, params, reopened)
            assert counter.calls == generating_calls
            # Two more samples per prompt: only those are generated.
            more = _cached(
                model,
                tokenizer,
                code_prompts,
                params.__class__(**{**params.__dict__, "n_samples": 3}),
                reopened,
            )
            assert counter.calls > generating_calls
            assert len(reopened) == len(code_prompts) * 3
            # Other weights are another key: generated again.
            before = counter.calls
            _cached(model, tokenizer, code_prompts[:1], params, reopened, weight_state="edit-1")
            assert counter.calls > before
    finally:
        counter.remove()
    assert [g.completion for g in again] == [g.completion for g in first]
    assert [g.completion for g in third] == [g.completion for g in first]
    assert [g.completion for g in more if g.sample_idx < 2] == [g.completion for g in first]
    direct = generate(model, tokenizer, code_prompts, params, progress=False)
    assert [g.completion for g in direct] == [g.completion for g in first]


def test_interrupted_run_resumes_without_regenerating(tiny_llama, code_prompts, tmp_path):
    model, tokenizer = tiny_llama
    params = DecodingParams(max_new_tokens=5, temperature=0.7, n_samples=2, seed=3)
    reference = generate(model, tokenizer, code_prompts, params, progress=False)

    prefills = []

    def crash_on_third_batch(module, args, kwargs, output):
        if kwargs["input_ids"].shape[1] > 1:  # the prefill step starts a new batch
            prefills.append(1)
            if len(prefills) == 3:
                raise KeyboardInterrupt("simulated kill during the third batch")

    handle = model.register_forward_hook(crash_on_third_batch, with_kwargs=True)
    try:
        with GenerationCache(tmp_path / "cache.sqlite") as cache, pytest.raises(KeyboardInterrupt):
            _cached(model, tokenizer, code_prompts, params, cache)
    finally:
        handle.remove()
    with GenerationCache(tmp_path / "cache.sqlite") as cache:
        assert len(cache) == 4  # two finished batches of two samples survived the kill
        counter = _ForwardCounter(model)
        try:
            resumed = _cached(model, tokenizer, code_prompts, params, cache)
        finally:
            counter.remove()
        assert counter.calls == 2 * params.max_new_tokens  # the two remaining batches only
    assert [g.completion for g in resumed] == [g.completion for g in reference]


def test_caches_from_before_versioning_load_and_foreign_layouts_fail(tmp_path):
    old = tmp_path / "old.sqlite"
    with sqlite3.connect(old) as connection:  # the layout written before the schema version
        connection.execute(
            "CREATE TABLE generations (key TEXT PRIMARY KEY, card TEXT NOT NULL, weight_state "
            "TEXT NOT NULL, prompt_hash TEXT NOT NULL, decoding TEXT NOT NULL, sample_idx "
            "INTEGER NOT NULL, completion TEXT NOT NULL, finish_reason TEXT NOT NULL, "
            "new_tokens INTEGER NOT NULL, gen_seconds REAL NOT NULL)"
        )
        connection.execute(
            "INSERT INTO generations VALUES ('k', 'c', 'base', 'h', '{}', 0, 'x', 'length', 3, 0.5)"
        )
    with GenerationCache(old) as cache:
        assert cache.get_many(["k", "absent"]) == {"k": ("x", "length", 3, 0.5)}
    with sqlite3.connect(old) as connection:
        assert connection.execute("PRAGMA user_version").fetchone()[0] == GenerationCache.VERSION

    foreign = tmp_path / "foreign.sqlite"
    with sqlite3.connect(foreign) as connection:
        connection.execute("CREATE TABLE generations (key TEXT PRIMARY KEY, text TEXT)")
    with pytest.raises(StoreFormatError, match=r"foreign\.sqlite.*Delete the file"):
        GenerationCache(foreign)
    newer = tmp_path / "newer.sqlite"
    GenerationCache(newer).close()
    with sqlite3.connect(newer) as connection:
        connection.execute("PRAGMA user_version = 99")
    with pytest.raises(StoreFormatError, match="version 99"):
        GenerationCache(newer)


def test_per_prompt_stops_are_cached_as_if_each_prompt_ran_alone(
    tiny_llama, code_prompts, tmp_path
):
    """One mixed batch with each prompt's own stops fills the keys that per-format calls read."""
    model, tokenizer = tiny_llama
    params = DecodingParams(max_new_tokens=8)
    stops = [("\n",), ("(",), ("\n",), (":", "=")]
    with GenerationCache(tmp_path / "cache.sqlite") as cache:
        mixed = generate_cached(
            model,
            tokenizer,
            code_prompts,
            params,
            cache=cache,
            card_fingerprint="tiny-card",
            weight_state="base",
            batch_size=4,
            progress=False,
            prompt_stops=stops,
        )
        counter = _ForwardCounter(model)
        try:
            alone = [
                _cached(model, tokenizer, [prompt], DecodingParams(8, stop_sequences=own), cache)[0]
                for prompt, own in zip(code_prompts, stops, strict=True)
            ]
        finally:
            counter.remove()
    assert counter.calls == 0
    assert [g.completion for g in mixed] == [g.completion for g in alone]


def test_samples_of_another_draw_are_keyed_apart_and_greedy_keys_are_not(monkeypatch):
    from apiedit_kedro.models import generation

    sampled = DecodingParams(temperature=0.8, top_p=0.95, seed=3)
    greedy = DecodingParams()

    def keys():
        return [GenerationCache.key("card", "base", "def f():", p, 0) for p in (sampled, greedy)]

    sampled_key, greedy_key = keys()
    monkeypatch.setattr(generation, "SAMPLER", "multinomial over the whole vocabulary")
    other_sampled_key, other_greedy_key = keys()
    assert other_sampled_key != sampled_key
    assert other_greedy_key == greedy_key
