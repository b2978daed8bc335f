"""Batched generation with continuous batching, shared prefill, per-row seeds and stop sequences.

A hand-written decode loop over transformers' `DynamicCache` instead of `model.generate`, because
generate keeps every row in the batch until the longest one ends, cannot take new prompts into a
running batch and cannot share a prefill; transformers' own continuous-batching engine draws all
rows' tokens from the global RNG in one `multinomial` call, so a sample would depend on which
other rows ran beside it:

- Continuous batching. At most `batch_size` rows decode together. A row that emitted EOS, completed
  a stop string or reached `max_new_tokens` leaves the batch and its KV cache at once; queued jobs
  are prefilled and join the running rows (their caches left-padded to a common width) as soon as
  a quarter of the batch is free. Columns that have become padding in every row are dropped, so a
  long-running batch never attends over the prompts of rows that already left.
- Shared prefill. Jobs admitted together prefill each distinct prompt once; the n samples of a
  prompt copy its KV cache and first logits. (Prefilling the common few-shot prefix of different
  prompts once and their own tokens on a copy was tried and measured slower on CPU than one
  left-padded prefill of the whole prompts, so it is not done.)
- Exactness. Only left padding is ever added, so two real tokens are as far apart in cache columns
  as in positions, and sliding-window layers (Gemma 3) see exactly their window; padding keys are
  masked out. Greedy decoding is therefore the argmax of the logits of an unpadded, uncached
  forward (tests/models/test_shared_prefill.py compares with such a loop), up to floating-point
  differences between GEMM shapes, which could flip an exact near-tie.
- Per-sample seeding. Each sample owns a `torch.Generator` seeded from (seed, prompt text, sample
  index) and draws its token (temperature, then nucleus/top-p) from its own row's logits, so the
  same seed reproduces the same samples whatever the batch composition, batch size or admission
  time. The draw runs over the row's nucleus, not the whole vocabulary.
- A cache that grows in place: each layer's keys and values are views of a buffer with spare
  columns, so a step writes its column instead of `DynamicCache`'s concatenation copying the
  whole cache every step (same values, same attention inputs).
- Per-row stop sequences, checked on the decoded tail of the row's new tokens each step; the text
  is then cut exactly at the first stop string (bigcode's truncation), so the result never
  depends on other rows of the batch.

On CUDA nothing here is CPU-specific: the model keeps its dtype (bf16) and attention
implementation (SDPA) from loading, and the batch size comes from the model card.

`finish_reason` is "stop" (a stop string was found), "eos" (the model emitted EOS) or "length".
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import (
    DynamicCache,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.cache_utils import Cache, DynamicLayer

logger = logging.getLogger(__name__)

FINISH_REASONS = ("stop", "eos", "length")
_NUCLEUS_CANDIDATES = 1024
# How a sampled token is drawn from its row's generator. Another draw gives other samples for the
# same seed, so it is part of a sampled decoding's identity (the generation cache's key): samples
# drawn by the earlier multinomial over the whole vocabulary are never mixed with these.
SAMPLER = "multinomial over the nucleus in vocabulary order"
# Spare cache columns allocated past a row's last token: a step writes into them instead of
# concatenating (copying) the whole cache, so the cache is copied once per this many steps.
_CACHE_ROOM = 64


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
        else:
            identity["sampler"] = SAMPLER
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


def _nucleus(probabilities: torch.Tensor, top_p: float) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per row, the smallest set of most likely tokens whose mass reaches top_p (at least one),
    as (token ids, probabilities) in ascending token id.

    Token-id order, not rank order, is what the draw sees: two nearly equal probabilities can
    swap rank between batch sizes (the batched forward rounds differently in the last bits), and
    in rank order the swap would hand each token the other's random number, changing the sample.

    Exact, but sorts only the row's top `_NUCLEUS_CANDIDATES` tokens when they already hold top_p
    of its mass (a full sort of a 262k-token vocabulary costs more than the model's forward on
    CPU); any token outside them has at least top_p of mass before it, so it is never kept. The
    choice is made per row, so a row's nucleus never depends on the other rows of the batch.
    """
    k = min(_NUCLEUS_CANDIDATES, probabilities.shape[-1])
    top_probs, top_ids = probabilities.topk(k, dim=-1)
    enough = (top_probs.sum(dim=-1) >= top_p).tolist()
    nuclei = []
    for line, candidates_suffice in enumerate(enough):
        if candidates_suffice:
            probs, ids = top_probs[line], top_ids[line]
        else:
            probs, ids = probabilities[line].sort(descending=True)
        mass_before = probs.cumsum(dim=-1) - probs
        # mass_before never decreases, so the kept tokens are a prefix; the first is always kept
        kept = int((mass_before < top_p).sum())
        ids, by_id = ids[:kept].sort()
        nuclei.append((ids, probs[:kept][by_id]))
    return nuclei


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
    prompt_stops: Sequence[Sequence[str]] | None = None,
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
        prompt_stops=prompt_stops,
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
    prompt_stops: Sequence[Sequence[str]] | None = None,
) -> list[Generation]:
    """Generate the given (prompt index, sample index) jobs, in job order.

    `prompt_stops` gives each prompt its own stop sequences instead of `params.stop_sequences`,
    so prompts of different formats (HumanEval and MBPP) decode in one batch.

    At most `batch_size` rows decode together; finished rows leave and queued jobs take their
    place. `on_batch` receives the generations finished at each step (the cache commits there,
    so a killed run keeps every finished sample). Greedy jobs of the same prompt are generated
    once and copied; with `shared_prefill`, the jobs admitted together prefill each distinct
    prompt once.
    """
    if batch_size <= 0:
        raise DecodingError(f"batch_size must be positive, got {batch_size}")
    if tokenizer.padding_side != "left":
        raise DecodingError("the tokenizer must pad on the left for batched generation")
    encoded = _encode_prompts(tokenizer, prompts, add_special_tokens, params, context_length)
    if prompt_stops is None:
        prompt_stops = [params.stop_sequences] * len(prompts)
    elif len(prompt_stops) != len(prompts):
        raise DecodingError(
            f"prompt_stops has {len(prompt_stops)} entries for {len(prompts)} prompts"
        )
    for stops in set(map(tuple, prompt_stops)):
        replace(params, stop_sequences=stops)  # validates them as DecodingParams does
    unique = _unique_jobs(jobs, params.greedy)
    # Longest prompts first: rows admitted together have similar lengths, so little padding.
    unique.sort(key=lambda job: -len(encoded[job[0]]))
    started = time.perf_counter()
    results: dict[tuple[int, int], Generation] = {}
    scheduler = _Scheduler(
        model,
        tokenizer,
        prompts=prompts,
        encoded=encoded,
        params=params,
        batch_size=batch_size,
        shared_prefill=shared_prefill,
        prompt_stops=prompt_stops,
    )
    with tqdm(total=len(unique), desc="generate", unit="sample", disable=not progress) as bar:
        for finished in scheduler.run(unique):
            results.update({(g.prompt_index, g.sample_idx): g for g in finished})
            bar.update(len(finished))
            if on_batch is not None:
                on_batch(_expand(finished, jobs, params.greedy))
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


@dataclass
class _Row:
    """One job in the running batch: its new tokens, RNG and its share of the wall time."""

    job: tuple[int, int]
    generator: torch.Generator | None
    new_ids: list[int] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class _Batch:
    """The running rows and their state, one line per row in every tensor.

    All rows are left-aligned to the same right edge: row i's tokens fill the last columns of
    `mask[i]`, its padding the first ones. Only left padding is ever added, so the distance
    between two real tokens in cache columns equals their distance in positions, which keeps
    sliding-window attention (Gemma 3) exact.
    """

    rows: list[_Row]
    cache: DynamicCache
    mask: torch.Tensor  # [rows, columns]: 1 for a real token
    next_position: torch.Tensor  # [rows, 1]: the position of each row's next token
    logits: torch.Tensor  # [rows, vocab]: the distribution of each row's next token

    def take(self, lines: Sequence[int]) -> None:
        """Keep (or repeat) the given lines, in that order."""
        if list(lines) == list(range(len(self.mask))):
            return
        index = torch.tensor(lines, device=self.mask.device)
        self.cache.batch_select_indices(index)
        self.rows = [self.rows[line] for line in lines] if self.rows else []
        self.mask, self.next_position = self.mask[index], self.next_position[index]
        self.logits = self.logits[index]
        # Columns that are padding in every remaining row hold nothing any row attends to.
        first = int(self.mask.any(dim=0).long().argmax())
        if first:
            self.mask = self.mask[:, first:]
            for layer in _filled_layers(self.cache):
                layer.keys, layer.values = layer.keys[..., first:, :], layer.values[..., first:, :]


class _GrowingLayer(DynamicLayer):
    """A `DynamicLayer` whose keys and values are views of a buffer with `_CACHE_ROOM` spare
    columns on the right, so appending a step's key writes one column in place.

    `DynamicLayer.update` concatenates, copying the whole cache of every layer at every step; at
    5 rows of a 760-token MBPP prompt on Gemma 3 that copy was a quarter of a decode step. The
    views hold exactly the same values in the same order, so attention sees the same tensors.
    Anything that replaces `keys`/`values` with a tensor outside the buffer (the scheduler's
    joins) is handled: the next update copies it into a fresh buffer.
    """

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        self._buffers: tuple[torch.Tensor, torch.Tensor] | None = None
        self._end = 0

    def _room(self, new: int) -> bool:
        """Whether keys/values still end at the buffer's fill mark with `new` columns free."""
        if self._buffers is None or self._end + new > self._buffers[0].shape[-2]:
            return False
        for view, buffer in zip((self.keys, self.values), self._buffers, strict=True):
            if (
                view.untyped_storage().data_ptr() != buffer.untyped_storage().data_ptr()
                or view.stride() != buffer.stride()
                or view.shape[:-2] != buffer.shape[:-2]
                or view.storage_offset() + view.shape[-2] * view.stride(-2)
                != buffer.storage_offset() + self._end * buffer.stride(-2)
            ):
                return False
        return True

    def _rebuffer(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        shape = (*keys.shape[:-2], keys.shape[-2] + _CACHE_ROOM, keys.shape[-1])
        self._buffers = (keys.new_empty(shape), values.new_empty(shape))
        self._end = keys.shape[-2]
        for buffer, part in zip(self._buffers, (keys, values), strict=True):
            buffer[..., : self._end, :].copy_(part)
        self._view(keys.shape[-2])

    def _view(self, length: int) -> None:
        start = self._end - length
        self.keys, self.values = (buffer[..., start : self._end, :] for buffer in self._buffers)

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        new = key_states.shape[-2]
        if not self.keys.numel():
            self._rebuffer(key_states, value_states)
            return self.keys, self.values
        if not self._room(new):
            self._rebuffer(self.keys, self.values)
        length = self.keys.shape[-2] + new
        for buffer, part in zip(self._buffers, (key_states, value_states), strict=True):
            buffer[..., self._end : self._end + new, :].copy_(part)
        self._end += new
        self._view(length)
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Select rows of the whole buffer, spare columns included, so the next step appends
        in place."""
        if not self.get_seq_length():
            return
        if not self._room(0):
            super().batch_select_indices(indices)
            return
        length = self.keys.shape[-2]
        self._buffers = tuple(buffer[indices] for buffer in self._buffers)
        self._view(length)


class _GrowingCache(DynamicCache):
    """A `DynamicCache` of `_GrowingLayer`s, created lazily per layer like its parent's."""

    def __init__(self) -> None:
        Cache.__init__(self, layer_class_to_replicate=_GrowingLayer)


def _has_kv(layer) -> bool:
    """False for a layer that holds no keys of its own (KV sharing, or nothing cached yet)."""
    return bool(layer.is_initialized and layer.keys.numel())


def _filled_layers(cache: DynamicCache) -> list:
    return [layer for layer in cache.layers if _has_kv(layer)]


def _left_pad(tensor: torch.Tensor, columns: int, dim: int) -> torch.Tensor:
    if columns == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = columns
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


def _join(running: _Batch, fresh: _Batch) -> _Batch:
    """One batch of both, each left-padded to the wider; padding keys and values are zeros
    behind a 0 in the mask, so no row attends to them."""
    parts = (running, fresh)
    width = max(part.mask.shape[1] for part in parts)
    layers = []
    for pair in zip(running.cache.layers, fresh.cache.layers, strict=True):
        if not all(_has_kv(layer) for layer in pair):
            layers.append((None, None))  # a layer without its own KV (KV sharing)
            continue
        keys = [_left_pad(layer.keys, width - layer.keys.shape[-2], dim=-2) for layer in pair]
        values = [_left_pad(layer.values, width - layer.keys.shape[-2], dim=-2) for layer in pair]
        layers.append((torch.cat(keys), torch.cat(values)))
    return _Batch(
        rows=[*running.rows, *fresh.rows],
        cache=_cache_of(layers),
        mask=torch.cat([_left_pad(p.mask, width - p.mask.shape[1], dim=1) for p in parts]),
        next_position=torch.cat([part.next_position for part in parts]),
        logits=torch.cat([part.logits for part in parts]),
    )


def _cache_of(layers: list[tuple[torch.Tensor | None, torch.Tensor | None]]) -> _GrowingCache:
    """A cache holding the given keys and values per layer ((None, None): a layer without its
    own KV)."""
    cache = _GrowingCache()
    for keys, values in layers:
        layer = _GrowingLayer()
        if keys is not None:
            layer.update(keys, values)
        cache.layers.append(layer)
    return cache


class _Scheduler:
    """Continuous batching: admit queued jobs into free rows, decode a step, retire finished rows.

    Every KV cache holds full-length layers (no sliding-window truncation), so the caches of
    rows prefilled at different times can be padded and joined.
    """

    def __init__(
        self,
        model,
        tokenizer,
        *,
        prompts,
        encoded,
        params,
        batch_size,
        shared_prefill,
        prompt_stops,
    ):
        self.model, self.tokenizer = model, tokenizer
        self.prompts, self.encoded, self.params = prompts, encoded, params
        self.batch_size, self.shared_prefill = batch_size, shared_prefill
        self.device = next(model.parameters()).device
        self.eos_ids = _eos_ids(model, tokenizer)
        checkers = {tuple(stops): _StopChecker(tokenizer, stops) for stops in prompt_stops}
        self.stopper_of_prompt = [checkers[tuple(stops)] for stops in prompt_stops]
        # Admitting a few rows at a time, not one per freed row, keeps the prefill forwards and
        # cache joins few while rows stay busy.
        self.refill_at = max(1, batch_size // 4)

    def _new_row(self, job: tuple[int, int]) -> _Row:
        generator = None
        if not self.params.greedy:
            seed = sample_seed(self.params.seed, self.prompts[job[0]], job[1])
            generator = torch.Generator(device=self.device).manual_seed(seed)
        return _Row(job, generator)

    @torch.inference_mode()
    def run(self, queue: Sequence[tuple[int, int]]):
        """Yields the generations finished at each step, until the queue is empty."""
        waiting = list(queue)
        batch: _Batch | None = None
        while waiting or batch is not None:
            free = self.batch_size - (len(batch.rows) if batch else 0)
            if waiting and free >= min(self.refill_at, len(waiting)):
                admitted, waiting = waiting[:free], waiting[free:]
                started = time.perf_counter()
                fresh = self._prefill([self._new_row(job) for job in admitted])
                share = (time.perf_counter() - started) / len(admitted)
                for row in fresh.rows:
                    row.seconds += share
                batch = fresh if batch is None else _join(batch, fresh)
            started = time.perf_counter()
            finished, batch = self._step(batch)
            stepped = [*finished, *(batch.rows if batch else [])]
            share = (time.perf_counter() - started) / len(stepped)
            for row in stepped:
                row.seconds += share
            if finished:
                yield [self._finish(row) for row in finished]

    def _step(self, batch: _Batch) -> tuple[list[_Row], _Batch | None]:
        """Draw every row's next token; retire finished rows; run the rest one position on."""
        if self.params.greedy:
            tokens = batch.logits.argmax(-1)
        else:
            tokens = _draw(batch.logits, [row.generator for row in batch.rows], self.params)
        keep, finished = [], []
        for line, (row, token) in enumerate(zip(batch.rows, tokens.tolist(), strict=True)):
            row.new_ids.append(token)
            if (
                token in self.eos_ids
                or len(row.new_ids) == self.params.max_new_tokens
                or self.stopper_of_prompt[row.job[0]].stopped(row.new_ids)
            ):
                finished.append(row)
            else:
                keep.append(line)
        if not keep:
            return finished, None
        batch.take(keep)
        tokens = tokens[torch.tensor(keep, device=tokens.device)]
        batch.mask = torch.cat([batch.mask, batch.mask.new_ones(len(keep), 1)], dim=1)
        batch.logits = self.model(
            input_ids=tokens[:, None],
            attention_mask=batch.mask,
            position_ids=batch.next_position,
            cache=batch.cache,
            use_cache=True,
        ).logits[:, -1]
        batch.next_position = batch.next_position + 1
        return finished, batch

    def _prefill(self, rows: list[_Row]) -> _Batch:
        """The rows' prompts through the model, left-padded; with shared prefill each distinct
        prompt once, its cache and first logits then copied to its rows."""
        prompt_of_row = [row.job[0] for row in rows]
        distinct = list(dict.fromkeys(prompt_of_row)) if self.shared_prefill else prompt_of_row
        batch = self._prefill_padded([self.encoded[p] for p in distinct])
        if self.shared_prefill:
            batch.take([distinct.index(p) for p in prompt_of_row])
        batch.rows = rows
        return batch

    def _prefill_padded(self, ids: list[list[int]]) -> _Batch:
        padded = self.tokenizer.pad({"input_ids": ids}, padding=True, return_tensors="pt").to(
            self.device
        )
        mask = padded["attention_mask"]
        # Positions follow the left padding exactly as `model.generate` derives them.
        positions = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)
        cache = _GrowingCache()
        logits = self.model(
            input_ids=padded["input_ids"],
            attention_mask=mask,
            position_ids=positions,
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        ).logits[:, -1]
        return _Batch([], cache, mask, positions[:, -1:] + 1, logits)

    def _finish(self, row: _Row) -> Generation:
        return _finish(
            self.tokenizer,
            row.job,
            row.new_ids,
            eos_ids=self.eos_ids,
            stops=self.stopper_of_prompt[row.job[0]].stops,
            seconds=row.seconds,
        )


def _draw(scores: torch.Tensor, generators: Sequence[torch.Generator], params) -> torch.Tensor:
    """One token per row, drawn (temperature, then nucleus) with that row's own generator.

    With top_p < 1 the draw runs over the row's nucleus only (at most a few thousand tokens), not
    over a vocabulary-sized tensor of zeros: `multinomial` spends one random number per entry,
    which over 262k entries cost a tenth of a decode step per row.
    """
    probabilities = torch.softmax(scores.float() / params.temperature, dim=-1)
    if params.top_p < 1:
        candidates = _nucleus(probabilities, params.top_p)
    else:
        vocabulary = torch.arange(probabilities.shape[-1], device=probabilities.device)
        candidates = [(vocabulary, row) for row in probabilities]
    return torch.cat(
        [
            ids[torch.multinomial(probs, 1, generator=generator)]
            for (ids, probs), generator in zip(candidates, generators, strict=True)
        ]
    )


def _eos_ids(model, tokenizer) -> list[int]:
    configured = model.generation_config.eos_token_id
    ids = configured if isinstance(configured, list) else [configured]
    return sorted({i for i in [*ids, tokenizer.eos_token_id] if i is not None})


def _finish(tokenizer, job, new_ids, *, eos_ids, stops, seconds) -> Generation:
    ended_by_eos = False
    for position, token in enumerate(new_ids):
        if token in eos_ids:
            new_ids, ended_by_eos = new_ids[:position], True
            break
    text = tokenizer.decode(new_ids, skip_special_tokens=True)
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
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
