"""Load and validate the API catalogue (`data/01_raw/api_catalog.yml`) into API mapping records.

The catalogue is hand-edited data; every entry is checked here, before any expensive work, and a bad
entry raises `CatalogError` naming the entry (index and old API) and the fix. The records follow the
`api_mapping` contract (`apis.mapping.ApiMapping.from_record` reads them).
"""

import builtins
import importlib
import json
import keyword
from collections.abc import Mapping
from dataclasses import dataclass

from apiedit_kedro.apis.mapping import CONSTANT_TYPES, RECORD_FIELDS, ApiMapping, MappingError

KINDS = ("rename", "relocate")
USAGE_FIELDS = {
    "same": set(),
    "reorder": {"order"},
    "pack_varargs": set(),
    "keyword_only": {"names"},
    "rename_keywords": {"map"},
}
REQUIRED_FIELDS = ("old", "new", "kind", "usage", "old_signature", "new_signature", "doc")
MAPPING_COLUMNS = [*RECORD_FIELDS, "changes_usage"]


class CatalogError(ValueError):
    """A catalogue entry is invalid; the message names the entry and the fix."""


@dataclass(frozen=True)
class _Entry:
    index: int
    old: str

    def fail(self, problem: str, fix: str) -> CatalogError:
        return CatalogError(f"api_catalog entry #{self.index} ({self.old}): {problem}. Fix: {fix}.")


def _split_module_attribute(qualname: str) -> tuple[str, str]:
    """Longest importable module prefix of `qualname` and the remaining attribute path."""
    parts = qualname.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:cut])
        try:
            importlib.import_module(module_name)
        except ImportError:
            continue
        return module_name, ".".join(parts[cut:])
    raise ModuleNotFoundError(qualname)


def _check_old_api(entry: _Entry, old: str) -> tuple[str, str]:
    try:
        module_name, attribute = _split_module_attribute(old)
    except ModuleNotFoundError:
        raise entry.fail(
            f"no importable module in `{old}`",
            "write the old API as <module>.<function>, e.g. math.sqrt or builtins.sorted",
        ) from None
    if "." in attribute:
        raise entry.fail(
            f"`{old}` is a method or attribute of `{module_name}.{attribute.split('.')[0]}`, "
            "not a module-level API (methods of builtin types and classes cannot be removed)",
            "choose a module-level function or class",
        )
    module = importlib.import_module(module_name)
    if not hasattr(module, attribute):
        raise entry.fail(
            f"module `{module_name}` has no attribute `{attribute}`",
            f"check the spelling against dir({module_name})",
        )
    target = getattr(module, attribute)
    if not callable(target) and not isinstance(target, CONSTANT_TYPES):
        raise entry.fail(
            f"`{old}` is neither callable nor an int/float/str constant",
            "choose a function, a class or a constant",
        )
    return module_name, attribute


def _check_new_name(entry: _Entry, old_module: str, new: str, kind: str) -> None:
    if kind == "relocate":
        if "." in new or not new.isidentifier() or keyword.iskeyword(new):
            raise entry.fail(
                f"relocated name `{new}` is not a bare identifier",
                "a relocated API is a new built-in such as my_os_path_join",
            )
        if hasattr(builtins, new):
            raise entry.fail(f"new name `{new}` clashes with the existing built-in", "rename it")
        return
    new_module, _, new_name = new.rpartition(".")
    if new_module != old_module or not new_name.isidentifier():
        raise entry.fail(
            f"renamed API `{new}` must be <{old_module}>.<new identifier>",
            "a rename keeps the module; use kind: relocate to move it",
        )
    if hasattr(importlib.import_module(old_module), new_name):
        raise entry.fail(
            f"new name `{new}` clashes with an existing attribute of `{old_module}`",
            "pick an unused name (the scheme <name>_v2 avoids clashes)",
        )


def _check_usage(entry: _Entry, usage: object) -> dict:
    if not isinstance(usage, Mapping) or usage.get("usage") not in USAGE_FIELDS:
        raise entry.fail(
            f"usage {usage!r} is not one of {sorted(USAGE_FIELDS)}",
            "write usage: {usage: same} or another kind of the mapping contract",
        )
    kind = usage["usage"]
    missing = USAGE_FIELDS[kind] - set(usage)
    extra = set(usage) - USAGE_FIELDS[kind] - {"usage"}
    if missing or extra:
        raise entry.fail(
            f"usage `{kind}` needs fields {sorted(USAGE_FIELDS[kind])}, "
            f"missing {sorted(missing)}, unexpected {sorted(extra)}",
            "see the usage vocabulary at the top of the catalogue",
        )
    if kind == "reorder" and sorted(usage["order"]) != list(range(len(usage["order"]))):
        raise entry.fail(f"reorder {usage['order']} is not a permutation", "use e.g. [1, 0]")
    if kind == "keyword_only" and not all(str(n).isidentifier() for n in usage["names"]):
        raise entry.fail(f"keyword names {usage['names']} are not identifiers", "rename them")
    if kind == "rename_keywords" and not all(
        str(k).isidentifier() and str(v).isidentifier() for k, v in usage["map"].items()
    ):
        raise entry.fail(f"keyword map {usage['map']} has non-identifiers", "rename them")
    return dict(usage)


def catalog_to_records(catalog: Mapping) -> list[dict]:
    """Validate the loaded YAML (`{"apis": [...]}`) and return one mapping record per entry."""
    entries = catalog.get("apis") if isinstance(catalog, Mapping) else None
    if not isinstance(entries, list) or not entries:
        raise CatalogError("api_catalog: expected a top-level `apis:` list with at least one entry")
    records: list[dict] = []
    seen_old: set[str] = set()
    seen_new: set[str] = set()
    for index, raw in enumerate(entries):
        entry = _Entry(index, str(raw.get("old", "?")) if isinstance(raw, Mapping) else "?")
        if not isinstance(raw, Mapping):
            raise entry.fail("the entry is not a mapping", "write it as `- old: ...` fields")
        missing = [field for field in REQUIRED_FIELDS if not raw.get(field)]
        if missing:
            raise entry.fail(f"missing fields {missing}", f"every entry needs {REQUIRED_FIELDS}")
        old, new, kind = str(raw["old"]), str(raw["new"]), str(raw["kind"])
        if kind not in KINDS:
            raise entry.fail(f"kind `{kind}` is not one of {KINDS}", "use rename or relocate")
        old_module, _ = _check_old_api(entry, old)
        _check_new_name(entry, old_module, new, kind)
        usage = _check_usage(entry, raw["usage"])
        if old in seen_old:
            raise entry.fail(f"`{old}` is catalogued twice", "keep one entry per old API")
        if new in seen_new:
            raise entry.fail(f"new name `{new}` is used by two entries", "give each its own name")
        seen_old.add(old)
        seen_new.add(new)
        record = {
            "api_id": old,
            "old_qualname": old,
            "new_qualname": new,
            "kind": kind,
            "old_signature": str(raw["old_signature"]),
            "new_signature": str(raw["new_signature"]),
            "doc": " ".join(str(raw["doc"]).split()),
            "impl": json.dumps(usage, sort_keys=True),
            "changes_usage": usage["usage"] != "same",
        }
        try:
            # builds the adapter once: catches usages the old API's signature cannot take
            ApiMapping.from_record(record)
        except MappingError as error:
            raise entry.fail(str(error), "change the usage or pick another API") from error
        records.append(record)
    return records
