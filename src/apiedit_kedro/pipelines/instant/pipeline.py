"""Instant editing: `<method>.instant_generations` and `<method>.instant_edit_log` per method."""

from kedro.pipeline import Pipeline

from apiedit_kedro.pipelines.regime_template import create_regime_pipeline


def create_pipeline(**kwargs) -> Pipeline:
    return create_regime_pipeline("instant")
