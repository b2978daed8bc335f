"""The synthesis settings as one typed, validated object (built from the `synthesis` parameters)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class SynthesisSettingsError(ValueError):
    """A `synthesis` parameter that cannot build a benchmark; the message names the key."""


@dataclass(frozen=True)
class SandboxRun:
    """How validation programs run in the sandbox."""

    timeout_s: float
    unit_timeout_s: float
    workers: int | None


@dataclass(frozen=True)
class TimeoutRule:
    """Per item: max(`min_unit_s` per unit, `factor` x the reference's run) + 1 s, capped."""

    min_unit_s: float
    factor: float
    cap_s: float


@dataclass(frozen=True)
class SynthesisSettings:
    seed: int
    excluded_mbpp_ids: tuple[int, ...]
    reliability_fraction: float
    min_items_per_api: int
    # sequential checkpoint worlds validated besides 1, 2, 4, ... and all APIs: every step up to
    # this one, so that capped study runs (`study.max_apis` <= this) end on a validated world
    all_sequential_steps_up_to: int
    validation: SandboxRun
    timeouts: TimeoutRule
    n_locality_prompts: int
    n_rephrase_prompts: int
    study_counts: Mapping[str, int]

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> SynthesisSettings:
        def need(mapping: Mapping[str, Any], key: str, where: str = "synthesis") -> Any:
            if key not in mapping:
                raise SynthesisSettingsError(
                    f"parameter {where}.{key} is missing; add it to conf/base/parameters_synthesis.yml"
                )
            return mapping[key]

        validation = need(params, "validation")
        timeouts = need(params, "timeouts")
        requests = need(params, "edit_requests")
        settings = cls(
            seed=int(need(params, "seed")),
            excluded_mbpp_ids=tuple(int(i) for i in need(params, "excluded_mbpp_ids")),
            reliability_fraction=float(need(params, "reliability_fraction")),
            min_items_per_api=int(need(params, "min_items_per_api")),
            all_sequential_steps_up_to=int(need(params, "all_sequential_steps_up_to")),
            validation=SandboxRun(
                timeout_s=float(need(validation, "timeout_s", "synthesis.validation")),
                unit_timeout_s=float(need(validation, "unit_timeout_s", "synthesis.validation")),
                workers=validation.get("workers") or None,
            ),
            timeouts=TimeoutRule(
                min_unit_s=float(need(timeouts, "min_unit_s", "synthesis.timeouts")),
                factor=float(need(timeouts, "factor", "synthesis.timeouts")),
                cap_s=float(need(timeouts, "cap_s", "synthesis.timeouts")),
            ),
            n_locality_prompts=int(need(requests, "n_locality_prompts", "synthesis.edit_requests")),
            n_rephrase_prompts=int(need(requests, "n_rephrase_prompts", "synthesis.edit_requests")),
            study_counts=dict(params.get("study_counts") or {}),
        )
        if not 0.0 < settings.reliability_fraction < 1.0:
            raise SynthesisSettingsError(
                "synthesis.reliability_fraction must lie strictly between 0 and 1, got "
                f"{settings.reliability_fraction}"
            )
        if settings.min_items_per_api < 2:
            raise SynthesisSettingsError(
                "synthesis.min_items_per_api must be at least 2 (one reliability and one "
                f"generalization item per API), got {settings.min_items_per_api}"
            )
        return settings
