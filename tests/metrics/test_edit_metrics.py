"""Token-level edit metrics on a tiny model: rewrite/rephrase accuracy and locality."""

from __future__ import annotations

import pytest
import torch

from apiedit_kedro.metrics.edit_metrics import (
    edit_metrics,
    locality,
    next_token_predictions,
    rewrite_accuracy,
)
from apiedit_kedro.models.tiny import build_tiny_model

PROMPT = "import heapq\n\ndef push(heap, item):\n    return "


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_model("llama", seed=0)


def _greedy_text(model, tokenizer, prompt: str, tokens: int) -> str:
    ids = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(
            **ids, max_new_tokens=tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
    return tokenizer.decode(out[0, ids["input_ids"].shape[1] :])


def test_rewrite_accuracy_is_one_for_the_models_own_continuation(tiny):
    model, tokenizer = tiny
    own = _greedy_text(model, tokenizer, PROMPT, 6)
    assert rewrite_accuracy(model, tokenizer, PROMPT, own) == 1.0


def test_rewrite_accuracy_counts_tokens(tiny):
    model, tokenizer = tiny
    own = _greedy_text(model, tokenizer, PROMPT, 1)
    target = own + "zzzz"  # first token right, the rest almost surely wrong
    accuracy = rewrite_accuracy(model, tokenizer, PROMPT, target)
    assert 0.0 < accuracy < 1.0


def test_locality_is_one_on_the_unedited_model_and_checks_lengths(tiny):
    model, tokenizer = tiny
    prompts = ["def f(x):\n    return ", "for i in range("]
    before = next_token_predictions(model, tokenizer, prompts)
    assert locality(model, tokenizer, prompts, before) == 1.0
    assert locality(model, tokenizer, prompts, [(b + 1) % 700 for b in before]) == 0.0
    with pytest.raises(ValueError, match="2 prompts but 1 pre-edit predictions"):
        locality(model, tokenizer, prompts, before[:1])


def test_edit_metrics_reports_all_three(tiny):
    model, tokenizer = tiny
    request = {
        "prompt": PROMPT,
        "target_new": "heappush(heap, item)",
        "rephrase_prompts": ["import heapq\n\ndef add(h, x):\n    return "],
        "locality_prompts": ["x = "],
    }
    before = next_token_predictions(model, tokenizer, request["locality_prompts"])
    scores = edit_metrics(model, tokenizer, request, before)
    assert set(scores) == {"rewrite_acc", "rephrase_acc", "locality"}
    assert scores["locality"] == 1.0
    assert 0.0 <= scores["rewrite_acc"] <= 1.0 and 0.0 <= scores["rephrase_acc"] <= 1.0
