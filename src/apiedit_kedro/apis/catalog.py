"""Load the API catalogue (`data/01_raw/api_catalog.yml`) into API mapping records.

The catalogue is hand-edited data. This module checks only its YAML shape (a top-level `apis:`
list of entries with the required fields) and turns each entry into an `api_mapping` record; what
makes an API change valid (the old API exists at module level, the new name is free and of the
right form, the usage fits the old signature, no two entries share an old API or a new name) is
checked by `apis.mapping`, the same checks that every reader of an `api_mapping` row runs. All of
it happens before any expensive work, and a bad entry raises `CatalogError` naming the entry
(index and old API) and the fix.
"""

import json
from collections.abc import Mapping
from typing import Any

from apiedit_kedro.apis.mapping import (
    RECORD_FIELDS,
    ApiMapping,
    MappingError,
    check_mapping_set,
)

REQUIRED_FIELDS = ("old", "new", "kind", "usage", "old_signature", "new_signature", "doc")
MAPPING_COLUMNS = [*RECORD_FIELDS, "changes_usage"]


class CatalogError(ValueError):
    """A catalogue entry is invalid; the message names the entry and the fix."""


def _to_record(entry: Mapping[str, Any]) -> dict:
    usage = entry["usage"]
    return {
        "api_id": str(entry["old"]),
        "old_qualname": str(entry["old"]),
        "new_qualname": str(entry["new"]),
        "kind": str(entry["kind"]),
        "old_signature": str(entry["old_signature"]),
        "new_signature": str(entry["new_signature"]),
        "doc": " ".join(str(entry["doc"]).split()),
        "impl": json.dumps(dict(usage), sort_keys=True) if isinstance(usage, Mapping) else usage,
        "changes_usage": isinstance(usage, Mapping) and usage.get("usage") != "same",
    }


def catalog_to_records(catalog: Mapping) -> list[dict]:
    """Validate the loaded YAML (`{"apis": [...]}`) and return one mapping record per entry."""
    entries = catalog.get("apis") if isinstance(catalog, Mapping) else None
    if not isinstance(entries, list) or not entries:
        raise CatalogError("api_catalog: expected a top-level `apis:` list with at least one entry")
    records: list[dict] = []
    mappings: list[ApiMapping] = []
    for index, entry in enumerate(entries):
        old = entry.get("old", "?") if isinstance(entry, Mapping) else "?"
        label = f"api_catalog entry #{index} ({old})"
        if not isinstance(entry, Mapping):
            raise CatalogError(
                f"{label}: the entry is not a mapping. Fix: write `- old: ...` fields."
            )
        missing = [field for field in REQUIRED_FIELDS if not entry.get(field)]
        if missing:
            raise CatalogError(
                f"{label}: missing fields {missing}. Fix: every entry needs {REQUIRED_FIELDS}."
            )
        record = _to_record(entry)
        try:
            mappings.append(ApiMapping.from_record(record))
            check_mapping_set(mappings)
        except MappingError as error:
            raise CatalogError(f"{label}: {error}") from error
        records.append(record)
    return records
