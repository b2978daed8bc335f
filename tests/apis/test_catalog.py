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
        ({"old": "nosuchmodule.f"}, r"#0 \(nosuchmodule.f\): no importable module"),
        ({"old": "math.no_such_function"}, r"#0 \(math.no_such_function\).*has no attribute"),
        (
            {"old": "builtins.str.split", "new": "my_split", "kind": "relocate"},
            "method or attribute",
        ),
        ({"new": "math.floor"}, r"clashes with an existing attribute of `math`"),
        ({"new": "len", "kind": "relocate"}, "clashes with the existing built-in"),
        ({"new": "os.square_root_v2"}, "must be <math>.<new identifier>"),
        ({"kind": "move"}, "kind `move`"),
        ({"usage": {"usage": "reorder"}}, r"missing \['order'\]"),
        ({"usage": {"usage": "reorder", "order": [0, 0]}}, "not a permutation"),
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
    ],
)
def test_bad_entries_name_the_entry_and_the_problem(overrides, message):
    with pytest.raises(CatalogError, match=message):
        catalog_to_records({"apis": [_entry(**overrides)]})


def test_duplicate_entries_are_rejected():
    with pytest.raises(CatalogError, match=r"#1 \(math.sqrt\): `math.sqrt` is catalogued twice"):
        catalog_to_records({"apis": [_entry(), _entry(new="math.other_root_v2")]})
    with pytest.raises(CatalogError, match="used by two entries"):
        catalog_to_records({"apis": [_entry(), _entry(old="math.floor")]})


def test_missing_apis_list_is_rejected():
    with pytest.raises(CatalogError, match="top-level `apis:` list"):
        catalog_to_records({"entries": []})
