"""The editing hyperparameter rule of benchmarks/tune_editing.py: development requests that no
benchmark item shares a problem with, one search budget per method starting from the derived
values, a fixed selection order, and a configuration that holds the recorded winners."""

import importlib.util
import json
import math

import pandas as pd
import pytest
import yaml

from apiedit_kedro.apis.catalog import catalog_to_records
from apiedit_kedro.apis.mapping import parse_mappings
from apiedit_kedro.editing import METHODS
from apiedit_kedro.pipelines.synthesis.nodes import _benchmark_pool
from apiedit_kedro.problems import mbpp_problems
from tests.kedro_helpers import PROJECT_ROOT, mbpp_path

SCRIPT = PROJECT_ROOT / "benchmarks" / "tune_editing.py"
# (layers, d_ff) of each searched model, read off its model config
SHAPES = {"base": (18, 2048), "smollm2_135m": (30, 1536)}
GEMMA_LAYERS = SHAPES["base"][0]


@pytest.fixture(scope="module")
def tuning():
    spec = importlib.util.spec_from_file_location("tune_editing", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _yaml(relative: str) -> dict:
    return yaml.safe_load((PROJECT_ROOT / relative).read_text())


def test_development_requests_share_no_problem_with_the_benchmark(tuning):
    records = [json.loads(line) for line in mbpp_path().open()]
    excluded = _yaml("conf/base/parameters_synthesis.yml")["synthesis"]["excluded_mbpp_ids"]
    rebuilt = tuning.build_dev_requests(records, _yaml("data/01_raw/api_catalog.yml"), excluded)
    frozen = json.loads(tuning.DEV_REQUESTS_PATH.read_text())
    assert rebuilt == frozen, "edit_tuning_requests.json is stale: re-run tune_editing.py --freeze"
    assert len(frozen) == tuning.DEV_COUNT
    assert len({r["api_id"] for r in frozen}) == len(frozen), "one request per API"

    problems = pd.DataFrame(mbpp_problems(records))
    benchmark_pool = set(_benchmark_pool(problems, excluded)["problem_id"])
    used = {r["source_problem_id"] for r in frozen}
    used |= {p for r in frozen for p in r["locality_problem_ids"]}
    assert used and not used & benchmark_pool
    catalog = catalog_to_records(_yaml("data/01_raw/api_catalog.yml"))
    new_names = {m.api_id: m.new_name for m in parse_mappings(catalog)}
    for request in frozen:
        # the rewritten solution cut at the new API's first call, the subject ending the prompt
        assert request["target_new"].lstrip().startswith(new_names[request["api_id"]])
        assert new_names[request["api_id"]] not in request["prompt"]
        assert request["prompt"].endswith(request["subject"])
        assert not request["prompt"][-1].isspace()


@pytest.mark.parametrize("env", sorted(SHAPES))
def test_every_method_gets_the_same_budget_starting_from_the_derived_values(tuning, env):
    layers, d_ff = SHAPES[env]
    assert set(tuning.GRIDS) == set(SHAPES)
    assert set(tuning.GRIDS[env]) == set(METHODS)
    sizes = {method: len(tuning.candidates(method, env)) for method in METHODS}
    assert set(sizes.values()) == {4}, sizes

    def depth(published_layer: int) -> int:
        return math.floor(published_layer * layers / 32 + 0.5)

    derived_lambda = round(15000 * d_ff / 11008)
    derived = {
        "ft": {"layers": [depth(21)], "norm_constraint": 1.0e-4},
        "grace": {"layers": [depth(27)], "edit_lr": 1.0},
        "rome": {"layers": [depth(5)], "v_lr": 0.5},
        "memit": {"mom2_update_weight": derived_lambda, "v_lr": 0.5},
        "pmet": {"mom2_update_weight": derived_lambda, "v_lr": 0.5},
    }
    assert {m: tuning.candidates(m, env)[0] for m in METHODS} == derived
    for method in METHODS:
        corners = tuning.candidates(method, env)
        assert len({json.dumps(c, sort_keys=True) for c in corners}) == 4, corners

    # the other corners sit where Gemma 3's do, relative to depth and to the derived lambda
    gemma = {m: tuning.candidates(m, "base")[-1] for m in METHODS}
    for method in ("ft", "grace", "rome"):
        (gemma_layer,) = gemma[method]["layers"]
        expected = round(gemma_layer * layers / GEMMA_LAYERS)
        assert tuning.candidates(method, env)[-1]["layers"] == [expected], method
    for method in ("memit", "pmet"):
        ratio = (
            gemma[method]["mom2_update_weight"]
            / tuning.candidates(method, "base")[0]["mom2_update_weight"]
        )
        expected = round(derived_lambda * ratio)
        assert tuning.candidates(method, env)[-1]["mom2_update_weight"] == expected, method


def test_the_winner_has_most_successes_then_locality_then_rewrite_accuracy_then_speed(tuning):
    keys = ("name", "successes", "locality_mean", "rewrite_acc_mean", "seconds_mean")

    def best(*summaries):
        rows = [dict(zip(keys, s, strict=True)) for s in summaries]
        return tuning.best_candidate(rows)["name"]

    assert best(("a", 1, 1.0, 0.9, 1), ("b", 2, 0.5, 0.1, 99)) == "b"
    assert best(("a", 2, 0.9, 0.9, 1), ("b", 2, 1.0, 0.1, 99)) == "b"
    assert best(("a", 2, 1.0, 0.5, 1), ("b", 2, 1.0, 0.6, 99)) == "b"
    assert best(("a", 2, 1.0, 0.6, 5), ("b", 2, 1.0, 0.6, 4)) == "b"


@pytest.mark.parametrize(
    ("env", "conf_file"),
    [
        ("base", "conf/base/parameters_editing.yml"),
        ("smollm2_135m", "conf/smollm2_135m/parameters_editing.yml"),
    ],
)
def test_the_configuration_holds_the_recorded_winners(tuning, env, conf_file):
    report = json.loads(tuning.result_path(env).read_text())
    configured = _yaml(conf_file)
    assert set(report["methods"]) == set(METHODS)
    for method, record in report["methods"].items():
        hparams = configured[method]["hparams"]
        assert {key: hparams[key] for key in record["winner"]} == record["winner"], method
        assert record["winner"] in [c["override"] for c in record["candidates"]]
        assert len(record["candidates"]) == len(tuning.candidates(method, env))
        assert record["winner"] == tuning.best_candidate(record["candidates"])["override"]
