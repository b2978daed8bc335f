"""Adoption labels and the error taxonomy on hand-written programs run through the real sandbox.

The programs go the pipeline's own way: generation rows -> `study.execution.build_requests` ->
`sandbox.execute` -> `execution_table` -> `label_executions`, so the dynamic evidence (the call
counter, the first failure) is the sandbox's, not a hand-written stand-in.
"""

import json

import pandas as pd
import pytest

from apiedit_kedro.metrics.adoption import (
    MissingColumnsError,
    adoption_summary,
    label_executions,
    with_usage_change,
)
from apiedit_kedro.metrics.taxonomy import error_taxonomy
from apiedit_kedro.sandbox import execute
from apiedit_kedro.study.execution import build_requests, execution_table

PROMPT = "import re\n\ndef f(s):\n"
TESTS = ["assert f('aab') == 'bbb'", "assert f('') == ''"]
SUB = {
    "api_id": "re.sub",
    "old_qualname": "re.sub",
    "new_qualname": "re.substitute_v2",
    "kind": "rename",
    "old_signature": "re.sub(pattern, repl, string, count=0, flags=0)",
    "new_signature": "re.substitute_v2(*, pattern, repl, string, count=0, flags=0)",
    "doc": "re.substitute_v2 replaces re.sub; pattern, repl and string are keyword-only.",
    "impl": json.dumps({"usage": "keyword_only", "names": ["pattern", "repl", "string"]}),
    "seq_order": 1,
}
SEARCH = {
    "api_id": "re.search",
    "old_qualname": "re.search",
    "new_qualname": "my_re_search",
    "kind": "relocate",
    "old_signature": "re.search(pattern, string, flags=0)",
    "new_signature": "my_re_search(string, pattern, flags=0)",
    "doc": "my_re_search(string, pattern) replaces re.search.",
    "impl": json.dumps({"usage": "reorder", "order": [1, 0]}),
    "seq_order": 0,
}

# name -> (completion, expected label, expected fault, expected failure class)
PROGRAMS = {
    "correct": (
        "    return re.substitute_v2(pattern='a', repl='b', string=s)\n",
        "correct_adoption",
        "",
        "",
    ),
    "aliased_correct": (
        "    import re as regex\n    return regex.substitute_v2(pattern='a', repl='b', string=s)\n",
        "correct_adoption",
        "",
        "",
    ),
    "workaround": ("    return s.replace('a', 'b')\n", "workaround", "", ""),
    "deprecated": ("    return re.sub('a', 'b', s)\n", "deprecated_use", "", "removed_api"),
    "old_positional_form": (
        "    return re.substitute_v2('a', 'b', s)\n",
        "faulty_adoption",
        "wrong_usage",
        "new_api_misuse",
    ),
    "missing_keyword": (
        "    return re.substitute_v2(pattern='a', string=s)\n",
        "faulty_adoption",
        "wrong_usage",
        "new_api_misuse",
    ),
    "raises_inside_new_api": (
        "    return re.substitute_v2(pattern='(', repl='b', string=s)\n",
        "faulty_adoption",
        "wrong_usage",
        "new_api_misuse",
    ),
    "wrong_result": (
        "    return re.substitute_v2(pattern='a', repl='c', string=s)\n",
        "faulty_adoption",
        "test_failure",
        "assertion_failure",
    ),
    "top_level_fails": (
        "    return s\nre.substitute_v2(pattern='a', repl='b', string=undefined_name)\n",
        "faulty_adoption",
        "compile",
        "other_runtime_error",
    ),
    "syntax_error": (
        "    return re.substitute_v2(pattern='a', repl='b', string=s\n",
        "other_failure",
        "",
        "syntax_error",
    ),
    "unrelated_error": ("    return s.nope()\n", "other_failure", "", "other_runtime_error"),
    "loops_forever": ("    while True:\n        pass\n", "other_failure", "", "timeout"),
    "other_api_deprecated": (
        "    re.search('a', s)\n    return s.replace('a', 'b')\n",
        "deprecated_use",
        "",
        "removed_api",
    ),
}


def _generations() -> pd.DataFrame:
    rows = []
    for index, (name, (completion, *_)) in enumerate(PROGRAMS.items()):
        rows.append(
            {
                "model": "hand",
                "method": "rome",
                "regime": "sequential",
                "edit_step": 2,
                "api_id": "re.sub",
                "problem_id": "HumanEval/hand",
                "subset": "reliability",
                "sample_idx": index,
                "completion": completion,
                "program": PROMPT + completion,
                "world_api_ids": json.dumps(["re.search", "re.sub"]),
                "name": name,
            }
        )
    return pd.DataFrame(rows)


def _benchmark() -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                # the re.sub item, validated in the sequential world after re.search and re.sub
                "item_id": "HumanEval/hand@re.sub",
                "problem_id": "HumanEval/hand",
                "api_id": "re.sub",
                "subset": "reliability",
                "usage_kind": "keyword_only",
                "usage_enforced": True,
                "world_api_ids": ["re.sub"],
                "sequential_steps": [2],
                "tests": TESTS,
                "test_setup": "",
                "prompt": PROMPT,
                "timeout_s": 2.0,
            }
        ]
    )


@pytest.fixture(scope="module")
def executions() -> pd.DataFrame:
    generations = _generations()
    requests = build_requests(
        generations, _benchmark(), pd.DataFrame([SUB, SEARCH]), default_timeout_s=2.0
    )
    results = execute(requests, workers=2, progress=False)
    table = execution_table(generations, results)
    return table.assign(name=generations["name"])


@pytest.mark.parametrize("name", list(PROGRAMS))
def test_label_of_each_hand_written_program(executions, name):
    labels = label_executions(executions, pd.DataFrame([SUB, SEARCH]))
    row = labels[executions["name"] == name].iloc[0]
    _, label, fault, _ = PROGRAMS[name]
    assert (row["label"], row["fault"]) == (label, fault), executions[executions["name"] == name][
        ["error_type", "error_message", "new_api_calls_by_api"]
    ].to_dict("records")


@pytest.mark.parametrize("name", list(PROGRAMS))
def test_failure_class_of_each_hand_written_program(executions, name):
    taxonomy_input = executions[executions["name"] == name]
    table = error_taxonomy(taxonomy_input, pd.DataFrame([SUB, SEARCH]))
    expected = PROGRAMS[name][3]
    counted = table[table["count"] > 0]
    if expected:
        assert list(counted["failure_class"]) == [expected]
        assert counted["share"].iloc[0] == 1.0
    else:
        assert counted.empty


def test_specificity_samples_get_no_label(executions):
    specificity = executions.assign(subset="specificity")
    assert label_executions(specificity, pd.DataFrame([SUB, SEARCH])).empty


def test_summary_counts_shares_and_reference_rate(executions):
    labels = with_usage_change(
        label_executions(executions, pd.DataFrame([SUB, SEARCH])), _benchmark()
    )
    summary = adoption_summary(labels).set_index("measure")
    assert summary["usage_enforced"].all()
    n = len(PROGRAMS)
    assert (summary["n_samples"] == n).all()
    expected_labels = pd.Series([label for _, label, _, _ in PROGRAMS.values()]).value_counts()
    for label, count in expected_labels.items():
        assert summary.loc[label, "count"] == count
        assert summary.loc[label, "share"] == pytest.approx(count / n)
    # completions that mention re.substitute_v2 at all (the syntax error cannot be parsed)
    mentions = sum(
        "substitute_v2" in completion and name != "syntax_error"
        for name, (completion, *_) in PROGRAMS.items()
    )
    assert summary.loc["new_api_reference", "count"] == mentions
    faults = summary.loc[[m for m in summary.index if m.startswith("faulty_adoption/")], "count"]
    assert faults.sum() == summary.loc["faulty_adoption", "count"]
    assert (summary["ci_low"] <= summary["share"]).all()
    assert (summary["share"] <= summary["ci_high"]).all()


def test_missing_columns_are_named(executions):
    with pytest.raises(MissingColumnsError, match="completion, new_api_calls_by_api"):
        label_executions(
            executions.drop(columns=["completion", "new_api_calls_by_api"]),
            pd.DataFrame([SUB, SEARCH]),
        )


def test_summary_keeps_usage_enforced_items_apart_from_rename_only_ones(executions):
    """The same samples, half of them on a rename-only twin item: two groups, counts split."""
    twin = executions["sample_idx"] % 2 == 1
    twins = executions.assign(problem_id=executions["problem_id"].where(~twin, "HumanEval/twin"))
    benchmark = pd.concat(
        [
            _benchmark(),
            _benchmark().assign(
                item_id="HumanEval/twin@re.sub",
                problem_id="HumanEval/twin",
                usage_kind="same",
                usage_enforced=False,
            ),
        ],
        ignore_index=True,
    )
    labels = with_usage_change(label_executions(twins, pd.DataFrame([SUB, SEARCH])), benchmark)
    summary = adoption_summary(labels)
    samples = summary.groupby("usage_enforced")["n_samples"].first().to_dict()
    assert samples == {False: int(twin.sum()), True: int((~twin).sum())}
    labelled = labels.groupby("usage_enforced")["label"].value_counts()
    for (enforced, label), count in labelled.items():
        row = summary[(summary["usage_enforced"] == enforced) & (summary["measure"] == label)]
        assert int(row["count"].iloc[0]) == count


def test_labels_of_an_item_the_benchmark_lacks_are_refused(executions):
    labels = label_executions(executions, pd.DataFrame([SUB, SEARCH]))
    with pytest.raises(ValueError, match=r"HumanEval/hand with re\.sub"):
        with_usage_change(labels, _benchmark().assign(problem_id="HumanEval/other"))


def test_summary_without_the_usage_column_names_it(executions):
    labels = label_executions(executions, pd.DataFrame([SUB, SEARCH]))
    with pytest.raises(MissingColumnsError, match="usage_enforced"):
        adoption_summary(labels)
