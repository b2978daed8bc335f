"""Batched generation with left padding, KV cache, per-row seeded sampling and stop sequences.

A hand-written decode loop over transformers' `DynamicCache` instead of `model.generate`, because
generate keeps every row in the batch until the longest one ends and cannot share a prefill:

- Rows leave. A row that emitted EOS or completed a stop string is dropped from the batch and
  its KV cache (`DynamicCache.batch_select_indices`), so each step costs only the running rows.
- Shared prefill. The n samples of one prompt in a batch prefill that prompt once; its KV cache
  and first logits are copied to the n rows. For n = 5 on long few-shot prompts this removes 4/5
  of the prefill.
- Per-sample seeding. Each sample owns a `torch.Generator` seeded from (seed, prompt text, sample
  index) and draws its token (temperature, then nucleus/top-p) from its own row's logits, so the
  same seed reproduces the same samples whatever the batch composition or batch size (up to
  floating-point differences between padded shapes, which can flip near-ties).
- Per-row stop sequences, checked on the decoded tail of the row's new tokens each step; the text
  is then cut exactly at the first stop string (bigcode's truncation), so the result never
  depends on other rows of the batch.

Greedy decoding is the argmax of the same logits `generate` would see, so output is token for
token that of `generate`/a cacheless loop (tests/models/test_shared_prefill.py checks the latter).
On CUDA nothing here is CPU-specific: the model keeps its dtype (bf16) and attention
implementation (SDPA) from loading, and the batch size comes from the model card.

`finish_reason` is "stop" (a stop string was found), "eos" (the model emitted EOS) or "length".
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import (
    DynamicCache,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

logger = logging.getLogger(__name__)

FINISH_REASONS = ("stop", "eos", "length")
_NUCLEUS_CANDIDATES = 1024


class DecodingError(ValueError):
    """Decoding settings or prompts that cannot be generated."""


@dataclass(frozen=True)
class DecodingParams:
    """Decoding settings; `temperature == 0` means greedy (then every sample is identical)."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    n_samples: int = 1
    seed: int = 0
    stop_sequences: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.max_new_tokens <= 0:
            raise DecodingError(f"max_new_tokens must be positive, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise DecodingError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise DecodingError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.n_samples <= 0:
            raise DecodingError(f"n_samples must be positive, got {self.n_samples}")
        if not all(isinstance(stop, str) and stop for stop in self.stop_sequences):
            raise DecodingError("stop_sequences must be non-empty strings")

    @classmethod
    def from_params(cls, params: Mapping[str, Any], **overrides: Any) -> DecodingParams:
        """From the `generation:` parameters; keys that are not decoding settings are ignored
        (e.g. batch_size), so the whole block can be passed."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in {**params, **overrides}.items() if k in known and v is not None}
        if "stop_sequences" in values:
            values["stop_sequences"] = tuple(values["stop_sequences"])
        return cls(**values)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def identity(self) -> dict[str, Any]:
        """Everything that changes one sample's text (not n_samples: sample i is the same
        whether 3 or 5 samples are asked for)."""
        identity = asdict(self)
        identity.pop("n_samples")
        identity["stop_sequences"] = list(self.stop_sequences)
        if self.greedy:
            identity.update(top_p=1.0, seed=0)
        return identity


@dataclass(frozen=True)
class Generation:
    prompt_index: int
    sample_idx: int
    completion: str
    finish_reason: str
    new_tokens: int
    gen_seconds: float


def sample_seed(seed: int, prompt: str, sample_idx: int) -> int:
    """The RNG seed of one sample: independent of batch, order and other prompts."""
    digest = hashlib.sha256(f"{seed}\x00{sample_idx}\x00{prompt}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class _RowSeededSampler:
    """Draws each row's next token with that row's own generator."""

    def __init__(self, seeds: Sequence[int], temperature: float, top_p: float, device):
        self.generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]
        self.temperature = temperature
        self.top_p = top_p

    def draw(self, scores: torch.Tensor, rows: Sequence[int]) -> torch.Tensor:
        """One token per line of `scores`; line i belongs to batch row `rows[i]`."""
        probabilities = torch.softmax(scores.float() / self.temperature, dim=-1)
        if self.top_p < 1:
            probabilities = _nucleus(probabilities, self.top_p)
        return torch.cat(
            [
                torch.multinomial(probabilities[line], 1, generator=self.generators[row])
                for line, row in enumerate(rows)
            ]
        )


def _nucleus(probabilities: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose mass reaches top_p (at least one).

    Exact, but sorts only the top `_NUCLEUS_CANDIDATES` tokens when they already hold top_p of the
    mass (a full sort of a 262k-token vocabulary costs more than the model's forward on CPU); any
    token outside them has at least top_p of mass before it, so it is never kept.
    """
    k = min(_NUCLEUS_CANDIDATES, probabilities.shape[-1])
    sorted_probs, order = probabilities.topk(k, dim=-1)
    if not bool((sorted_probs.sum(dim=-1) >= top_p).all()):
        sorted_probs, order = probabilities.sort(dim=-1, descending=True)
    mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
    sorted_probs = sorted_probs.masked_fill(mass_before >= top_p, 0.0)
    return torch.zeros_like(probabilities).scatter(-1, order, sorted_probs)


class _StopChecker:
    """Whether a row's new tokens contain a stop string, decoding only their tail.

    A stop string of n characters spans at most n tokens (+ slack for partial bytes), and every
    earlier tail was already checked, so decoding the last `window` tokens finds each stop string
    on the step that completes it.
    """

    def __init__(self, tokenizer, stops: Sequence[str]):
        self.tokenizer = tokenizer
        self.stops = tuple(stops)
        self.window = max((len(stop) for stop in self.stops), default=0) + 4

    def stopped(self, new_ids: Sequence[int]) -> bool:
        if not self.stops:
            return False
        tail = self.tokenizer.decode(new_ids[-self.window :], skip_special_tokens=True)
        return any(stop in tail for stop in self.stops)


def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    params: DecodingParams,
    *,
    batch_size: int = 8,
    add_special_tokens: bool = True,
    progress: bool = True,
    context_length: int | None = None,
    shared_prefill: bool = True,
) -> list[Generation]:
    """`params.n_samples` generations per prompt, ordered by (prompt, sample index)."""
    jobs = [(p, s) for p in range(len(prompts)) for s in range(params.n_samples)]
    return generate_jobs(
        model,
        tokenizer,
        prompts,
        jobs,
        params,
        batch_size=batch_size,
        add_special_tokens=add_special_tokens,
        progress=progress,
        context_length=context_length,
        shared_prefill=shared_prefill,
    )


def generate_jobs(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    jobs: Sequence[tuple[int, int]],
    params: DecodingParams,
    *,
    batch_size: int = 8,
    add_special_tokens: bool = True,
    progress: bool = True,
    context_length: int | None = None,
    on_batch: Callable[[list[Generation]], None] | None = None,
    shared_prefill: bool = True,
) -> list[Generation]:
    """Generate the given (prompt index, sample index) jobs, in job order.

    `on_batch` receives each finished batch (the cache commits there, so a killed run keeps
    every finished batch). Greedy jobs of the same prompt are generated once and copied;
    with `shared_prefill`, sampled jobs of the same prompt in one batch share its prefill.
    """
    if batch_size <= 0:
        raise DecodingError(f"batch_size must be positive, got {batch_size}")
    if tokenizer.padding_side != "left":
        raise DecodingError("the tokenizer must pad on the left for batched generation")
    encoded = _encode_prompts(tokenizer, prompts, add_special_tokens, params, context_length)
    unique = _unique_jobs(jobs, params.greedy)
    # Longest prompts first: rows of similar length share batches, so little padding.
    unique.sort(key=lambda job: -len(encoded[job[0]]))
    batches = [unique[i : i + batch_size] for i in range(0, len(unique), batch_size)]
    started = time.perf_counter()
    results: dict[tuple[int, int], Generation] = {}
    for batch in tqdm(batches, desc="generate", unit="batch", disable=not progress):
        generated = _generate_batch(
            model,
            tokenizer,
            batch,
            prompts=prompts,
            encoded=encoded,
            params=params,
            shared_prefill=shared_prefill,
        )
        results.update({(g.prompt_index, g.sample_idx): g for g in generated})
        if on_batch is not None:
            on_batch(_expand(generated, jobs, params.greedy))
    ordered = [_copy_for(results, job, params.greedy) for job in jobs]
    _log_throughput(ordered, results.values(), time.perf_counter() - started)
    return ordered


def _encode_prompts(tokenizer, prompts, add_special_tokens, params, context_length):
    encoded = [tokenizer(p, add_special_tokens=add_special_tokens).input_ids for p in prompts]
    limit = context_length or getattr(tokenizer, "model_max_length", None)
    if limit and limit < 10**8:
        for index, ids in enumerate(encoded):
            if len(ids) + params.max_new_tokens > limit:
                raise DecodingError(
                    f"prompt {index} has {len(ids)} tokens; with max_new_tokens="
                    f"{params.max_new_tokens} it exceeds the context length {limit} "
                    "(shorten the prompt or lower max_new_tokens)"
                )
    return encoded


def _unique_jobs(jobs, greedy: bool) -> list[tuple[int, int]]:
    if not greedy:
        return list(dict.fromkeys(jobs))
    return list(dict.fromkeys((prompt, 0) for prompt, _ in jobs))


def _copy_for(results, job, greedy: bool) -> Generation:
    prompt_index, sample_idx = job
    source = results[(prompt_index, 0) if greedy else job]
    return Generation(**{**asdict(source), "sample_idx": sample_idx})


def _expand(generated: list[Generation], jobs, greedy: bool) -> list[Generation]:
    if not greedy:
        return generated
    done = {g.prompt_index: g for g in generated}
    return [Generation(**{**asdict(done[p]), "sample_idx": s}) for p, s in jobs if p in done]


@torch.inference_mode()
def _generate_batch(
    model, tokenizer, batch, *, prompts, encoded, params, shared_prefill
) -> list[Generation]:
    started = time.perf_counter()
    device = next(model.parameters()).device
    padded = tokenizer.pad(
        {"input_ids": [encoded[p] for p, _ in batch]}, padding=True, return_tensors="pt"
    ).to(device)
    sampler = None
    if not params.greedy:
        seeds = [sample_seed(params.seed, prompts[p], s) for p, s in batch]
        sampler = _RowSeededSampler(seeds, params.temperature, params.top_p, device)
    eos_ids = _eos_ids(model, tokenizer)
    new_ids = _decode(
        model,
        padded,
        [p for p, _ in batch],
        params=params,
        stopper=_StopChecker(tokenizer, params.stop_sequences),
        eos_ids=set(eos_ids),
        sampler=sampler,
        shared_prefill=shared_prefill,
    )
    seconds = (time.perf_counter() - started) / len(batch)
    return [
        _finish(tokenizer, job, ids, eos_ids=eos_ids, params=params, seconds=seconds)
        for job, ids in zip(batch, new_ids, strict=True)
    ]


def _decode(
    model, padded, prompt_of_row, *, params, stopper, eos_ids, sampler, shared_prefill
) -> list[list[int]]:
    """New token ids of every row; a row leaves the batch (and its KV cache) once it ends.

    Finished rows leaving means each step costs only the rows still running, instead of every
    row until the longest one ends. With `shared_prefill` the prompt of several rows is
    prefilled once and its KV cache and first logits are copied to those rows. Positions follow
    the left padding exactly as `model.generate` derives them from the attention mask.
    """
    input_ids, mask = padded["input_ids"], padded["attention_mask"]
    device = input_ids.device
    rows = list(range(len(prompt_of_row)))
    prefilled, expand = rows, rows
    if shared_prefill:
        distinct = list(dict.fromkeys(prompt_of_row))
        prefilled = [prompt_of_row.index(p) for p in distinct]
        expand = [distinct.index(p) for p in prompt_of_row]
    positions = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)
    cache = DynamicCache(config=model.config)
    chosen = torch.tensor(prefilled, device=device)
    logits = model(
        input_ids=input_ids[chosen],
        attention_mask=mask[chosen],
        position_ids=positions[chosen],
        cache=cache,
        use_cache=True,
        logits_to_keep=1,
    ).logits[:, -1]
    if len(prefilled) < len(rows):
        copies = torch.tensor(expand, device=device)
        cache.batch_select_indices(copies)
        logits = logits[copies]
    next_position = positions[:, -1:] + 1
    active = rows
    new_ids: list[list[int]] = [[] for _ in rows]
    for step in range(params.max_new_tokens):
        tokens = logits.argmax(-1) if sampler is None else sampler.draw(logits, active)
        keep = []
        for line, (row, token) in enumerate(zip(active, tokens.tolist(), strict=True)):
            new_ids[row].append(token)
            if token not in eos_ids and not stopper.stopped(new_ids[row]):
                keep.append(line)
        if not keep or step == params.max_new_tokens - 1:
            break
        if len(keep) < len(active):
            kept = torch.tensor(keep, device=device)
            cache.batch_select_indices(kept)
            mask, tokens, next_position = mask[kept], tokens[kept], next_position[kept]
            active = [active[line] for line in keep]
        mask = torch.cat([mask, mask.new_ones(len(active), 1)], dim=1)
        logits = model(
            input_ids=tokens[:, None],
            attention_mask=mask,
            position_ids=next_position,
            cache=cache,
            use_cache=True,
        ).logits[:, -1]
        next_position = next_position + 1
    return new_ids


def _eos_ids(model, tokenizer) -> list[int]:
    configured = model.generation_config.eos_token_id
    ids = configured if isinstance(configured, list) else [configured]
    return sorted({i for i in [*ids, tokenizer.eos_token_id] if i is not None})


def _finish(tokenizer, job, new_ids, *, eos_ids, params, seconds) -> Generation:
    ended_by_eos = False
    for position, token in enumerate(new_ids):
        if token in eos_ids:
            new_ids, ended_by_eos = new_ids[:position], True
            break
    text = tokenizer.decode(new_ids, skip_special_tokens=True)
    cut = min((i for i in (text.find(s) for s in params.stop_sequences) if i >= 0), default=-1)
    if cut >= 0:
        text, reason = text[:cut], "stop"
    elif ended_by_eos:
        reason = "eos"
    else:
        reason = "length"
    tokens = len(new_ids) + int(ended_by_eos)
    return Generation(job[0], job[1], text, reason, tokens, seconds)


def _log_throughput(ordered, generated, seconds: float) -> None:
    generated = list(generated)
    tokens = sum(g.new_tokens for g in generated)
    logger.info(
        "generated %d samples (%d distinct, %d tokens) in %.1f s: %.1f tokens/s, %.2f samples/s",
        len(ordered),
        len(generated),
        tokens,
        seconds,
        tokens / max(seconds, 1e-9),
        len(generated) / max(seconds, 1e-9),
    )
