"""Model editing engine: FT, GRACE, ROME, MEMIT and PMET, native on transformers 5 (no Kedro).

Entry point: ``apply_edits(model, tokenizer, requests, method=..., hparams=..., covariance=...)``,
which edits in place and returns an ``EditResult`` (deltas, per-edit stats, exact ``restore``).
"""

from apiedit_kedro.editing.api import METHODS, EditError, apply_edits
from apiedit_kedro.editing.architecture import SUPPORTED_MODEL_TYPES, UnsupportedArchitectureError
from apiedit_kedro.editing.covariance import (
    CovarianceStats,
    collect_covariance,
    covariance_layers,
    load_or_compute_covariance,
)
from apiedit_kedro.editing.fingerprint import model_fingerprint, weight_checksum
from apiedit_kedro.editing.hparams import HparamError, parse_hparams
from apiedit_kedro.editing.requests import EditRequest, RequestError
from apiedit_kedro.editing.result import EditResult, RestoreError, combined_drift

__all__ = [
    "METHODS",
    "SUPPORTED_MODEL_TYPES",
    "CovarianceStats",
    "EditError",
    "EditRequest",
    "EditResult",
    "HparamError",
    "RequestError",
    "RestoreError",
    "UnsupportedArchitectureError",
    "apply_edits",
    "collect_covariance",
    "combined_drift",
    "covariance_layers",
    "load_or_compute_covariance",
    "model_fingerprint",
    "parse_hparams",
    "weight_checksum",
]
