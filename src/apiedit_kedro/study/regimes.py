"""Instant and sequential editing with generation: the core loop of the study.

Methods: the five editing methods of `apiedit_kedro.editing` plus two baselines that change no
weight, `none` (the unedited model) and `prepend_doc` (the new API's doc is prepended to every
prompt, the cheapest alternative to editing).

- instant: for each API, start from the original weights, apply all of its edit requests (one per
  reliability item the run evaluates: ROME and GRACE one after another, FT, MEMIT and PMET as one
  batch), generate for the API's reliability and generalization items and a fixed specificity
  sample in the world without that API, restore exactly (checked with a weight checksum).
- sequential: edit API by API in `seq_order`, each API's requests together; after 1, 2, 4, … and all
  APIs (the edit step counts APIs) generate for every API edited so far, in the world without all
  of them, on the items the benchmark validated in that very world, plus the specificity sample;
  record weight drift.

Every generation goes through the persistent generation cache under a weight-state id derived from
(model, method, hyperparameters, edits applied), and each edit's log row is stored too, so a re-run
after an interruption re-generates nothing and skips instant edits whose outputs are all known.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from apiedit_kedro.editing import METHODS as EDITING_METHODS
from apiedit_kedro.editing import CovarianceStats, apply_edits, weight_checksum
from apiedit_kedro.editing.api import REGISTRY
from apiedit_kedro.editing.grace import firing_counts
from apiedit_kedro.editing.result import combined_drift
from apiedit_kedro.metrics.edit_metrics import edit_metrics, next_token_predictions
from apiedit_kedro.models.cache import GenerationCache, generate_cached
from apiedit_kedro.models.generation import DecodingParams
from apiedit_kedro.models.loading import LoadedModel
from apiedit_kedro.models.prompts import program_from_output, stop_sequences_for
from apiedit_kedro.study.contracts import GENERATION_KEYS
from apiedit_kedro.study.prompting import (
    GenerationPrompt,
    ShotPool,
    doc_preamble,
    generation_prompt,
)
from apiedit_kedro.study.selection import (
    StudyConfigError,
    checkpoints,
    edited_item_ids,
    problems_for_api,
    requests_by_api,
)
from apiedit_kedro.study.store import JsonStore

logger = logging.getLogger(__name__)

BASELINE_METHODS = ("none", "prepend_doc")
STUDY_METHODS = (*BASELINE_METHODS, *EDITING_METHODS)
GENERATION_COLUMNS = [
    *GENERATION_KEYS,
    "completion",
    "program",
    "finish_reason",
    "new_tokens",
    "gen_seconds",
    "world_api_ids",
    "weight_state",
]


@dataclass
class StudyContext:
    """Everything one method's run needs besides the edit requests."""

    loaded: LoadedModel
    method: str
    hparams: Mapping[str, Any]
    benchmark: pd.DataFrame
    api_mapping: pd.DataFrame
    shots: ShotPool
    decoding: DecodingParams
    batch_size: int
    max_problems_per_subset: int | None
    specificity: pd.DataFrame
    generation_cache: GenerationCache
    state_store: JsonStore
    covariance: CovarianceStats | None = None

    def __post_init__(self) -> None:
        if self.method not in STUDY_METHODS:
            raise ValueError(f"unknown method {self.method!r}; use one of {STUDY_METHODS}")

    @property
    def edits_weights(self) -> bool:
        return self.method in EDITING_METHODS

    @property
    def model_name(self) -> str:
        return self.loaded.card.name

    def weight_state(self, edit_ids: Sequence[str]) -> str:
        """Names the weights after `edit_ids` were applied with this method and hyperparameters."""
        if not self.edits_weights or not edit_ids:
            return "base"
        payload = json.dumps(
            {"method": self.method, "hparams": self.hparams, "edits": list(edit_ids)},
            sort_keys=True,
            default=str,
        )
        return f"{self.method}:{hashlib.sha256(payload.encode()).hexdigest()[:20]}"


def _mapping_rows(context: StudyContext, api_ids: Sequence[str]) -> list[dict[str, Any]]:
    by_id = context.api_mapping.set_index("api_id", drop=False)
    return [by_id.loc[api_id].to_dict() for api_id in api_ids]


def _prompts(
    context: StudyContext, problems: pd.DataFrame, world_api_ids: Sequence[str]
) -> list[GenerationPrompt]:
    preamble = ""
    world = _mapping_rows(context, world_api_ids)
    if context.method == "prepend_doc":
        preamble = doc_preamble(world)
    shots = context.shots.for_world(world)
    return [
        generation_prompt(
            problem,
            prompt_style=context.loaded.card.prompt_style,
            tokenizer=context.loaded.tokenizer,
            shots=shots,
            preamble=preamble,
        )
        for problem in problems.to_dict("records")
    ]


def _decoding_for(context: StudyContext, program_format: str) -> DecodingParams:
    """The run's decoding settings with the format's stop sequences and the card's own."""
    stops = stop_sequences_for(
        program_format, (*context.loaded.card.stop_sequences, *context.decoding.stop_sequences)
    )
    return replace(context.decoding, stop_sequences=stops)


def _by_special_tokens(prompts: Sequence[GenerationPrompt]) -> dict[bool, list[int]]:
    """Prompts that get the tokenizer's special tokens, and chat prompts, which already start with
    the BOS token; within a group, formats decode in one batch, each with its own stops."""
    groups: dict[bool, list[int]] = {}
    for index, prompt in enumerate(prompts):
        groups.setdefault(prompt.program_format != "chat", []).append(index)
    return groups


def _generate(
    context: StudyContext,
    problems: pd.DataFrame,
    *,
    regime: str,
    edit_step: int,
    api_id_for: Sequence[str],
    world_api_ids: Sequence[str],
    weight_state: str,
) -> pd.DataFrame:
    """Samples for `problems` under the current weights, as `*_generations` rows."""
    prompts = _prompts(context, problems, world_api_ids)
    problem_rows = problems.to_dict("records")
    world = json.dumps(list(world_api_ids))
    rows = []
    for add_special_tokens, indices in _by_special_tokens(prompts).items():
        stops = [_decoding_for(context, prompts[i].program_format).stop_sequences for i in indices]
        generations = generate_cached(
            context.loaded.model,
            context.loaded.tokenizer,
            [prompts[i].text for i in indices],
            context.decoding,
            cache=context.generation_cache,
            card_fingerprint=context.loaded.card.fingerprint(),
            weight_state=weight_state,
            batch_size=context.batch_size,
            add_special_tokens=add_special_tokens,
            context_length=context.loaded.card.context_length,
            prompt_stops=stops,
        )
        for generation in generations:
            index = indices[generation.prompt_index]
            problem, prompt = problem_rows[index], prompts[index]
            rows.append(
                {
                    "model": context.model_name,
                    "method": context.method,
                    "regime": regime,
                    "edit_step": edit_step,
                    "api_id": api_id_for[index],
                    "problem_id": problem["problem_id"],
                    "subset": problem["subset"],
                    "sample_idx": generation.sample_idx,
                    "completion": generation.completion,
                    "program": program_from_output(
                        prompt.program_format,
                        prompt.problem_prompt,
                        generation.completion,
                        entry_point=str(problem["entry_point"]),
                    ),
                    "finish_reason": generation.finish_reason,
                    "new_tokens": generation.new_tokens,
                    "gen_seconds": generation.gen_seconds,
                    "world_api_ids": world,
                    "weight_state": weight_state,
                    "order": index,
                }
            )
    frame = pd.DataFrame(rows, columns=[*GENERATION_COLUMNS, "order"])
    frame = frame.sort_values(["order", "sample_idx"], kind="stable")
    return frame.drop(columns="order").reset_index(drop=True)


def _edit_api(context: StudyContext, requests: Sequence[Mapping[str, Any]]):
    """Apply all `requests` of one API; returns (EditResult, token-level metrics per request).

    Per-request methods (ROME, GRACE) apply them one after another, the others as one batch.
    Metrics are read after the API's last edit, so each request is scored on the edited model.
    """
    model, tokenizer = context.loaded.model, context.loaded.tokenizer
    locality = [
        [str(p) for p in _as_texts(request.get("locality_prompts"))] for request in requests
    ]
    before = [next_token_predictions(model, tokenizer, prompts) for prompts in locality]
    mode = "sequential" if REGISTRY[context.method].per_request else "batch"
    result = apply_edits(
        model,
        tokenizer,
        list(requests),
        method=context.method,
        hparams=context.hparams,
        covariance=context.covariance,
        mode=mode,
    )
    metrics = [
        edit_metrics(model, tokenizer, request, prior)
        for request, prior in zip(requests, before, strict=True)
    ]
    return result, metrics


def _as_texts(value: Any) -> list[str]:
    return [] if value is None else [str(item) for item in value]  # parquet gives numpy arrays


def _edit_log_row(
    context: StudyContext, request: Mapping[str, Any], regime: str, edit_step: int
) -> dict[str, Any]:
    return {
        "model": context.model_name,
        "method": context.method,
        "regime": regime,
        "edit_step": edit_step,
        "edit_id": request["edit_id"],
        "api_id": request["api_id"],
        "source_item_id": request.get("source_item_id", ""),
    }


def _edit_stats(stats: Mapping[str, Any], metrics: Mapping[str, float]) -> dict[str, Any]:
    """One request's log columns; `edit_seconds` is its share of its edit call (a batch is split
    evenly over its requests)."""
    return {
        "edit_seconds": float(stats.get("seconds", float("nan"))),
        "final_loss": float(stats.get("final_loss", float("nan"))),
        "delta_norm": float(stats.get("delta_norm", float("nan"))),
        "delta_survival": float(stats.get("delta_survival", float("nan"))),
        "rewrite_acc": metrics["rewrite_acc"],
        "rephrase_acc": metrics["rephrase_acc"],
        "locality": metrics["locality"],
    }


def _requests_to_edit(
    context: StudyContext, api_id: str, requests: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The API's requests whose source item the run evaluates as reliability (all at full scale)."""
    evaluated = edited_item_ids(context.benchmark, api_id, context.max_problems_per_subset)
    chosen = [r for r in requests if r.get("source_item_id") in evaluated]
    if not chosen:
        raise StudyConfigError(
            f"{api_id}: none of its {len(requests)} edit requests comes from a reliability item "
            "this run evaluates; the edit requests and the benchmark come from different synthesis "
            "runs (re-run `kedro run --pipeline=synthesis`)"
        )
    return chosen


def run_instant(context: StudyContext, requests: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Instant regime: one API at a time from the original weights. Returns (generations, log)."""
    generations, log = [], []
    checksum = weight_checksum(context.loaded.model) if context.edits_weights else ""
    for api_id, all_requests in tqdm(
        requests_by_api(requests), desc=f"{context.method} instant edits"
    ):
        api_requests = _requests_to_edit(context, api_id, all_requests)
        problems = pd.concat(
            [
                problems_for_api(context.benchmark, api_id, context.max_problems_per_subset),
                context.specificity,
            ],
            ignore_index=True,
        )
        edit_ids = [request["edit_id"] for request in api_requests]
        state = context.weight_state(edit_ids)
        rows = [_edit_log_row(context, request, "instant", 1) for request in api_requests]
        stored = context.state_store.get_many([f"instant-log:{state}"]).get(f"instant-log:{state}")

        generate = partial(
            _generate,
            context,
            problems,
            regime="instant",
            edit_step=1,
            api_id_for=[api_id] * len(problems),
            world_api_ids=[api_id],
            weight_state=state,
        )
        if not context.edits_weights:
            generations.append(generate())
            log.extend({**row, "restored_exact": True} for row in rows)
            continue
        if stored is not None and _all_cached(context, problems, state, [api_id]):
            logger.info("%s: %s already edited and generated; reusing", context.method, api_id)
            generations.append(generate())
            log.extend({**row, **stats} for row, stats in zip(rows, stored, strict=True))
            continue
        result, metrics = _edit_api(context, api_requests)
        stats = [_edit_stats(s, m) for s, m in zip(result.stats, metrics, strict=True)]
        before = firing_counts(context.loaded.model)
        try:
            generations.append(generate())
        finally:
            firing = _firing_during(context, before)
            result.restore(context.loaded.model)
        restored = weight_checksum(context.loaded.model) == checksum
        if not restored:
            raise RuntimeError(
                f"{context.method}: restoring the weights after the edits of {api_id} did not "
                "give back the original checksum; later edits would start from edited weights"
            )
        stats = [{**entry, **firing, "restored_exact": restored} for entry in stats]
        context.state_store.put_many({f"instant-log:{state}": stats})
        log.extend({**row, **entry} for row, entry in zip(rows, stats, strict=True))
    return _concat(generations, GENERATION_COLUMNS), pd.DataFrame(log)


def _all_cached(
    context: StudyContext, problems: pd.DataFrame, state: str, world_api_ids: Sequence[str]
) -> bool:
    prompts = _prompts(context, problems, world_api_ids)
    keys = []
    for prompt in prompts:
        decoding = _decoding_for(context, prompt.program_format)
        keys.extend(
            context.generation_cache.key(
                context.loaded.card.fingerprint(), state, prompt.text, decoding, sample
            )
            for sample in range(decoding.n_samples)
        )
    return len(context.generation_cache.get_many(keys)) == len(set(keys))


def _check_sequence_prefix(context: StudyContext, api_ids: Sequence[str]) -> None:
    """The benchmark validated sequential worlds that are prefixes of the global `seq_order`."""
    order = context.api_mapping.sort_values("seq_order")["api_id"].tolist()
    if list(api_ids) != order[: len(api_ids)]:
        raise StudyConfigError(
            "the sequential regime must edit a prefix of the benchmark's seq_order (its worlds "
            f"were validated so); got {list(api_ids)[:5]}…. Run it unsharded "
            "(api_shard=1/1), capped with study.max_apis if needed"
        )


def run_sequential(
    context: StudyContext, requests: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Sequential regime: APIs accumulate in `seq_order`; generate at checkpoints."""
    grouped = requests_by_api(requests)
    _check_sequence_prefix(context, [api_id for api_id, _ in grouped])
    steps = set(checkpoints(len(grouped)))
    generations, log, results = [], [], []
    edited_ids: list[str] = []
    edited_apis: list[str] = []
    checksum = weight_checksum(context.loaded.model) if context.edits_weights else ""
    try:
        for step, (api_id, all_requests) in enumerate(
            tqdm(grouped, desc=f"{context.method} sequential"), 1
        ):
            api_requests = _requests_to_edit(context, api_id, all_requests)
            edited_ids.extend(request["edit_id"] for request in api_requests)
            edited_apis.append(api_id)
            rows = [_edit_log_row(context, r, "sequential", step) for r in api_requests]
            if context.edits_weights:
                result, metrics = _edit_api(context, api_requests)
                results.append(result)
                drift = combined_drift(results)
                for row, stats, metric in zip(rows, result.stats, metrics, strict=True):
                    row.update(_edit_stats(stats, metric))
                    row["drift"] = json.dumps(drift)
                    row["drift_total"] = sum(v * v for v in drift.values()) ** 0.5
            for row in rows:
                row["checkpoint"] = step in steps
            log.extend(rows)
            if step not in steps:
                continue
            parts, api_for = [], []
            for edited in edited_apis:
                problems = problems_for_api(
                    context.benchmark, edited, context.max_problems_per_subset, step=step
                )
                parts.append(problems)
                api_for.extend([edited] * len(problems))
            if not sum(len(part) for part in parts):
                logger.warning(
                    "%s: no item was validated in the world after %d APIs; only specificity "
                    "items are generated at this checkpoint",
                    context.method,
                    step,
                )
            parts.append(context.specificity)
            api_for.extend([""] * len(context.specificity))
            before = firing_counts(context.loaded.model)
            generations.append(
                _generate(
                    context,
                    pd.concat(parts, ignore_index=True),
                    regime="sequential",
                    edit_step=step,
                    api_id_for=api_for,
                    world_api_ids=list(edited_apis),
                    weight_state=context.weight_state(edited_ids),
                )
            )
            for row in rows:
                row.update(_firing_during(context, before))
    finally:
        for result in reversed(results):
            result.restore(context.loaded.model)
    if context.edits_weights and weight_checksum(context.loaded.model) != checksum:
        raise RuntimeError(f"{context.method}: sequential edits were not restored exactly")
    return _concat(generations, GENERATION_COLUMNS), pd.DataFrame(log)


def _firing_during(context: StudyContext, before: tuple[int, int]) -> dict[str, int]:
    """GRACE's codebook use while generating since `before`: positions queried and fired.

    Only GRACE rows carry these columns. Generations read back from the cache ran no forward
    pass, so a fully cached rerun counts 0 queries.
    """
    if context.method != "grace":
        return {}
    queried, fired = firing_counts(context.loaded.model)
    return {"grace_queries": queried - before[0], "grace_fired": fired - before[1]}


def _concat(frames: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    frames = [frame for frame in frames if not frame.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
