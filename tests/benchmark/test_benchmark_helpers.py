"""Unit tests of the benchmark engine's pure helpers (no sandbox)."""

import pytest

from apiedit_kedro.benchmark import (
    SynthesisSettings,
    SynthesisSettingsError,
    call_context,
    choose_subjects,
    new_api_call_position,
    sequential_order,
    split_items,
    timeout_seconds,
    validated_steps,
)
from apiedit_kedro.benchmark.settings import TimeoutRule


def test_split_is_seeded_and_keeps_both_subsets_non_empty():
    problems = [f"MBPP/{i}" for i in range(11, 20)]
    first = split_items("math.sqrt", problems, seed=1, fraction=1 / 3)
    assert first == split_items("math.sqrt", list(reversed(problems)), seed=1, fraction=1 / 3)
    assert sum(v == "reliability" for v in first.values()) == 3
    reseeded = [split_items("math.sqrt", problems, seed=s, fraction=1 / 3) for s in range(2, 6)]
    assert any(split != first for split in reseeded)
    for size in (2, 3):
        small = split_items("re.sub", problems[:size], seed=0, fraction=1 / 3)
        assert sorted(set(small.values())) == ["generalization", "reliability"]


def test_validated_steps_cover_the_checkpoints_and_every_small_step():
    assert validated_steps(55, 8) == [1, 2, 3, 4, 5, 6, 7, 8, 16, 32, 55]
    assert validated_steps(3, 8) == [1, 2, 3]
    assert validated_steps(20, 2) == [1, 2, 4, 8, 16, 20]


def test_sequential_order_is_a_seeded_permutation_independent_of_input_order():
    apis = ["a", "b", "c", "d", "e"]
    order = sequential_order(apis, 7)
    assert sorted(order) == apis
    assert order == sequential_order(list(reversed(apis)), 7)
    assert any(sequential_order(apis, seed) != order for seed in range(8, 12))


def test_call_context_moves_trailing_whitespace_into_the_target():
    source = "import math\ndef f(x):\n    return math.square_root_v2(number=x) + 1\n"
    prompt, target = call_context(source, "square_root_v2")
    assert prompt.endswith("return math.")
    assert target == "square_root_v2(number=x)"
    source = "def f(xs):\n    return my_builtin_len(container=xs)\n"
    prompt, target = call_context(source, "my_builtin_len")
    assert prompt.endswith("return") and not prompt[-1].isspace()
    assert target == " my_builtin_len(container=xs)"


def test_new_api_call_position_covers_attribute_calls_and_values():
    source = "import math\ndef f(x):\n    return math.square_root_v2(x) + 1\n"
    start, end = new_api_call_position(source, "square_root_v2")
    assert source[start:end] == "square_root_v2(x)"
    chained = "def f(xs):\n    return list(my_itertools_chain.from_iterable(xs))\n"
    start, end = new_api_call_position(chained, "my_itertools_chain")
    assert chained[start:end] == "my_itertools_chain.from_iterable(xs)"
    value = "def f(xs):\n    return list(map(my_cmath_polar, xs))\n"
    start, end = new_api_call_position(value, "my_cmath_polar")
    assert value[start:end] == "my_cmath_polar"


def test_subjects_are_extended_until_no_other_api_shares_them():
    prompts = {
        "re.findall": ["def f(t):\n    return (re.", "x = re."],
        "re.split": ["def g(t):\n    return (re."],
        "builtins.len": ["def h(xs):\n    return"],
        "builtins.abs": ["def k(v):\n    return"],
    }
    subjects = choose_subjects(prompts)
    assert subjects[("re.findall", 1)] == "re."
    # `(re.` and `return (re.` occur for both re APIs, so the function header decides
    assert subjects[("re.findall", 0)] == "f(t):\n    return (re."
    assert subjects[("re.split", 0)] == "g(t):\n    return (re."
    assert subjects[("builtins.len", 0)] == "h(xs):\n    return"
    for (api_id, index), subject in subjects.items():
        assert prompts[api_id][index].endswith(subject)
    by_api = {}
    for (api_id, _), subject in subjects.items():
        by_api.setdefault(subject, set()).add(api_id)
    assert all(len(apis) == 1 for apis in by_api.values())


def test_timeouts_follow_the_sandbox_rule():
    rule = TimeoutRule(min_unit_s=1.0, factor=4.0, cap_s=60.0)
    assert timeout_seconds(0.01, 3, rule) == 4.0
    assert timeout_seconds(2.0, 3, rule) == 9.0
    assert timeout_seconds(100.0, 3, rule) == 60.0
    # jitter of a slow reference's runtime does not change the timeout
    assert timeout_seconds(1.1, 1, rule) == timeout_seconds(1.9, 1, rule) == 9.0


def test_settings_name_a_missing_or_bad_parameter(synthesis_params):
    SynthesisSettings.from_params(synthesis_params)
    missing = {k: v for k, v in synthesis_params.items() if k != "min_items_per_api"}
    with pytest.raises(SynthesisSettingsError, match=r"synthesis\.min_items_per_api is missing"):
        SynthesisSettings.from_params(missing)
    with pytest.raises(SynthesisSettingsError, match="reliability_fraction"):
        SynthesisSettings.from_params({**synthesis_params, "reliability_fraction": 1.0})
