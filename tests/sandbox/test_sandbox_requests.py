"""Request validation: every malformed request is rejected, naming index and field, before any run."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from sandbox_helpers import ordinary_request, request

from apiedit_kedro.sandbox import SandboxRequestError, execute
from apiedit_kedro.sandbox.requests import prepare_tasks


@pytest.mark.parametrize(
    ("broken", "field"),
    [
        ({"code": None}, "code"),
        ({"tests": "assert add_one(1) == 2"}, "tests"),
        ({"tests": [42]}, "tests[0]"),
        ({"tests": ["assert (("]}, "tests[0]"),
        ({"tests": ["return 1"]}, "tests[0]"),  # parses, but does not compile
        ({"world": "edited-ish"}, "world"),
        ({"timeout_s": "3"}, "timeout_s"),
        ({"timeout_s": True}, "timeout_s"),
        ({"timeout_s": -1.0}, "timeout_s"),
        ({"timeout_s": float("nan")}, "timeout_s"),
        ({"unit_timeout_s": 0}, "unit_timeout_s"),
        ({"setup": "def broken(:"}, "setup"),
        ({"setup": "return 2"}, "setup"),
        ({"memory_limit_mb": 1}, "memory_limit_mb"),
        ({"mappings": [{"api_id": "nope.f", "old_qualname": "nope_module.f"}]}, "mappings"),
    ],
)
def test_bad_field_names_request_index_and_field(broken, field):
    requests = [ordinary_request(), ordinary_request(), {**ordinary_request(), **broken}]
    with pytest.raises(SandboxRequestError, match=re.escape(f"request 2, field '{field}'")):
        prepare_tasks(requests)


def test_missing_required_key_is_named():
    bad = ordinary_request()
    del bad["code"]
    with pytest.raises(SandboxRequestError, match=r"request 0, field 'code': missing"):
        execute([bad], progress=False)


def test_non_dict_request_is_rejected():
    with pytest.raises(SandboxRequestError, match=r"request 1: expected a dict"):
        prepare_tasks([ordinary_request(), "print(1)"])


def test_mapping_to_a_missing_module_is_rejected_with_api_id():
    mapping = {
        "api_id": "nosuchmodule.f",
        "old_qualname": "nosuchmodule.f",
        "new_qualname": "my_f",
        "kind": "relocate",
        "old_signature": "",
        "new_signature": "",
        "doc": "d",
        "impl": json.dumps({"usage": "same"}),
    }
    with pytest.raises(SandboxRequestError, match=r"request 0, field 'mappings'.*nosuchmodule"):
        prepare_tasks([request("x = 1", world="edited", mappings=[mapping])])


def test_constant_asserts_are_neither_run_nor_counted():
    task = prepare_tasks(
        [ordinary_request(tests=["assert True", "assert 1", "assert add_one(1) == 2", "assert 0"])]
    )[0]
    assert [index for index, _ in task["units"]] == [2, 3]
    assert task["asserts_total"] == 2


def test_parquet_style_values_are_accepted():
    row = ordinary_request(tests=np.array(["assert add_one(1) == 2"], dtype=object))
    row["timeout_s"] = np.float64(1.5)
    task = prepare_tasks([row])[0]
    assert task["units"] == [(0, "assert add_one(1) == 2")]
    assert task["timeout_s"] == 1.5


def test_empty_batch_returns_empty_list():
    assert execute([], progress=False) == []
