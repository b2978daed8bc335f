"""The API catalogue: the shipped file is valid, and every kind of bad entry names itself."""

from pathlib import Path

import pytest
import yaml

from apiedit_kedro.apis.catalog import CatalogError, catalog_to_records

CATALOG = Path(__file__).resolve().parents[2] / "data" / "01_raw" / "api_catalog.yml"


def _entry(**overrides):
    entry = {
        "old": "math.sqrt",
        "new": "math.square_root_v2",
        "kind": "rename",
        "usage": {"usage": "same"},
        "old_signature": "math.sqrt(x, /)",
        "new_signature": "math.square_root_v2(x, /)",
        "doc": "Square root.",
    }
    entry.update(overrides)
    return entry


def test_shipped_catalogue_is_valid_and_a_third_changes_usage():
    records = catalog_to_records(yaml.safe_load(CATALOG.read_text()))
    assert len(records) >= 50
    assert sum(r["changes_usage"] for r in records) * 3 >= len(records)
    assert len({r["new_qualname"] for r in records}) == len(records)
    assert all(r["doc"] and "\n" not in r["doc"] for r in records)


def test_valid_entry_becomes_a_mapping_record():
    (record,) = catalog_to_records({"apis": [_entry()]})
    assert record["api_id"] == "math.sqrt"
    assert record["impl"] == '{"usage": "same"}'


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"old": "nosuchmodule.f"}, r"#0 \(nosuchmodule.f\):.*names no importable module"),
        ({"old": "math.no_such_function"}, r"#0 \(math.no_such_function\).*has no attribute"),
        (
            {"old": "builtins.str.split", "new": "my_split", "kind": "relocate"},
            "is a method of the builtin type 'str'",
        ),
        ({"new": "math.floor"}, "new name 'floor' already exists in module 'math'"),
        ({"new": "len", "kind": "relocate"}, "new name 'len' already exists in builtins"),
        ({"new": "os.square_root_v2"}, "rename keeps the module"),
        ({"kind": "move"}, "kind 'move' is unknown"),
        ({"usage": {"usage": "reorder"}}, "reorder needs 'order'.*got None"),
        (
            {"usage": {"usage": "reorder", "order": [0, 0]}},
            "non-identity permutation.*got \\[0, 0\\]",
        ),
        (
            {
                "old": "itertools.groupby",
                "new": "my_groupby_x",
                "kind": "relocate",
                "usage": {"usage": "rename_keywords", "map": {"key": "k"}},
            },
            "only supports usage 'same'",
        ),
        ({"doc": ""}, r"missing fields \['doc'\]"),
        (
            {
                "old": "math.pi",
                "new": "math.pi_v2",
                "usage": {"usage": "keyword_only", "names": ["x"]},
            },
            "is a constant, so its new name can only alias it",
        ),
        (
            {
                "old": "builtins.range",
                "new": "my_range_x",
                "kind": "relocate",
                "usage": {"usage": "keyword_only", "names": ["start", "stop"], "forms": [["stop"]]},
            },
            r"form \['stop'\] leaves \['start'\] without a value",
        ),
        (
            {
                "old": "builtins.max",
                "new": "my_max_x",
                "kind": "relocate",
                "usage": {"usage": "pack_varargs", "iterable_form": "yes"},
            },
            "'iterable_form' must be true or false",
        ),
    ],
)
def test_bad_entries_name_the_entry_and_the_problem(overrides, message):
    with pytest.raises(CatalogError, match=message):
        catalog_to_records({"apis": [_entry(**overrides)]})


def test_duplicate_entries_are_rejected():
    with pytest.raises(CatalogError, match=r"#1 \(math.sqrt\): .*old API 'math.sqrt' is also used"):
        catalog_to_records({"apis": [_entry(), _entry(new="math.other_root_v2")]})
    with pytest.raises(
        CatalogError,
        match=r"#1 \(math.floor\): .*new name 'math.square_root_v2' is also used by api_id 'math.sqrt'",
    ):
        catalog_to_records({"apis": [_entry(), _entry(old="math.floor")]})


def test_missing_apis_list_is_rejected():
    with pytest.raises(CatalogError, match="top-level `apis:` list"):
        catalog_to_records({"entries": []})
