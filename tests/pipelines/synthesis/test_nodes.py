"""Unit tests of the pure helpers behind the synthesis nodes."""

from apiedit_kedro.pipelines.synthesis import nodes


def test_split_is_seeded_and_keeps_both_subsets_non_empty():
    problems = [f"MBPP/{i}" for i in range(11, 20)]
    first = nodes._split("math.sqrt", problems, seed=1, fraction=1 / 3)
    assert first == nodes._split("math.sqrt", list(reversed(problems)), seed=1, fraction=1 / 3)
    assert sum(v == "reliability" for v in first.values()) == 3
    reseeded = [nodes._split("math.sqrt", problems, seed=s, fraction=1 / 3) for s in range(2, 6)]
    assert any(split != first for split in reseeded)
    for size in (2, 3):
        small = nodes._split("re.sub", problems[:size], seed=0, fraction=1 / 3)
        assert sorted(set(small.values())) == ["generalization", "reliability"]


def test_a_problem_goes_to_its_rarest_used_api():
    valid = {
        "p1": (["builtins.len", "re.sub"], ["builtins.len", "re.sub"]),
        "p2": (["builtins.len"], ["builtins.len"]),
        "p3": (["re.sub", "math.tan"], ["re.sub"]),  # math.tan only imported: not a candidate
        "p4": (["builtins.len"], ["builtins.len"]),
    }
    assert nodes._assign_problems(valid) == {"re.sub": ["p1", "p3"], "builtins.len": ["p2", "p4"]}
    # ties go to the smaller api_id
    del valid["p4"]
    assert nodes._assign_problems(valid)["builtins.len"] == ["p1", "p2"]


def test_subject_ends_the_prompt_at_its_last_token():
    assert nodes._subject("def f(s):\n    return ") == "return "
    assert nodes._subject("def f(s):\n    x = 1\n    ") == "x = 1\n    "


def test_new_api_call_position_covers_attribute_calls_and_values():
    source = "import math\ndef f(x):\n    return math.square_root_v2(x) + 1\n"
    start, end = nodes._new_api_call_position(source, "square_root_v2")
    assert source[start:end] == "square_root_v2(x)"
    chained = "def f(xs):\n    return list(my_itertools_chain.from_iterable(xs))\n"
    start, end = nodes._new_api_call_position(chained, "my_itertools_chain")
    assert chained[start:end] == "my_itertools_chain.from_iterable(xs)"
    value = "def f(xs):\n    return list(map(my_cmath_polar, xs))\n"
    start, end = nodes._new_api_call_position(value, "my_cmath_polar")
    assert value[start:end] == "my_cmath_polar"


def test_timeouts_follow_the_sandbox_rule():
    rule = {"min_unit_s": 1.0, "factor": 4.0, "cap_s": 60.0}
    assert nodes._timeout_seconds(0.01, 3, rule) == 4.0
    assert nodes._timeout_seconds(2.0, 3, rule) == 9.0
    assert nodes._timeout_seconds(100.0, 3, rule) == 60.0
    # jitter of a slow reference's runtime does not change the timeout
    assert nodes._timeout_seconds(1.1, 1, rule) == nodes._timeout_seconds(1.9, 1, rule) == 9.0
