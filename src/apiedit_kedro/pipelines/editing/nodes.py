"""Nodes of the `instant` and `sequential` pipelines (one template per regime).

Each method namespace runs one node per regime: load the model card, select the shard's edit
requests, then hand over to `apiedit_kedro.study.regimes`. The model is loaded inside the node, not
passed between nodes, so `--namespaces=<method>` runs stand alone and no multi-GB object is copied.
"""

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from apiedit_kedro.editing import covariance_layers, load_or_compute_covariance
from apiedit_kedro.models.cache import GenerationCache
from apiedit_kedro.models.generation import DecodingParams
from apiedit_kedro.models.loading import load_model
from apiedit_kedro.study.prompting import mbpp_shots
from apiedit_kedro.study.regimes import StudyContext, run_instant, run_sequential
from apiedit_kedro.study.selection import (
    scale_value,
    select_edit_requests,
    specificity_sample,
)
from apiedit_kedro.study.store import JsonStore

logger = logging.getLogger(__name__)

RUNNERS = {"instant": run_instant, "sequential": run_sequential}


def _covariance(method: str, hparams: Mapping[str, Any], loaded, settings, directory: Path):
    layers = covariance_layers({method: {"hparams": dict(hparams)}})
    if not layers:
        return None
    return load_or_compute_covariance(
        loaded.model,
        loaded.tokenizer,
        layers,
        corpus=settings["corpus"],
        token_budget=int(settings["token_budget"]),
        max_len=int(settings["max_len"]),
        seed=int(settings.get("seed", 0)),
        cache_dir=directory,
    )


def run_regime(
    regime: str,
    method: str,
    benchmark: pd.DataFrame,
    problems: pd.DataFrame,
    edit_requests: pd.DataFrame,
    api_mapping: pd.DataFrame,
    model_card: dict[str, Any],
    generation: dict[str, Any],
    hparams: dict[str, Any],
    study: dict[str, Any],
    covariance_settings: dict[str, Any],
    api_shard: str,
    generation_cache: GenerationCache,
    state_store: JsonStore,
    covariance_dir: Path,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Edit, generate and restore for one method in one regime; returns (generations, edit_log)."""
    requests = select_edit_requests(
        edit_requests, shard=api_shard, max_apis=scale_value(study, "max_apis")
    )
    decoding = DecodingParams.from_params(generation)
    loaded = load_model(model_card)
    context = StudyContext(
        loaded=loaded,
        method=method,
        hparams=hparams or {},
        benchmark=benchmark,
        api_mapping=api_mapping,
        shots=mbpp_shots(problems),
        decoding=decoding,
        batch_size=int(generation.get("batch_size", 8)),
        max_problems_per_subset=scale_value(study, "max_problems_per_subset"),
        specificity=specificity_sample(
            benchmark, scale_value(study, "specificity_sample"), int(study["seed"])
        ),
        generation_cache=generation_cache,
        state_store=state_store,
    )
    if context.edits_weights:
        context.covariance = _covariance(
            method, context.hparams, loaded, covariance_settings, covariance_dir
        )
    logger.info(
        "%s %s on %s: %d edit requests (shard %s)",
        regime,
        method,
        loaded.card.name,
        len(requests),
        api_shard,
    )
    return RUNNERS[regime](context, requests)
