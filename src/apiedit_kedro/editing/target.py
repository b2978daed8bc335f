"""Shared machinery of ROME, MEMIT and PMET: context templates, keys and target-vector optimisation.

Hand-written after the ROME/MEMIT/PMET papers: a free vector δ is added to a module's output
at the key position of every rewriting sequence (context prefix ⊕ prompt ⊕ target[:-1]) and of a KL
sequence, and optimised with Adam against the target tokens' NLL, a KL drift term and a norm decay.
Log-probabilities are computed only at the target positions, which is where the CPU time goes with
Gemma's 262k-token vocabulary.
"""

from __future__ import annotations

import logging
from contextlib import ExitStack
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from apiedit_kedro.editing.architecture import ModelAnatomy
from apiedit_kedro.editing.fingerprint import model_fingerprint
from apiedit_kedro.editing.hooks import add_to_output, capture_inputs
from apiedit_kedro.editing.requests import EncodedRequest, strip_special_prefix

__all__ = [
    "Batch",
    "TargetResult",
    "build_batch",
    "context_prefixes",
    "mean_keys",
    "optimise_targets",
    "target_nll",
]

logger = logging.getLogger(__name__)

_TEMPLATE_SEEDS = ("The", "Therefore", "Because", "I", "You")
_EARLY_STOP_LOSS = 5e-2
_template_cache: dict[tuple, list[list[int]]] = {}


@torch.no_grad()
def context_prefixes(
    model: nn.Module, tokenizer, length_params: list[list[int]], seed: int
) -> list[list[int]]:
    """Token ids of sampled context prefixes, the bare (empty) prefix first; cached per model.

    Prefixes are sampled once from the unedited model (top-k 5) so sequential edits reuse them; braces
    are replaced by spaces and ". " appended, as in MEMIT.
    """
    key = (model_fingerprint(model), repr(length_params), seed)
    if key in _template_cache:
        return _template_cache[key]
    prefixes: list[list[int]] = [[]]
    device = next(model.parameters()).device
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for length, count in length_params:
            for index in range(count):
                start = tokenizer(
                    _TEMPLATE_SEEDS[index % len(_TEMPLATE_SEEDS)], return_tensors="pt"
                )
                generated = model.generate(
                    input_ids=start["input_ids"].to(device),
                    attention_mask=start["attention_mask"].to(device),
                    do_sample=True,
                    top_k=5,
                    max_new_tokens=length,
                    min_new_tokens=length,
                    pad_token_id=tokenizer.eos_token_id
                    if tokenizer.pad_token_id is None
                    else tokenizer.pad_token_id,
                )
                text = tokenizer.decode(generated[0], skip_special_tokens=True)
                text = text.replace("{", " ").replace("}", " ") + ". "
                prefixes.append(list(tokenizer(text, add_special_tokens=True)["input_ids"]))
    _template_cache[key] = prefixes
    return prefixes


@dataclass
class Batch:
    """Right-padded sequences with the key position of each row and its target positions."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    key_positions: torch.Tensor
    target_rows: torch.Tensor
    target_positions: torch.Tensor
    target_ids: torch.Tensor
    n_rewrite: int


def build_batch(
    tokenizer,
    enc: EncodedRequest,
    prefixes: list[list[int]],
    *,
    with_targets: bool = True,
    with_kl: bool = True,
) -> Batch:
    """Rows: prefix ⊕ prompt ⊕ target[:-1] for each prefix (bare first), then the KL sequence."""
    rows: list[list[int]] = []
    keys: list[int] = []
    target_rows, target_positions, target_ids = [], [], []
    for prefix in prefixes:
        prompt = strip_special_prefix(tokenizer, enc.prompt_ids) if prefix else enc.prompt_ids
        shift = len(enc.prompt_ids) - len(prompt)
        context = prefix + prompt
        keys.append(len(prefix) + enc.key_index - shift)
        if with_targets:
            for j, token in enumerate(enc.target_ids):
                target_rows.append(len(rows))
                target_positions.append(len(context) - 1 + j)
                target_ids.append(token)
            rows.append(context + enc.target_ids[:-1])
        else:
            rows.append(context)
    n_rewrite = len(rows)
    if with_kl:
        rows.append(enc.kl_ids)
        keys.append(enc.kl_key_index)
    width = max(len(row) for row in rows)
    input_ids = torch.zeros(len(rows), width, dtype=torch.long)
    attention = torch.zeros(len(rows), width, dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = torch.tensor(row)
        attention[i, : len(row)] = 1
    return Batch(
        input_ids=input_ids,
        attention_mask=attention,
        key_positions=torch.tensor(keys),
        target_rows=torch.tensor(target_rows, dtype=torch.long),
        target_positions=torch.tensor(target_positions, dtype=torch.long),
        target_ids=torch.tensor(target_ids, dtype=torch.long),
        n_rewrite=n_rewrite,
    )


def _to(batch: Batch, device) -> dict:
    return {
        "input_ids": batch.input_ids.to(device),
        "attention_mask": batch.attention_mask.to(device),
    }


def head_logits(model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """LM-head logits (with Gemma's final soft-capping) of already-normalised hidden states."""
    logits = model.get_output_embeddings()(hidden).float()
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def target_nll(model, enc: EncodedRequest) -> torch.Tensor:
    """Mean teacher-forced NLL of the target tokens after the prompt (prompt positions masked)."""
    device = next(model.parameters()).device
    ids = torch.tensor([enc.full_ids[:-1]], device=device)
    hidden = model.model(input_ids=ids, use_cache=False).last_hidden_state[0]
    positions = torch.arange(len(enc.prompt_ids) - 1, len(enc.full_ids) - 1, device=device)
    logits = head_logits(model, hidden[positions])
    return F.cross_entropy(logits, torch.tensor(enc.target_ids, device=device))


@torch.no_grad()
def mean_keys(
    model: nn.Module, anatomy: ModelAnatomy, layers: list[int], batch: Batch
) -> torch.Tensor:
    """down_proj inputs at each row's key position: returns [len(layers), rows, d_ff] in fp32."""
    device = next(model.parameters()).device
    modules = [anatomy.down_proj(layer) for layer in layers]
    with capture_inputs(modules) as captured:
        model.model(**_to(batch, device), use_cache=False)
    rows = torch.arange(len(batch.key_positions))
    return torch.stack(
        [keys[rows, batch.key_positions.to(keys.device)].float().cpu() for keys in captured]
    )


@dataclass
class TargetResult:
    """Optimised deltas per site, the unperturbed site outputs h0 at the bare prompt, the loss."""

    deltas: list[torch.Tensor]
    initial: list[torch.Tensor]
    loss: float
    steps: int
    # Per forward: (every target token was the argmax, the NLL weight used). Only PMET's
    # adaptive rule makes the weight depend on the first; the trace lets tests check the rule.
    schedule: list[tuple[bool, float]] = field(default_factory=list)


def optimise_targets(
    model: nn.Module,
    batch: Batch,
    sites: list[nn.Module],
    hparams,
    *,
    nll_factor: float = 1.0,
    adaptive_nll: bool = False,
) -> TargetResult:
    """Optimise one δ per site (added at the key positions) so the target tokens become likely.

    ``adaptive_nll`` is PMET's rule, as its reference implementation runs it: at every step where
    every target token is the argmax the NLL weight is 0.1·factor, and at every step where one is
    not it is back at the full factor (the drop is no one-way switch); at an argmax step the loop
    stops once the weighted KL term, kl_factor·KL, is ≤ 0.01.
    """
    device = next(model.parameters()).device
    inputs = _to(batch, device)
    rows = torch.arange(len(batch.key_positions), device=device)
    key_positions = batch.key_positions.to(device)
    target_rows = batch.target_rows.to(device)
    target_positions = batch.target_positions.to(device)
    target_ids = batch.target_ids.to(device)
    widths = [
        site.out_features if isinstance(site, nn.Linear) else model.config.hidden_size
        for site in sites
    ]
    deltas = [
        torch.zeros(width, device=device, dtype=torch.float32, requires_grad=True)
        for width in widths
    ]
    optimiser = torch.optim.Adam(deltas, lr=hparams.v_lr)
    kl_row = len(batch.key_positions) - 1
    initial: list[torch.Tensor] = []
    reference_kl: torch.Tensor | None = None
    schedule: list[tuple[bool, float]] = []
    loss_value, step = float("nan"), 0
    targets_per_row = torch.bincount(target_rows, minlength=batch.n_rewrite).float()
    frozen = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)
    try:
        for step in range(1, hparams.v_num_grad_steps + 1):
            hidden, seen = _forward_with_deltas(model, inputs, sites, (rows, key_positions), deltas)
            if not initial:
                initial = [s[0, key_positions[0]].float().detach() for s in seen]
            logits = head_logits(model, hidden[target_rows, target_positions])
            log_probs = torch.log_softmax(logits, dim=-1)
            token_nll = -log_probs.gather(1, target_ids[:, None]).squeeze(1)
            per_row = torch.zeros(batch.n_rewrite, device=device).index_add(
                0, target_rows, token_nll
            )
            nll = (per_row / targets_per_row).mean()
            kl_log_probs = torch.log_softmax(
                head_logits(model, hidden[kl_row, key_positions[kl_row]][None]), dim=-1
            )
            if reference_kl is None:
                reference_kl = kl_log_probs.detach()
            kl = F.kl_div(reference_kl, kl_log_probs, log_target=True, reduction="batchmean")
            decay = sum(d.norm() / h.norm() ** 2 for d, h in zip(deltas, initial, strict=True))
            argmax_reached = bool((logits.argmax(-1) == target_ids).all())
            alpha = 0.1 * nll_factor if adaptive_nll and argmax_reached else nll_factor
            schedule.append((argmax_reached, alpha))
            loss = alpha * nll + hparams.kl_factor * kl + hparams.v_weight_decay * decay
            if adaptive_nll and argmax_reached and hparams.kl_factor * kl.item() <= 0.01:
                loss_value = float(loss.detach())
                break
            loss_value = float(loss.detach())
            logger.debug(
                "step %d: loss %.4f (nll %.4f, kl %.4f)", step, loss_value, nll.item(), kl.item()
            )
            if loss_value < _EARLY_STOP_LOSS or step == hparams.v_num_grad_steps:
                break
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            with torch.no_grad():
                for delta, h0 in zip(deltas, initial, strict=True):
                    limit = hparams.clamp_norm_factor * h0.norm()
                    if delta.norm() > limit:
                        delta.mul_(limit / delta.norm())
    finally:
        for parameter, flag in zip(model.parameters(), frozen, strict=True):
            parameter.requires_grad_(flag)
    logger.debug("target optimisation: loss %.4f after %d forwards", loss_value, step)
    return TargetResult([d.detach() for d in deltas], initial, loss_value, step, schedule)


def _forward_with_deltas(model, inputs, sites, where, deltas):
    rows, key_positions = where
    with ExitStack() as stack:
        seen = [
            stack.enter_context(add_to_output(site, rows, key_positions, delta))
            for site, delta in zip(sites, deltas, strict=True)
        ]
        hidden = model.model(**inputs, use_cache=False).last_hidden_state
    return hidden, [slot[0] for slot in seen]
