"""Typed hyperparameters per method, with EasyEdit's names, parsed from plain Kedro dicts.

Parsing coerces YAML strings such as ``"5e-4"`` (PyYAML reads them as str) and rejects unknown or
missing keys with a message naming the method, the key and the accepted keys.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = [
    "FtHparams",
    "GraceHparams",
    "HparamError",
    "MemitHparams",
    "PmetHparams",
    "RomeHparams",
    "parse_hparams",
]


class HparamError(ValueError):
    """Bad hyperparameters: names the method, the key and the fix."""


def _one_group() -> list[list[int]]:
    return [[10, 5]]


@dataclass(frozen=True)
class _TargetHparams:
    """Shared by ROME, MEMIT and PMET: the target-vector optimisation."""

    layers: list[int]
    v_num_grad_steps: int = 25
    v_lr: float = 0.5
    v_loss_layer: int = -1
    v_weight_decay: float = 1e-3
    clamp_norm_factor: float = 4.0
    kl_factor: float = 0.0625
    # [[length, count]]: `count` sampled prefixes of `length` tokens, plus the bare prompt
    context_template_length_params: list[list[int]] = field(default_factory=_one_group)
    mom2_update_weight: float = 15000.0
    # ridge gamma on C: C + gamma * tr(C)/d_ff * I (this project's addition, absent from the
    # references: it keeps the solve defined when a small covariance sample leaves C singular)
    mom2_ridge: float = 1e-6
    seed: int = 0


@dataclass(frozen=True)
class RomeHparams(_TargetHparams):
    mom2_adjustment: bool = False
    rome_variant: str = "standard"


@dataclass(frozen=True)
class MemitHparams(_TargetHparams):
    pass


@dataclass(frozen=True)
class PmetHparams(_TargetHparams):
    v_num_grad_steps: int = 30
    nll_loss_factor: float = 1.0


@dataclass(frozen=True)
class FtHparams:
    layers: list[int]
    num_steps: int = 25
    lr: float = 5e-4
    batch_size: int = 1
    weight_decay: float = 0.0
    # elementwise L-infinity box radius around the pre-edit weights; false = unconstrained
    norm_constraint: float | bool = 1e-4
    objective_optimization: str = "target_new"
    seed: int = 0


@dataclass(frozen=True)
class GraceHparams:
    layers: list[int]
    n_iter: int = 30
    edit_lr: float = 1.0
    eps: float = 1.0
    dist_fn: str = "euc"
    val_init: str = "cold"
    replacement: str = "replace_last"
    eps_expand: str = "coverage"
    seed: int = 0


HPARAM_TYPES: dict[str, type] = {
    "ft": FtHparams,
    "grace": GraceHparams,
    "rome": RomeHparams,
    "memit": MemitHparams,
    "pmet": PmetHparams,
}

_CHOICES = {
    "rome_variant": ("standard", "r_rome"),
    "objective_optimization": ("target_new",),
    "dist_fn": ("euc",),
    "val_init": ("cold",),
    "replacement": ("replace_last", "replace_all"),
    "eps_expand": ("coverage",),
}


def _coerce(method: str, key: str, value, hint) -> object:
    origin = typing.get_origin(hint)
    try:
        if hint is bool:
            if isinstance(value, str):
                return value.strip().lower() in ("1", "true", "yes")
            return bool(value)
        if hint is int:
            return int(value)
        if hint is float:
            return float(value)
        if hint is str:
            return str(value)
        if origin is list:
            (inner,) = typing.get_args(hint)
            return [_coerce(method, key, item, inner) for item in value]
        if hint == (float | bool):
            if value is False or (isinstance(value, str) and value.strip().lower() == "false"):
                return False
            return float(value)
    except (TypeError, ValueError) as error:
        raise HparamError(
            f"{method}.hparams.{key}: cannot read {value!r} as {hint}: {error}"
        ) from None
    raise HparamError(f"{method}.hparams.{key}: unsupported type {hint}")


def parse_hparams(method: str, params: Mapping | object):
    """Build the typed hyperparameters of ``method`` from a dict (or return a typed object as is)."""
    if method not in HPARAM_TYPES:
        raise HparamError(
            f"unknown editing method {method!r}; choose one of {', '.join(HPARAM_TYPES)}"
        )
    cls = HPARAM_TYPES[method]
    if isinstance(params, cls):
        return params
    if not isinstance(params, Mapping):
        raise HparamError(f"{method}.hparams must be a mapping, got {type(params).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(params) - names)
    if unknown:
        raise HparamError(
            f"{method}.hparams: unknown key(s) {unknown}; accepted keys: {', '.join(sorted(names))}"
        )
    if "layers" not in params:
        raise HparamError(
            f"{method}.hparams: missing required key 'layers' (list of layer indices)"
        )
    values = {key: _coerce(method, key, value, hints[key]) for key, value in params.items()}
    for key, allowed in _CHOICES.items():
        if key in values and values[key] not in allowed:
            raise HparamError(f"{method}.hparams.{key}={values[key]!r}; choose one of {allowed}")
    if not values["layers"]:
        raise HparamError(f"{method}.hparams.layers is empty; give at least one layer index")
    if method in ("rome", "grace") and len(values["layers"]) != 1:
        raise HparamError(
            f"{method}.hparams.layers must hold exactly one layer, got {values['layers']}"
        )
    return cls(**values)
