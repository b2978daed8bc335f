"""PMET's adaptive NLL weight, as its reference runs it: 0.1·factor at every step where every
target token is the argmax, the full factor again at every step where one is not, and a stop only
once kl_factor·KL ≤ 0.01 at an argmax step.

The tiny random model cannot reach an argmax by optimisation within a few steps, so a forward hook
on its output embedding forces the argmax on chosen steps (a large logit bonus for the target
token) and lifts it again; the optimisation loop itself is the real one.
"""

from __future__ import annotations

import yaml
from editing_helpers import CONF

from apiedit_kedro.editing.architecture import anatomy_of
from apiedit_kedro.editing.hparams import parse_hparams
from apiedit_kedro.editing.requests import parse_requests
from apiedit_kedro.editing.target import build_batch, context_prefixes, optimise_targets
from apiedit_kedro.models.tiny import build_tiny_model

FORCED_STEPS = {2, 3}  # the target is the argmax on these steps only
NLL_FACTOR = 1.0


def _run(kl_factor: float, margin: float = 1e4):
    model, tokenizer = build_tiny_model("llama")
    params = yaml.safe_load((CONF / "tiny" / "parameters_editing.yml").read_text())["pmet"]
    hparams = parse_hparams(
        "pmet", {**params["hparams"], "v_num_grad_steps": 6, "kl_factor": kl_factor}
    )
    (enc,) = parse_requests(
        [{"prompt": "def push(heap, item):\n    return", "target_new": " x", "subject": "push"}],
        tokenizer,
        4096,
    )
    assert len(enc.target_ids) == 1, "the forced argmax needs a one-token target"
    target = enc.target_ids[0]
    batch = build_batch(tokenizer, enc, context_prefixes(model, tokenizer, [[10, 5]], hparams.seed))
    calls = {"n": 0}

    def force_argmax(_module, _inputs, output):
        step = calls["n"] // 2 + 1  # two head calls per step: target logits, then KL logits
        calls["n"] += 1
        if step in FORCED_STEPS:
            output = output.clone()
            output[..., target] = output.max(dim=-1).values + margin
        return output

    handle = model.get_output_embeddings().register_forward_hook(force_argmax)
    anatomy = anatomy_of(model)
    try:
        result = optimise_targets(
            model,
            batch,
            [anatomy.o_proj(0), anatomy.mlp(0)],
            hparams,
            nll_factor=NLL_FACTOR,
            adaptive_nll=True,
        )
    finally:
        handle.remove()
    return result


def test_the_nll_weight_drops_at_argmax_steps_and_resets_when_the_argmax_is_lost():
    # A large kl_factor keeps kl_factor·KL above 0.01 on the forced steps, so the loop goes on.
    result = _run(kl_factor=10.0)
    reached = [hit for hit, _ in result.schedule]
    weights = [weight for _, weight in result.schedule]
    assert reached[:4] == [False, True, True, False]
    assert weights[:4] == [NLL_FACTOR, 0.1 * NLL_FACTOR, 0.1 * NLL_FACTOR, NLL_FACTOR]
    assert result.steps == 6


def test_the_stop_test_weighs_kl_by_kl_factor():
    # A 3-logit margin makes the target the argmax with a raw KL of about 0.11 on this model:
    # above 0.01, but kl_factor·KL = 0.0625 · 0.11 ≈ 0.007 is below it, so the loop stops at the
    # first forced step. A stop test on the raw KL would go on to the last step.
    result = _run(kl_factor=0.0625, margin=3.0)
    assert result.steps == 2
    assert result.schedule[-1] == (True, 0.1 * NLL_FACTOR)
