"""Each method on tiny random Llama, Qwen2 and Gemma 3 models (conf/tiny hyperparameters).

Random 2-layer models cannot carry a multi-token code target from one edited position: ROME,
MEMIT, PMET and GRACE write at the key position only, so on these models the greedy continuation
begins with the target's first token and the teacher-forced rewrite accuracy rises, while FT (which
trains on every target position) reproduces the whole target. The embedded Gemma 3 270M test
checks the full continuation on a trained model.
"""

from __future__ import annotations

import pytest
import torch
from editing_helpers import PROMPT, TARGET, tiny_covariance

from apiedit_kedro.editing import apply_edits, weight_checksum
from apiedit_kedro.editing.grace import query_at
from apiedit_kedro.editing.requests import target_ids_after
from apiedit_kedro.metrics.edit_metrics import locality, next_token_predictions, rewrite_accuracy
from apiedit_kedro.models.tiny import build_tiny_model

FAMILIES = ("llama", "qwen2", "gemma3")
METHODS = ("ft", "grace", "rome", "memit", "pmet")
LOCALITY_PROMPTS = [
    "def add(a, b):\n    return a",
    "for line in lines:\n    ",
    "class Stack:\n    def",
]


def _greedy(model, tokenizer, prompt: str, new_tokens: int) -> list[int]:
    ids = tokenizer(prompt, return_tensors="pt")
    out = model.generate(
        **ids, max_new_tokens=new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
    )
    return out[0, ids["input_ids"].shape[1] :].tolist()


def _edit(family: str, method: str, params: dict, covariance_dir, requests=None):
    model, tokenizer = build_tiny_model(family, seed=0)
    covariance = tiny_covariance(model, tokenizer, params, covariance_dir)
    requests = requests or [{"prompt": PROMPT, "target_new": TARGET, "edit_id": "heappush"}]
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    checksum = weight_checksum(model)
    result = apply_edits(
        model, tokenizer, requests, method=method, hparams=params[method], covariance=covariance
    )
    return model, tokenizer, result, before, checksum


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", METHODS)
def test_edit_reaches_target_and_restores_exactly(family, method, tiny_params, covariance_dir):
    model, tokenizer = build_tiny_model(family, seed=0)
    accuracy_before = rewrite_accuracy(model, tokenizer, PROMPT, TARGET)
    model, tokenizer, result, before, checksum = _edit(family, method, tiny_params, covariance_dir)
    prompt_ids = tokenizer(PROMPT)["input_ids"]
    target_ids = target_ids_after(tokenizer, PROMPT, prompt_ids, TARGET)
    generated = _greedy(model, tokenizer, PROMPT, len(target_ids))
    # GRACE's replace_last queries a forward's last position: teacher forcing names the last
    # prompt token, the position generation queries at prefill
    with query_at(model, len(prompt_ids) - 1):
        accuracy = rewrite_accuracy(model, tokenizer, PROMPT, TARGET)
    if method == "ft":
        assert tokenizer.decode(generated).startswith(TARGET)
    else:
        assert generated[0] == target_ids[0]
    assert accuracy > accuracy_before
    stats = result.stats[0]
    assert stats["edit_id"] == "heappush" and stats["seconds"] > 0
    assert torch.isfinite(torch.tensor(stats["final_loss"]))
    assert weight_checksum(model) != checksum
    result.restore(model)
    assert weight_checksum(model) == checksum
    assert all(torch.equal(p, before[name]) for name, p in model.named_parameters())


@pytest.mark.parametrize("family", FAMILIES)
def test_rome_is_rank_one_and_touches_one_tensor(family, tiny_params, covariance_dir):
    model, _tokenizer, result, before, _checksum = _edit(
        family, "rome", tiny_params, covariance_dir
    )
    changed = [name for name, p in model.named_parameters() if not torch.equal(p, before[name])]
    assert changed == ["model.layers.0.mlp.down_proj.weight"]
    delta = model.get_parameter(changed[0]) - before[changed[0]]
    assert torch.linalg.matrix_rank(delta, rtol=1e-4) == 1
    assert result.deltas[changed[0]].left.shape[1] == 1


@pytest.mark.parametrize("family", FAMILIES)
def test_pmet_updates_down_proj_only(family, tiny_params, covariance_dir):
    model, _tokenizer, _result, before, _checksum = _edit(
        family, "pmet", tiny_params, covariance_dir
    )
    changed = sorted(
        name for name, p in model.named_parameters() if not torch.equal(p, before[name])
    )
    assert changed == [f"model.layers.{i}.mlp.down_proj.weight" for i in (0, 1)]


@pytest.mark.parametrize("family", FAMILIES)
def test_grace_keeps_locality_prompts_unchanged(family, tiny_params, covariance_dir):
    model, tokenizer = build_tiny_model(family, seed=0)
    expected_logits = [model(**tokenizer(p, return_tensors="pt")).logits for p in LOCALITY_PROMPTS]
    predictions = next_token_predictions(model, tokenizer, LOCALITY_PROMPTS)
    model, tokenizer, _result, _before, _checksum = _edit(
        family, "grace", tiny_params, covariance_dir
    )
    assert locality(model, tokenizer, LOCALITY_PROMPTS, predictions) == 1.0
    for prompt, logits in zip(LOCALITY_PROMPTS, expected_logits, strict=True):
        assert torch.equal(model(**tokenizer(prompt, return_tensors="pt")).logits, logits)


@pytest.mark.parametrize("method", ["memit", "pmet", "ft"])
def test_batch_mode_edits_all_requests_jointly(method, tiny_params, covariance_dir):
    requests = [
        {"prompt": PROMPT, "target_new": TARGET, "edit_id": "a"},
        {
            "prompt": "import bisect\n\ndef find(a, x):\n    return ",
            "target_new": "insort(a, x)",
            "edit_id": "b",
        },
    ]
    model, tokenizer = build_tiny_model("llama", seed=0)
    covariance = tiny_covariance(model, tokenizer, tiny_params, covariance_dir)
    result = apply_edits(
        model,
        tokenizer,
        requests,
        method=method,
        hparams=tiny_params[method],
        covariance=covariance,
        mode="batch",
    )
    assert [s["edit_id"] for s in result.stats] == ["a", "b"]
    if method != "ft":
        assert all(delta.left.shape[1] == 2 for delta in result.deltas.values())
