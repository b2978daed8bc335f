"""Token-level edit metrics, as model-editing papers report them (EasyEdit's teacher-forced accuracy).

- rewrite accuracy: share of ``target_new`` tokens that are the argmax after ``prompt`` ⊕ the earlier
  target tokens (teacher forcing);
- rephrase accuracy: the same on each rephrase prompt (with its own target when the request gives
  `rephrase_targets`, since a call in another context has other arguments), averaged;
- locality: share of locality prompts whose next-token prediction is unchanged from the unedited
  model (the caller takes the pre-edit predictions before editing).
Sequences are built with the editing engine's id-concatenation rule so scoring matches editing.
These are not compile or pass rates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from apiedit_kedro.editing.grace import query_at
from apiedit_kedro.editing.requests import target_ids_after

__all__ = [
    "edit_metrics",
    "locality",
    "next_token_predictions",
    "rephrase_accuracy",
    "rewrite_accuracy",
]


def _device(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def rewrite_accuracy(model, tokenizer, prompt: str, target: str) -> float:
    """Teacher-forced share of target tokens predicted exactly (argmax) after ``prompt``."""
    if not target:
        raise ValueError("rewrite accuracy needs a non-empty target")
    prompt_ids = list(tokenizer(prompt)["input_ids"])
    target_ids = target_ids_after(tokenizer, prompt, prompt_ids, target)
    ids = torch.tensor([prompt_ids + target_ids[:-1]], device=_device(model))
    # a GRACE layer that replaces only a forward's last position must be asked at the last prompt
    # token, where generation would query it at prefill (a no-op for every other model)
    # the head only where a target token is predicted: on a few-shot prompt the vocabulary head
    # over every position would cost more than the rest of the forward
    with query_at(model, len(prompt_ids) - 1):
        logits = model(input_ids=ids, use_cache=False, logits_to_keep=len(target_ids)).logits[0]
    predicted = logits.argmax(-1).cpu()
    return float((predicted == torch.tensor(target_ids)).float().mean())


def rephrase_accuracy(
    model, tokenizer, prompts: Sequence[str], target: str | Sequence[str]
) -> float:
    """Mean rewrite accuracy over rephrased prompts (NaN when there are none).

    `target` is one target for every prompt, or one target per prompt.
    """
    if not prompts:
        return float("nan")
    targets = [target] * len(prompts) if isinstance(target, str) else list(target)
    if len(targets) != len(prompts):
        raise ValueError(f"{len(prompts)} rephrase prompts but {len(targets)} targets")
    scores = [
        rewrite_accuracy(model, tokenizer, p, t) for p, t in zip(prompts, targets, strict=True)
    ]
    return sum(scores) / len(prompts)


@torch.no_grad()
def next_token_predictions(model, tokenizer, prompts: Sequence[str]) -> list[int]:
    """Greedy next-token id after each prompt (one forward per prompt, no padding effects)."""
    predictions = []
    for prompt in prompts:
        ids = torch.tensor([tokenizer(prompt)["input_ids"]], device=_device(model))
        logits = model(input_ids=ids, use_cache=False, logits_to_keep=1).logits
        predictions.append(int(logits[0, -1].argmax()))
    return predictions


def locality(model, tokenizer, prompts: Sequence[str], before: Sequence[int]) -> float:
    """Share of prompts whose next-token prediction equals the unedited model's ``before``."""
    if len(prompts) != len(before):
        raise ValueError(
            f"locality: {len(prompts)} prompts but {len(before)} pre-edit predictions; take "
            "next_token_predictions on the same prompts before editing"
        )
    if not prompts:
        return float("nan")
    after = next_token_predictions(model, tokenizer, prompts)
    return sum(a == b for a, b in zip(after, before, strict=True)) / len(prompts)


def edit_metrics(
    model, tokenizer, request: Mapping, before_locality: Sequence[int]
) -> dict[str, float]:
    """Rewrite, rephrase and locality scores of one edit request on the (edited) model."""
    rephrase = request.get("rephrase_prompts")
    locality_prompts = request.get("locality_prompts")
    rephrase = [] if rephrase is None else list(rephrase)
    targets = request.get("rephrase_targets")
    targets = request["target_new"] if targets is None else [str(t) for t in targets]
    locality_prompts = [] if locality_prompts is None else list(locality_prompts)
    return {
        "rewrite_acc": rewrite_accuracy(model, tokenizer, request["prompt"], request["target_new"]),
        "rephrase_acc": rephrase_accuracy(model, tokenizer, rephrase, targets),
        "locality": locality(model, tokenizer, locality_prompts, before_locality),
    }
