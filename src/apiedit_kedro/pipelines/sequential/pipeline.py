"""Sequential editing: `<method>.sequential_generations` and `<method>.sequential_edit_log`."""

from kedro.pipeline import Pipeline

from apiedit_kedro.pipelines.regime_template import create_regime_pipeline


def create_pipeline(**kwargs) -> Pipeline:
    return create_regime_pipeline("sequential")
