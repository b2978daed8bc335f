"""``apply_edits``: the one entry point for the five methods, with validation and all-or-nothing edits.

Everything that can be checked cheaply (method, hyperparameters, architecture, layers, requests,
covariance layers) is checked before any model work; if an edit fails midway, every change made by the
call is undone before the error propagates.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from torch import nn

from apiedit_kedro.editing.architecture import anatomy_of
from apiedit_kedro.editing.covariance import CovarianceStats
from apiedit_kedro.editing.fingerprint import weight_checksum
from apiedit_kedro.editing.ft import ft_edit
from apiedit_kedro.editing.grace import grace_edit
from apiedit_kedro.editing.hparams import parse_hparams
from apiedit_kedro.editing.memit import memit_edit
from apiedit_kedro.editing.pmet import pmet_edit
from apiedit_kedro.editing.requests import EditRequest, context_length, parse_requests
from apiedit_kedro.editing.result import EditContext, EditResult
from apiedit_kedro.editing.rome import rome_edit

__all__ = ["METHODS", "REGISTRY", "EditError", "EditMethod", "apply_edits"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EditMethod:
    """How `apply_edits` drives one method.

    A per-request method edits one request per call (so it has no batch mode); the others take
    a list of requests, which is what batch mode hands them at once.
    """

    edit: Callable[..., dict]
    per_request: bool
    needs_covariance: bool  # ROME's depends on its hparams (mom2_adjustment), checked apart


REGISTRY: dict[str, EditMethod] = {
    "ft": EditMethod(ft_edit, per_request=False, needs_covariance=False),
    "grace": EditMethod(grace_edit, per_request=True, needs_covariance=False),
    "rome": EditMethod(rome_edit, per_request=True, needs_covariance=False),
    "memit": EditMethod(memit_edit, per_request=False, needs_covariance=True),
    "pmet": EditMethod(pmet_edit, per_request=False, needs_covariance=True),
}
METHODS = tuple(REGISTRY)


class EditError(RuntimeError):
    """An edit failed; the model has been put back as it was before ``apply_edits``."""


def _check_method(method: str, mode: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown editing method {method!r}; choose one of {', '.join(METHODS)}")
    if mode not in ("sequential", "batch"):
        raise ValueError(f"unknown edit mode {mode!r}; choose 'sequential' or 'batch'")
    if mode == "batch" and REGISTRY[method].per_request:
        batchable = [name for name, entry in REGISTRY.items() if not entry.per_request]
        raise ValueError(
            f"{method} edits one request at a time; use mode='sequential' "
            f"(batch mode exists for {', '.join(batchable)})"
        )


def _check_covariance(method: str, hparams, covariance: CovarianceStats | None) -> None:
    needs = REGISTRY[method].needs_covariance or (method == "rome" and hparams.mom2_adjustment)
    if not needs:
        return
    if covariance is None:
        raise ValueError(
            f"{method} needs covariance statistics for layers {hparams.layers}; compute them with "
            "editing.load_or_compute_covariance(model, tokenizer, layers) and pass covariance="
        )
    missing = sorted(set(hparams.layers) - set(covariance.layers))
    if missing:
        raise ValueError(
            f"{method}: the covariance lacks layers {missing} (has {covariance.layers}); recompute it "
            "for the union of the methods' layers"
        )


def _summarise(stats: dict, result: EditResult) -> dict:
    norms = stats.pop("delta_norm", {})
    drift = result.drift()
    return {
        **stats,
        "delta_norm": math.sqrt(sum(v * v for v in norms.values())),
        "delta_norms": norms,
        "drift": drift,
        "drift_total": math.sqrt(sum(v * v for v in drift.values())),
    }


def apply_edits(
    model: nn.Module,
    tokenizer,
    requests: Iterable[Mapping | EditRequest],
    *,
    method: str,
    hparams: Mapping | object,
    covariance: CovarianceStats | None = None,
    mode: str = "sequential",
) -> EditResult:
    """Edit ``model`` in place with ``method`` and return the deltas, statistics and a restore handle.

    ``hparams`` is the method's hyperparameter dict (``params:<method>.hparams``) or a dict holding it
    under ``"hparams"``. ``mode="sequential"`` applies requests one after another (each sees the
    previous edits); ``"batch"`` computes one joint update (FT, MEMIT, PMET).
    """
    _check_method(method, mode)
    if isinstance(hparams, Mapping) and "hparams" in hparams:
        hparams = hparams["hparams"]
    typed = parse_hparams(method, hparams)
    anatomy = anatomy_of(model)
    for layer in typed.layers:
        anatomy.check_layer(layer)
    encoded = parse_requests(requests, tokenizer, context_length(model))
    _check_covariance(method, typed, covariance)
    result = EditResult(method=method, checksum_before=weight_checksum(model))
    context = EditContext(model, tokenizer, anatomy, typed, covariance, result)
    groups = [[enc] for enc in encoded] if mode == "sequential" else [encoded]
    done = 0
    for group in groups:
        started = time.perf_counter()
        try:
            entry = REGISTRY[method]
            result.take_survival()
            stats = entry.edit(context, group[0] if entry.per_request else group)
            # cos(applied ΔW, computed ΔW) over this edit's deltas; GRACE measures its own
            stats.setdefault("delta_survival", result.take_survival())
            if not math.isfinite(float(stats.get("final_loss", 0.0))):
                raise FloatingPointError("the edit loss is NaN/Inf")
        except Exception as error:
            if result.touched:
                result.restore(model)
            ids = ", ".join(enc.request.edit_id for enc in group)
            raise EditError(
                f"{method} edit of {ids} failed ({type(error).__name__}: {error}); the model was "
                "restored to its weights before apply_edits"
            ) from error
        seconds = time.perf_counter() - started
        summary = _summarise(stats, result)
        for enc in group:
            done += 1
            result.stats.append(
                {
                    "edit_id": enc.request.edit_id,
                    "method": method,
                    "edit_index": done - 1,
                    "seconds": seconds / len(group),
                    **summary,
                }
            )
        logger.info(
            "%s edit %d/%d (%s): %.2fs, loss %.4f, |delta| %.3g",
            method,
            done,
            len(encoded),
            group[-1].request.edit_id,
            seconds,
            summary.get("final_loss", float("nan")),
            summary["delta_norm"],
        )
    return result
