"""Instant and sequential editing with generation: the core loop of the study.

Methods: the five editing methods of `apiedit_kedro.editing` plus two baselines that change no
weight, `none` (the unedited model) and `prepend_doc` (the new API's doc is prepended to every
prompt, the cheapest alternative to editing).

- instant: for each edit request, start from the original weights, apply the one edit, generate for
  that API's reliability and generalization problems and a fixed specificity sample, restore exactly
  (checked with a weight checksum).
- sequential: apply the edits cumulatively in `seq_order`; at checkpoints (after 1, 2, 4, … and all
  edits) generate for every API edited so far plus the specificity sample, and record weight drift.

Every generation goes through the persistent generation cache under a weight-state id derived from
(model, method, hyperparameters, edits applied), and each edit's log row is stored too, so a re-run
after an interruption re-generates nothing and skips instant edits whose outputs are all known.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from apiedit_kedro.editing import METHODS as EDITING_METHODS
from apiedit_kedro.editing import CovarianceStats, apply_edits, weight_checksum
from apiedit_kedro.editing.grace import firing_counts
from apiedit_kedro.editing.result import combined_drift
from apiedit_kedro.metrics.edit_metrics import edit_metrics, next_token_predictions
from apiedit_kedro.models.cache import GenerationCache, generate_cached
from apiedit_kedro.models.generation import DecodingParams
from apiedit_kedro.models.loading import LoadedModel
from apiedit_kedro.models.prompts import program_from_output, stop_sequences_for
from apiedit_kedro.study.contracts import GENERATION_KEYS
from apiedit_kedro.study.prompting import GenerationPrompt, doc_preamble, generation_prompt
from apiedit_kedro.study.selection import checkpoints, problems_for_api
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
    shots: list[dict[str, Any]]
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
    if context.method == "prepend_doc":
        preamble = doc_preamble(_mapping_rows(context, world_api_ids))
    return [
        generation_prompt(
            problem,
            prompt_style=context.loaded.card.prompt_style,
            tokenizer=context.loaded.tokenizer,
            shots=context.shots,
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


def _by_format(prompts: Sequence[GenerationPrompt]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for index, prompt in enumerate(prompts):
        groups.setdefault(prompt.program_format, []).append(index)
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
    for program_format, indices in _by_format(prompts).items():
        generations = generate_cached(
            context.loaded.model,
            context.loaded.tokenizer,
            [prompts[i].text for i in indices],
            _decoding_for(context, program_format),
            cache=context.generation_cache,
            card_fingerprint=context.loaded.card.fingerprint(),
            weight_state=weight_state,
            batch_size=context.batch_size,
            # a chat template already starts with the BOS token
            add_special_tokens=program_format != "chat",
            context_length=context.loaded.card.context_length,
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


def _apply_one(context: StudyContext, request: Mapping[str, Any]):
    """Edit the model with one request; returns (EditResult, token-level metrics)."""
    model, tokenizer = context.loaded.model, context.loaded.tokenizer
    prompts = request.get("locality_prompts")  # a numpy array when read from parquet
    locality_prompts = [] if prompts is None else [str(prompt) for prompt in prompts]
    before = next_token_predictions(model, tokenizer, locality_prompts)
    result = apply_edits(
        model,
        tokenizer,
        [request],
        method=context.method,
        hparams=context.hparams,
        covariance=context.covariance,
    )
    return result, edit_metrics(model, tokenizer, request, before)


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
    }


def _edit_stats(result, metrics: Mapping[str, float], seconds: float) -> dict[str, Any]:
    stats = result.stats[-1] if result.stats else {}
    return {
        "edit_seconds": seconds,
        "final_loss": float(stats.get("final_loss", float("nan"))),
        "delta_norm": float(stats.get("delta_norm", float("nan"))),
        "delta_survival": float(stats.get("delta_survival", float("nan"))),
        "rewrite_acc": metrics["rewrite_acc"],
        "rephrase_acc": metrics["rephrase_acc"],
        "locality": metrics["locality"],
    }


def run_instant(context: StudyContext, requests: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Instant regime: one edit at a time from the original weights. Returns (generations, log)."""
    generations, log = [], []
    checksum = weight_checksum(context.loaded.model) if context.edits_weights else ""
    for request in tqdm(requests.to_dict("records"), desc=f"{context.method} instant edits"):
        api_id = request["api_id"]
        problems = pd.concat(
            [
                problems_for_api(context.benchmark, api_id, context.max_problems_per_subset),
                context.specificity,
            ],
            ignore_index=True,
        )
        state = context.weight_state([request["edit_id"]])
        row = _edit_log_row(context, request, "instant", 1)
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
            log.append({**row, "restored_exact": True})
            continue
        if stored is not None and _all_cached(context, problems, state, [api_id]):
            logger.info("%s: %s already edited and generated; reusing", context.method, api_id)
            generations.append(generate())
            log.append({**row, **stored})
            continue
        started = time.perf_counter()
        result, metrics = _apply_one(context, request)
        stats = _edit_stats(result, metrics, time.perf_counter() - started)
        before = firing_counts(context.loaded.model)
        try:
            generations.append(generate())
        finally:
            stats.update(_firing_during(context, before))
            result.restore(context.loaded.model)
        stats["restored_exact"] = weight_checksum(context.loaded.model) == checksum
        if not stats["restored_exact"]:
            raise RuntimeError(
                f"{context.method}: restoring the weights after {request['edit_id']} did not "
                "give back the original checksum; later edits would start from edited weights"
            )
        context.state_store.put_many({f"instant-log:{state}": stats})
        log.append({**row, **stats})
    return _concat(generations, GENERATION_COLUMNS), pd.DataFrame(log)


def _all_cached(
    context: StudyContext, problems: pd.DataFrame, state: str, world_api_ids: Sequence[str]
) -> bool:
    prompts = _prompts(context, problems, world_api_ids)
    keys = []
    for program_format, indices in _by_format(prompts).items():
        decoding = _decoding_for(context, program_format)
        keys.extend(
            context.generation_cache.key(
                context.loaded.card.fingerprint(), state, prompts[i].text, decoding, sample
            )
            for i in indices
            for sample in range(decoding.n_samples)
        )
    return len(context.generation_cache.get_many(keys)) == len(set(keys))


def run_sequential(
    context: StudyContext, requests: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Sequential regime: edits accumulate in `seq_order`; generate at checkpoints."""
    ordered = requests.sort_values("seq_order", kind="stable").to_dict("records")
    steps = set(checkpoints(len(ordered)))
    generations, log, results = [], [], []
    edited_ids: list[str] = []
    edited_apis: list[str] = []
    checksum = weight_checksum(context.loaded.model) if context.edits_weights else ""
    try:
        for step, request in enumerate(tqdm(ordered, desc=f"{context.method} sequential"), 1):
            edited_ids.append(request["edit_id"])
            edited_apis.append(request["api_id"])
            row = _edit_log_row(context, request, "sequential", step)
            if context.edits_weights:
                started = time.perf_counter()
                result, metrics = _apply_one(context, request)
                results.append(result)
                row.update(_edit_stats(result, metrics, time.perf_counter() - started))
                drift = combined_drift(results)
                row["drift"] = json.dumps(drift)
                row["drift_total"] = sum(v * v for v in drift.values()) ** 0.5
            row["checkpoint"] = step in steps
            log.append(row)
            if step not in steps:
                continue
            parts, api_for = [], []
            for api_id in edited_apis:
                problems = problems_for_api(
                    context.benchmark, api_id, context.max_problems_per_subset
                )
                parts.append(problems)
                api_for.extend([api_id] * len(problems))
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
