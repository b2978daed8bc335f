"""A persistent generation cache (one sqlite3 file) and `generate_cached`, which consults it first.

Key: (card fingerprint, weight-state id, prompt hash, decoding identity, sample index). The
weight-state id is the caller's name for the current weights ("base", or an edit-log hash after
edits); the decoding identity holds every setting that changes a sample's text but not
`n_samples` or the batch size, so asking for 5 samples after 3 only generates samples 3 and 4.
The table is a versioned `SqliteTable` (shared with the study's `JsonStore`); each finished batch is
committed in its own transaction (sqlite's journal keeps the file
consistent if the process is killed mid-write), so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import replace

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from apiedit_kedro.models.generation import DecodingParams, Generation, generate_jobs
from apiedit_kedro.study.store import SqliteTable

logger = logging.getLogger(__name__)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class GenerationCache(SqliteTable):
    """Generations stored in a sqlite3 file; safe to reopen after a crash."""

    TABLE = "generations"
    COLUMNS = (
        ("key", "TEXT"),
        ("card", "TEXT NOT NULL"),
        ("weight_state", "TEXT NOT NULL"),
        ("prompt_hash", "TEXT NOT NULL"),
        ("decoding", "TEXT NOT NULL"),
        ("sample_idx", "INTEGER NOT NULL"),
        ("completion", "TEXT NOT NULL"),
        ("finish_reason", "TEXT NOT NULL"),
        ("new_tokens", "INTEGER NOT NULL"),
        ("gen_seconds", "REAL NOT NULL"),
    )
    VERSION = 1

    @staticmethod
    def key(card: str, weight_state: str, prompt: str, decoding: DecodingParams, sample_idx: int):
        identity = json.dumps(decoding.identity(), sort_keys=True)
        return _sha(f"{card}\x00{weight_state}\x00{_sha(prompt)}\x00{identity}\x00{sample_idx}")

    def get_many(self, keys: Sequence[str]) -> dict[str, tuple[str, str, int, float]]:
        columns = ["completion", "finish_reason", "new_tokens", "gen_seconds"]
        return {row[0]: row[1:] for row in self._select_many(columns, keys)}

    def put_many(self, rows: Iterable[tuple]) -> None:
        """Insert rows in one transaction (all or nothing)."""
        self._insert_many(rows)


def generate_cached(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    params: DecodingParams,
    *,
    cache: GenerationCache,
    card_fingerprint: str,
    weight_state: str,
    batch_size: int = 8,
    add_special_tokens: bool = True,
    progress: bool = True,
    context_length: int | None = None,
    prompt_stops: Sequence[Sequence[str]] | None = None,
) -> list[Generation]:
    """Like `generation.generate`, but samples already in `cache` are read, not generated.

    With `prompt_stops`, each prompt's samples are keyed under its own stop sequences, exactly as
    if it had been generated alone with them. Cached samples come back with their original
    `gen_seconds`.
    """
    jobs = [(p, s) for p in range(len(prompts)) for s in range(params.n_samples)]
    decoding_of = [
        params if prompt_stops is None else replace(params, stop_sequences=tuple(stops))
        for stops in (prompt_stops or [params.stop_sequences] * len(prompts))
    ]

    def key_of(job: tuple[int, int]) -> str:
        return cache.key(
            card_fingerprint, weight_state, prompts[job[0]], decoding_of[job[0]], job[1]
        )

    keys = {job: key_of(job) for job in jobs}
    stored = cache.get_many(list(keys.values()))
    missing = [job for job in jobs if keys[job] not in stored]
    logger.info(
        "generation cache %s: %d of %d samples cached, %d to generate",
        cache.path,
        len(jobs) - len(missing),
        len(jobs),
        len(missing),
    )

    def store(batch: list[Generation]) -> None:
        cache.put_many(
            (
                keys[(g.prompt_index, g.sample_idx)],
                card_fingerprint,
                weight_state,
                _sha(prompts[g.prompt_index]),
                json.dumps(decoding_of[g.prompt_index].identity(), sort_keys=True),
                g.sample_idx,
                g.completion,
                g.finish_reason,
                g.new_tokens,
                g.gen_seconds,
            )
            for g in batch
        )

    fresh: dict[tuple[int, int], Generation] = {}
    if missing:
        generated = generate_jobs(
            model,
            tokenizer,
            prompts,
            missing,
            params,
            batch_size=batch_size,
            add_special_tokens=add_special_tokens,
            progress=progress,
            context_length=context_length,
            on_batch=store,
            prompt_stops=prompt_stops,
        )
        fresh = {(g.prompt_index, g.sample_idx): g for g in generated}
    return [
        fresh[job] if job in fresh else Generation(job[0], job[1], *stored[keys[job]])
        for job in jobs
    ]
