"""Covariance statistics: one hooked pass, cached by content, loaded on the second call."""

from __future__ import annotations

import torch

from apiedit_kedro.editing import load_or_compute_covariance, model_fingerprint
from apiedit_kedro.editing.covariance import corpus_files
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


def test_statistics_equal_the_sum_of_outer_products_of_the_keys(tmp_path):
    model, tokenizer = build_tiny_model("llama", seed=0)
    stats = load_or_compute_covariance(
        model, tokenizer, [1], token_budget=100, max_len=50, cache_dir=tmp_path
    )
    keys = []
    hook = model.model.layers[1].mlp.down_proj.register_forward_pre_hook(
        lambda _m, a: keys.append(a[0][0])
    )
    text = corpus_files("stdlib")[0].read_text()
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        for start in (0, 50):
            model(input_ids=torch.tensor([ids[start : start + 50]]))
    hook.remove()
    flat = torch.cat(keys).double()
    assert torch.allclose(stats.sums[1], flat.T @ flat, rtol=1e-5)


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
