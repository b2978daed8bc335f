"""Ten sequential edits on a tiny model: every edit is applied, drift is recorded, restore is exact."""

from __future__ import annotations

import pytest
from editing_helpers import tiny_covariance

from apiedit_kedro.editing import apply_edits, combined_drift, weight_checksum
from apiedit_kedro.editing.grace import GraceAdapter, query_at
from apiedit_kedro.metrics.edit_metrics import rewrite_accuracy
from apiedit_kedro.models.tiny import build_tiny_model

NAMES = (
    "heappush",
    "heappop",
    "insort",
    "bisect",
    "fnmatch",
    "dedent",
    "indent",
    "wrap",
    "fill",
    "shorten",
)


def _requests() -> list[dict]:
    return [
        {
            "prompt": f"def call_{i}(data, item):\n    return ",
            "target_new": f"{name}(data, item)",
            "edit_id": f"edit_{i}",
        }
        for i, name in enumerate(NAMES)
    ]


@pytest.mark.parametrize("method", ["ft", "grace", "rome", "memit", "pmet"])
def test_ten_sequential_edits_are_all_applied_with_drift(method, tiny_params, covariance_dir):
    model, tokenizer = build_tiny_model("qwen2", seed=0)
    covariance = tiny_covariance(model, tokenizer, tiny_params, covariance_dir)
    checksum = weight_checksum(model)
    result = apply_edits(
        model,
        tokenizer,
        _requests(),
        method=method,
        hparams=tiny_params[method],
        covariance=covariance,
    )
    assert [s["edit_id"] for s in result.stats] == [f"edit_{i}" for i in range(10)]
    assert all(s["delta_norm"] > 0 for s in result.stats)
    if method == "grace":
        adapter = model.model.layers[1].mlp.down_proj
        assert isinstance(adapter, GraceAdapter) and len(adapter.keys) == 10
        assert [s["codebook_size"] for s in result.stats] == list(range(1, 11))
    else:
        drift = [s["drift_total"] for s in result.stats]
        assert all(d > 0 for d in drift)
        assert drift[-1] != drift[0]  # the accumulated delta moves with every edit
    if method in ("rome", "memit", "pmet"):
        ranks = {delta.left.shape[1] for delta in result.deltas.values()}
        assert ranks == {10}  # one rank-one factor per edit and layer
    result.restore(model)
    assert weight_checksum(model) == checksum


def test_drift_accumulates_over_successive_calls(tiny_params, covariance_dir):
    model, tokenizer = build_tiny_model("llama", seed=0)
    covariance = tiny_covariance(model, tokenizer, tiny_params, covariance_dir)
    checksum = weight_checksum(model)
    results = [
        apply_edits(
            model,
            tokenizer,
            [request],
            method="memit",
            hparams=tiny_params["memit"],
            covariance=covariance,
        )
        for request in _requests()[:3]
    ]
    drift = combined_drift(results)
    for name, value in drift.items():
        original = results[0].snapshot[name]
        assert (
            abs(value - float((model.get_parameter(name).detach() - original).norm()))
            < 1e-3 * value
        )
    for result in reversed(results):  # undo checkpoints newest first
        result.restore(model)
    assert weight_checksum(model) == checksum


# Mean teacher-forced rewrite accuracy over the ten requests on the tiny Qwen2 (conf/tiny): right
# after each request's own edit, and after all ten edits. README "Editing methods" reports these.
# Unedited: 0.0 for every request.
RETENTION = {
    "ft": (1.0, 0.851),
    "grace": (0.109, 0.109),
    "rome": (0.120, 0.009),
    "memit": (0.109, 0.019),
    "pmet": (0.089, 0.021),
}


def _rewrite(model, tokenizer, request) -> float:
    # GRACE's replace_last: teacher forcing queries the last prompt token, as generation would
    length = len(tokenizer(request["prompt"])["input_ids"])
    with query_at(model, length - 1):
        return rewrite_accuracy(model, tokenizer, request["prompt"], request["target_new"])


@pytest.mark.parametrize("method", list(RETENTION))
def test_earlier_edits_hold_after_later_ones_as_measured(method, tiny_params, covariance_dir):
    model, tokenizer = build_tiny_model("qwen2", seed=0)
    covariance = tiny_covariance(model, tokenizer, tiny_params, covariance_dir)
    requests = _requests()
    own = []
    for request in requests:
        apply_edits(
            model,
            tokenizer,
            [request],
            method=method,
            hparams=tiny_params[method],
            covariance=covariance,
        )
        own.append(_rewrite(model, tokenizer, request))
    after = [_rewrite(model, tokenizer, request) for request in requests]
    # one target token of one request moves a mean by ~0.01
    expected_own, expected_after = RETENTION[method]
    assert sum(own) / len(own) == pytest.approx(expected_own, abs=0.011)
    assert sum(after) / len(after) == pytest.approx(expected_after, abs=0.011)
    if method == "grace":  # distinct keys: later entries never overwrite earlier ones
        assert after == own
