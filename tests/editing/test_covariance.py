"""Covariance statistics: one hooked pass, cached by content, loaded on the second call."""

from __future__ import annotations

import torch

from apiedit_kedro.editing import load_or_compute_covariance, model_fingerprint
from apiedit_kedro.editing.covariance import (
    _blocks,
    cache_key,
    corpus_files,
    tokenizer_identity,
)
from apiedit_kedro.models.tiny import build_tiny_model


def test_second_call_loads_instead_of_recomputing(tmp_path):
    model, tokenizer = build_tiny_model("gemma3", seed=0)
    first = load_or_compute_covariance(
        model, tokenizer, [1, 0], token_budget=600, max_len=128, cache_dir=tmp_path
    )
    files = list(tmp_path.iterdir())
    assert first.metadata["cache"] == "miss" and len(files) == 1
    stamp = files[0].stat().st_mtime_ns
    second = load_or_compute_covariance(
        model, tokenizer, [0, 1], token_budget=600, max_len=128, cache_dir=tmp_path
    )
    assert second.metadata["cache"] == "hit"
    assert files[0].stat().st_mtime_ns == stamp
    assert first.layers == second.layers == [0, 1]
    for layer in (0, 1):
        assert torch.equal(first.sums[layer], second.sums[layer])
        assert first.counts[layer] == second.counts[layer] == 600
        assert first.sums[layer].dtype == torch.float64
        assert torch.allclose(first.sums[layer], first.sums[layer].T)
    # a different budget is a different cache entry
    third = load_or_compute_covariance(
        model, tokenizer, [0, 1], token_budget=300, max_len=128, cache_dir=tmp_path
    )
    assert third.metadata["cache"] == "miss" and len(list(tmp_path.iterdir())) == 2


def test_statistics_equal_the_sum_of_outer_products_of_the_sampled_chunks(tmp_path):
    model, tokenizer = build_tiny_model("llama", seed=0)
    stats = load_or_compute_covariance(
        model, tokenizer, [1], token_budget=100, max_len=50, cache_dir=tmp_path
    )
    keys = []
    hook = model.model.layers[1].mlp.down_proj.register_forward_pre_hook(
        lambda _m, a: keys.append(a[0][0])
    )
    files = corpus_files("stdlib")
    blocks = _blocks(files, 50, 0)
    used, seen = [], 0
    for index, offset in blocks:  # the first sampled blocks, read independently of _chunks
        raw = files[index].read_bytes()[offset : offset + 200].decode("utf-8", errors="replace")
        ids = tokenizer(raw, add_special_tokens=False)["input_ids"][:50][: 100 - seen]
        if len(ids) > 1:
            used.append(files[index])
            seen += len(ids)
            with torch.no_grad():
                model(input_ids=torch.tensor([ids]))
        if seen >= 100:
            break
    hook.remove()
    flat = torch.cat(keys).double()
    assert torch.allclose(stats.sums[1], flat.T @ flat, rtol=1e-5)
    assert len(set(used)) > 1  # sampled across files, not one file's prefix


def test_chunks_are_sampled_across_the_whole_corpus():
    files = corpus_files("stdlib")
    first = _blocks(files, 256, 0)[:200]
    directories = {files[index].parent for index, _ in first}
    names = [files[index].name for index, _ in first]
    assert len(directories) > 5
    assert max(names.count(name) for name in set(names)) < 20  # no single file dominates
    assert _blocks(files, 256, 1)[:200] != first  # the seed chooses the sample


def _relative_frobenius(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_two_budgets_from_the_same_seed_converge(tmp_path):
    # ‖C_b − C_ref‖_F / ‖C_ref‖_F falls as the budget b grows towards the reference budget
    model, tokenizer = build_tiny_model("llama", seed=0)

    def moment(budget: int) -> torch.Tensor:
        stats = load_or_compute_covariance(
            model, tokenizer, [1], token_budget=budget, max_len=128, cache_dir=tmp_path
        )
        return stats.sums[1] / stats.counts[1]

    reference = moment(16_000)
    distances = [_relative_frobenius(moment(budget), reference) for budget in (500, 2000, 8000)]
    assert distances[0] > distances[1] > distances[2]
    assert distances[2] < 0.5 * distances[0]


def test_cache_key_sees_dtype_tokenizer_and_seed():
    model, tokenizer = build_tiny_model("llama", seed=0)
    key = cache_key(model, tokenizer, [0], "stdlib", 100, 64)
    assert cache_key(model, tokenizer, [0], "stdlib", 100, 64, seed=1) != key
    _other_model, other_tokenizer = build_tiny_model("qwen2", seed=0)
    if tokenizer_identity(other_tokenizer) != tokenizer_identity(tokenizer):
        assert cache_key(model, other_tokenizer, [0], "stdlib", 100, 64) != key
    assert cache_key(model.to(torch.bfloat16), tokenizer, [0], "stdlib", 100, 64) != key


def test_fingerprint_ignores_name_or_path_and_sees_weights():
    model_a, _ = build_tiny_model("llama", seed=0)
    model_b, _ = build_tiny_model("llama", seed=1)
    fingerprint = model_fingerprint(model_a)
    model_a.config._name_or_path = "somewhere/else"
    assert model_fingerprint(model_a) == fingerprint
    assert model_fingerprint(model_b) != fingerprint
    with torch.no_grad():
        model_a.model.layers[0].mlp.down_proj.weight.add_(1.0)  # an edit keeps the identity
    assert model_fingerprint(model_a) == fingerprint


def test_stdlib_corpus_excludes_tests_and_is_sorted():
    files = corpus_files("stdlib")
    assert list(files) == sorted(files)
    assert not any("test" in path.parts for path in files)
    assert len(files) > 500
