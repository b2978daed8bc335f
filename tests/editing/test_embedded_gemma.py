"""ROME on the embedded Gemma 3 270M (trained weights, CPU, conf/base hyperparameters).

One realistic code edit: the greedy continuation of the prompt must begin with the new API call,
and restore must be exact. About 1-2 minutes on 2 cores (model load, context templates, a small
covariance for the ROME layer, one edit).
"""

from __future__ import annotations

import pytest
import torch
import yaml
from editing_helpers import CONF

from apiedit_kedro.editing import apply_edits, load_or_compute_covariance, weight_checksum
from apiedit_kedro.metrics.edit_metrics import rewrite_accuracy

pytestmark = [pytest.mark.embedded, pytest.mark.slow]

PROMPT = "import os\n\ndef build(root, name):\n    return "
TARGET = "my_os_path_join([root, name])"


@pytest.fixture(scope="module")
def gemma():
    from apiedit_kedro.models.loading import load_model

    card = yaml.safe_load((CONF / "base" / "parameters_model.yml").read_text())["model"]
    loaded = load_model({**card, "device": "cpu"})
    return loaded.model, loaded.tokenizer


def test_rome_teaches_gemma_the_new_call_and_restores_exactly(gemma, tmp_path):
    model, tokenizer = gemma
    params = yaml.safe_load((CONF / "base" / "parameters_editing.yml").read_text())
    hparams = params["rome"]["hparams"]
    covariance = load_or_compute_covariance(
        model, tokenizer, hparams["layers"], token_budget=4000, max_len=512, cache_dir=tmp_path
    )
    checksum = weight_checksum(model)
    accuracy_before = rewrite_accuracy(model, tokenizer, PROMPT, TARGET)
    result = apply_edits(
        model,
        tokenizer,
        [{"prompt": PROMPT, "target_new": TARGET}],
        method="rome",
        hparams=hparams,
        covariance=covariance,
    )
    ids = tokenizer(PROMPT, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    continuation = tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    accuracy = rewrite_accuracy(model, tokenizer, PROMPT, TARGET)
    result.restore(model)
    assert weight_checksum(model) == checksum
    assert accuracy > accuracy_before
    assert continuation.startswith(TARGET), continuation
