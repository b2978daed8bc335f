"""API mapping records: validation and the usage adapters that build a new API from an old one.

An `api_mapping` row names an old std-lib API, the new API that replaces it and
an `impl` JSON saying how the call usage changes. `parse_mappings` validates rows before any
expensive work and `build_new_callable` turns the old object into the new callable.

Adapters are real Python functions generated from source text with the exact new signature, so
a wrong call raises the very TypeError CPython raises for that signature, naming the new function
(`my_os_path_join() takes 1 positional argument but 2 were given`). The generated body only
forwards the arguments in the old order. This code generation is hand-written, in the manner of
`dataclasses` and `collections.namedtuple`: generic signature-forging libraries (e.g. makefun)
create a function with a given signature but not the argument permutation, packing and keyword
translation that the study's usage changes need.
"""

from __future__ import annotations

import builtins
import importlib
import inspect
import json
import keyword
import math
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from inspect import Parameter, Signature
from types import ModuleType
from typing import Any

KINDS = ("rename", "relocate")
USAGES = ("same", "reorder", "pack_varargs", "keyword_only", "rename_keywords")
RECORD_FIELDS = (
    "api_id",
    "old_qualname",
    "new_qualname",
    "kind",
    "old_signature",
    "new_signature",
    "doc",
    "impl",
)
_OPTIONAL_TEXT_FIELDS = ("old_signature", "new_signature", "doc")
_HEAPTYPE_FLAG = 1 << 9
_BASETYPE_FLAG = 1 << 10
# Names the generated adapter body uses; a parameter with one of these names would shadow them.
_RESERVED_NAMES = frozenset(
    {"_apiedit_old", "_apiedit_counts", "_apiedit_api_id", "_apiedit_defaults", "_apiedit_items"}
)


# The only builtins an adapter body uses (see _render_body).
_ADAPTER_BUILTINS = {
    name: getattr(builtins, name) for name in ("tuple", "len", "type", "TypeError")
}
_RESERVED_CLOSURE_NAMES = (
    "_apiedit_old",
    "_apiedit_counts",
    "_apiedit_api_id",
    "_apiedit_defaults",
)
_MISSING = object()
# Marks every new API object with the api_id it implements.
API_ID_ATTRIBUTE = "__apiedit_api_id__"
# Constants that can be edit targets (`math.pi`, `sys.maxsize`): immutable, so an alias is safe.
CONSTANT_TYPES = (int, float, complex, str, bytes)


def is_alias_target(obj: Any, usage: str = "same") -> bool:
    """A constant, or a class that cannot be subclassed (`bool`, `operator.itemgetter`), renamed only.

    Its new name binds the very same object: nothing can wrap it as a class, so its uses cannot be
    counted at run time (`new_api_calls` stays 0; static references still count them). Such a
    class with a usage change (`range` called by keywords) becomes a function adapter instead:
    its calls return the old class's instances, and `isinstance(v, new)` is a TypeError, which
    validation turns into the exclusion of the problems that check types against it.
    """
    if isinstance(obj, type):
        return not obj.__flags__ & _BASETYPE_FLAG and usage == "same"
    return isinstance(obj, CONSTANT_TYPES)


def is_function_adapted_class(obj: Any, usage: str) -> bool:
    """A class that cannot be subclassed whose usage changes, so a function stands in for it."""
    return isinstance(obj, type) and not obj.__flags__ & _BASETYPE_FLAG and usage != "same"


class MappingError(ValueError):
    """An `api_mapping` record that cannot be turned into an edited world."""


@dataclass(frozen=True)
class ApiMapping:
    """One validated API change: where the old API lives, where the new one goes, how usage changes."""

    api_id: str
    old_qualname: str
    new_qualname: str
    kind: str
    old_signature: str
    new_signature: str
    doc: str
    impl: str
    old_module: str
    old_name: str
    new_module: str
    new_name: str
    usage: dict[str, Any] = field(hash=False)

    @classmethod
    def from_record(cls, record: Mapping[str, Any] | ApiMapping) -> ApiMapping:
        """Validate one record (dict, pandas row, parquet row) and resolve its modules."""
        if isinstance(record, ApiMapping):
            return record
        if not isinstance(record, Mapping) and not hasattr(record, "get"):
            raise MappingError(
                f"mapping record of type {type(record).__name__} is not a mapping; "
                f"pass a dict with keys {', '.join(RECORD_FIELDS)}"
            )
        api_id = _text(record, "api_id", api_id="<missing api_id>")
        if not api_id:
            raise MappingError("mapping record has an empty api_id; give every row a unique id")
        texts = {name: _text(record, name, api_id=api_id) for name in RECORD_FIELDS}
        kind = texts["kind"]
        if kind not in KINDS:
            raise MappingError(
                f"api_id {api_id!r}: kind {kind!r} is unknown; use one of {', '.join(KINDS)}"
            )
        old_module, old_name = _resolve_old_location(api_id, texts["old_qualname"])
        new_module, new_name = _resolve_new_location(
            api_id, kind, texts["new_qualname"], old_module
        )
        usage = _parse_impl(api_id, record.get("impl"))
        mapping = cls(
            **texts,
            old_module=old_module,
            old_name=old_name,
            new_module=new_module,
            new_name=new_name,
            usage=usage,
        )
        _check_target(mapping)
        # Building once validates the usage against the real signature before any run starts.
        build_new_callable(mapping, mapping.old_object())
        return mapping

    def old_object(self) -> Any:
        """The old API object in the current (pristine) process."""
        return getattr(importlib.import_module(self.old_module), self.old_name)

    def to_record(self) -> dict[str, str]:
        """The `api_mapping` columns, e.g. to ship the mapping to a worker process."""
        return {name: getattr(self, name) for name in RECORD_FIELDS}


def parse_mappings(records: Iterable[Mapping[str, Any] | ApiMapping]) -> list[ApiMapping]:
    """Validate every record and the set as a whole (see `check_mapping_set`)."""
    mappings: list[ApiMapping] = []
    for index, record in enumerate(records):
        try:
            mappings.append(ApiMapping.from_record(record))
        except MappingError as error:
            raise MappingError(f"mapping record {index}: {error}") from error.__cause__
    check_mapping_set(mappings)
    return mappings


def check_mapping_set(mappings: Sequence[ApiMapping]) -> None:
    """No two mappings share an old API, a new name or an api_id (the later one is named)."""
    _check_unique(
        mappings,
        lambda m: f"{m.old_module}.{m.old_name}",
        "old API",
        "map each old API once",
    )
    _check_unique(
        mappings,
        lambda m: f"{m.new_module}.{m.new_name}",
        "new name",
        "give each new API its own name",
    )
    _check_unique(mappings, lambda m: m.api_id, "api_id", "give each row its own api_id")


def build_new_callable(
    mapping: ApiMapping,
    old_obj: Any,
    *,
    call_counts: MutableMapping[str, int] | None = None,
) -> Any:
    """The new API built from `old_obj` with the mapping's usage change.

    The result is named `mapping.new_name`, documented with `mapping.doc`, and its signature
    reflects the new usage. With `call_counts`, every call that the new signature accepts adds
    one to `call_counts[mapping.api_id]` (also when the old API then raises); a call rejected by
    the signature itself raises its TypeError before counting. A class target becomes a
    subclass named after the new API whose `isinstance`/`issubclass` answer as the old class
    would (also for values created the old way); its instantiations count. `type(v) is New` stays
    False for such values: only binding the old class itself would change that, and then its
    instantiations could not be counted. A constant or a class that cannot be subclassed is
    returned as it is (see `is_alias_target`).
    """
    if call_counts is not None:
        call_counts.setdefault(mapping.api_id, 0)
    usage = mapping.usage["usage"]
    if is_alias_target(old_obj, usage):
        return old_obj
    if isinstance(old_obj, type) and not is_function_adapted_class(old_obj, usage):
        return _build_new_class(mapping, old_obj, call_counts)
    new_signature, plan = _plan_adapter(mapping, _signature_or_none(old_obj))
    function = _generate_function(mapping, old_obj, new_signature, plan, call_counts)
    function.__doc__ = mapping.doc
    function.__qualname__ = mapping.new_name
    function.__module__ = mapping.new_module
    setattr(function, API_ID_ATTRIBUTE, mapping.api_id)
    return function


# ----------------------------------------------------------------------------- record parsing


def _text(record: Mapping[str, Any], name: str, *, api_id: str) -> str:
    if name not in record:
        raise MappingError(
            f"api_id {api_id!r}: field {name!r} is missing; records need {', '.join(RECORD_FIELDS)}"
        )
    value = plain_value(record.get(name))
    if value is None:
        if name in _OPTIONAL_TEXT_FIELDS:
            return ""
        raise MappingError(f"api_id {api_id!r}: field {name!r} is empty; fill it in")
    if name == "impl" and isinstance(value, Mapping):
        return json.dumps(dict(value), sort_keys=True)
    if not isinstance(value, str):
        raise MappingError(
            f"api_id {api_id!r}: field {name!r} is a {type(value).__name__}, expected a string"
        )
    return value.strip()


def plain_value(value: Any) -> Any:
    """Unwrap pyarrow/numpy scalars and map NaN/None to None."""
    if hasattr(value, "as_py"):
        value = value.as_py()
    if hasattr(value, "item") and not isinstance(value, str | bytes | Mapping):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _parse_impl(api_id: str, raw: Any) -> dict[str, Any]:
    raw = plain_value(raw)
    if isinstance(raw, Mapping):
        impl = dict(raw)
    else:
        try:
            impl = json.loads(raw)
        except (TypeError, json.JSONDecodeError) as error:
            raise MappingError(
                f"api_id {api_id!r}: impl {raw!r} is not valid JSON; write e.g. "
                '\'{"usage": "same"}\''
            ) from error
    if not isinstance(impl, dict):
        raise MappingError(f"api_id {api_id!r}: impl must be a JSON object, got {impl!r}")
    usage = impl.get("usage")
    if usage not in USAGES:
        raise MappingError(
            f"api_id {api_id!r}: impl usage {usage!r} is unknown; use one of {', '.join(USAGES)}"
        )
    allowed = {
        "same": set(),
        "reorder": {"order"},
        "pack_varargs": {"name", "iterable_form"},
        "keyword_only": {"names", "forms", "defaults"},
        "rename_keywords": {"map"},
    }[usage]
    extra = set(impl) - allowed - {"usage"}
    if extra:
        raise MappingError(
            f"api_id {api_id!r}: impl keys {sorted(extra)} are not understood for usage "
            f"{usage!r}; allowed: {sorted(allowed) or 'none'}"
        )
    _check_usage_fields(api_id, usage, impl)
    return impl


def _check_usage_fields(api_id: str, usage: str, impl: dict[str, Any]) -> None:
    if usage == "reorder":
        order = impl.get("order")
        if (
            not isinstance(order, list)
            or len(order) < 2
            or sorted(order) != list(range(len(order)))
            or order == sorted(order)
        ):
            raise MappingError(
                f"api_id {api_id!r}: reorder needs 'order', a non-identity permutation of "
                f"0..n-1 with n >= 2 (e.g. [1, 0]), got {order!r}"
            )
    elif usage == "pack_varargs":
        _check_identifiers(api_id, "pack_varargs name", [impl.get("name", "items")])
        if not isinstance(impl.get("iterable_form", False), bool):
            raise MappingError(
                f"api_id {api_id!r}: pack_varargs 'iterable_form' must be true or false, got "
                f"{impl['iterable_form']!r}"
            )
    elif usage == "keyword_only":
        names = impl.get("names")
        if not isinstance(names, list) or not names or len(set(names)) != len(names):
            raise MappingError(
                f"api_id {api_id!r}: keyword_only needs 'names', a non-empty list of distinct "
                f'identifiers (e.g. ["x", "y"]), got {names!r}'
            )
        _check_identifiers(api_id, "keyword_only names", names)
        _check_keyword_forms(api_id, names, impl.get("forms", []), impl.get("defaults", {}))
    elif usage == "rename_keywords":
        renames = impl.get("map")
        if not isinstance(renames, dict) or not renames:
            raise MappingError(
                f"api_id {api_id!r}: rename_keywords needs 'map', an object old keyword -> new "
                f'keyword (e.g. {{"key": "sort_key"}}), got {renames!r}'
            )
        _check_identifiers(api_id, "rename_keywords map", [*renames, *renames.values()])
        if len(set(renames.values())) != len(renames):
            raise MappingError(f"api_id {api_id!r}: rename_keywords maps two keywords to one name")


def _check_keyword_forms(api_id: str, names: list[str], forms: Any, defaults: Any) -> None:
    """Shorter positional forms of the old API (`range(stop)`) and the defaults that fill them."""
    label = f"api_id {api_id!r}: keyword_only"
    if not isinstance(defaults, dict) or not set(defaults) <= set(names):
        raise MappingError(
            f"{label} 'defaults' must map some of the names {names} to values, got {defaults!r}"
        )
    if not all(isinstance(v, int | float | str | bool) or v is None for v in defaults.values()):
        raise MappingError(f"{label} 'defaults' values must be literals, got {defaults!r}")
    if not isinstance(forms, list) or not all(isinstance(form, list) for form in forms):
        raise MappingError(
            f"{label} 'forms' must be a list of name lists, one per shorter positional call "
            f'of the old API (e.g. [["stop"], ["start", "stop"]]), got {forms!r}'
        )
    arities = [len(form) for form in forms]
    if len(set(arities)) != len(arities) or len(names) in arities or 0 in arities:
        raise MappingError(
            f"{label} 'forms' {forms} must have distinct lengths, each shorter than names {names}"
        )
    for form in forms:
        if len(set(form)) != len(form) or not set(form) <= set(names):
            raise MappingError(f"{label} form {form} must be distinct names among {names}")
        unfilled = [name for name in names if name not in form and name not in defaults]
        if unfilled:
            raise MappingError(
                f"{label} form {form} leaves {unfilled} without a value; give them 'defaults'"
            )


def _check_identifiers(api_id: str, what: str, names: Iterable[Any]) -> None:
    for name in names:
        if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
            raise MappingError(f"api_id {api_id!r}: {what}: {name!r} is not a valid identifier")
        if name in _RESERVED_NAMES:
            raise MappingError(f"api_id {api_id!r}: {what}: {name!r} is reserved; pick another")


def _check_unique(
    mappings: Sequence[ApiMapping], key: Callable[[ApiMapping], Any], what: str, fix: str
) -> None:
    seen: dict[Any, str] = {}
    for mapping in mappings:
        value = key(mapping)
        if value in seen:
            raise MappingError(
                f"api_id {mapping.api_id!r}: {what} {value!r} is also used by api_id "
                f"{seen[value]!r}; {fix}"
            )
        seen[value] = mapping.api_id


# ------------------------------------------------------------------------ resolving locations


def _resolve_old_location(api_id: str, qualname: str) -> tuple[str, str]:
    """Split 'os.path.join' into ('os.path', 'join'); reject methods and unknown names."""
    parts = qualname.split(".")
    if not qualname or not all(part.isidentifier() for part in parts):
        raise MappingError(
            f"api_id {api_id!r}: old_qualname {qualname!r} is not a dotted name like 'math.comb'"
        )
    module_name, chain = _longest_module_prefix(api_id, parts)
    module = importlib.import_module(module_name)
    owner: Any = module
    for depth, attribute in enumerate(chain):
        if not hasattr(owner, attribute):
            where = ".".join([module_name, *chain[:depth]])
            raise MappingError(
                f"api_id {api_id!r}: {where!r} has no attribute {attribute!r} "
                f"(old_qualname {qualname!r}); fix the old_qualname"
            )
        if depth == len(chain) - 1:
            break
        owner = getattr(owner, attribute)
        if isinstance(owner, type):
            raise MappingError(_method_message(api_id, qualname, owner))
        raise MappingError(
            f"api_id {api_id!r}: old_qualname {qualname!r} goes through {attribute!r}, which is "
            "not a module; name a module-level function or class"
        )
    return module_name, chain[-1]


def _longest_module_prefix(api_id: str, parts: list[str]) -> tuple[str, list[str]]:
    for split in range(len(parts) - 1, 0, -1):
        candidate = ".".join(parts[:split])
        try:
            importlib.import_module(candidate)
        except ModuleNotFoundError as error:
            if error.name is not None and candidate.startswith(error.name):
                continue
            raise MappingError(
                f"api_id {api_id!r}: importing {candidate!r} failed: {error}"
            ) from error
        except Exception as error:
            raise MappingError(
                f"api_id {api_id!r}: importing {candidate!r} failed: {error}"
            ) from error
        return candidate, parts[split:]
    if hasattr(builtins, parts[0]):
        return "builtins", parts
    raise MappingError(
        f"api_id {api_id!r}: old_qualname {'.'.join(parts)!r} names no importable module and "
        "no builtin; write the full dotted path, e.g. 'math.comb'"
    )


def _method_message(api_id: str, qualname: str, owner: type) -> str:
    if not owner.__flags__ & _HEAPTYPE_FLAG:
        return (
            f"api_id {api_id!r}: {qualname!r} is a method of the builtin type "
            f"{owner.__name__!r}, which cannot be removed (immutable type); pick a module-level "
            "function or class instead"
        )
    return (
        f"api_id {api_id!r}: {qualname!r} is a method of class {owner.__qualname__!r}; only "
        "module-level functions and classes are edit targets"
    )


def _resolve_new_location(
    api_id: str, kind: str, qualname: str, old_module: str
) -> tuple[str, str]:
    module_part, _, name = qualname.rpartition(".")
    if not name.isidentifier() or keyword.iskeyword(name):
        raise MappingError(
            f"api_id {api_id!r}: new_qualname {qualname!r} does not end in a valid identifier"
        )
    if kind == "relocate":
        if module_part not in ("", "builtins"):
            raise MappingError(
                f"api_id {api_id!r}: relocate puts the new API in builtins, so new_qualname "
                f"must be a bare name like 'my_{name}', got {qualname!r}"
            )
        module = "builtins"
    else:
        module = module_part or "builtins"
        if module != old_module:
            raise MappingError(
                f"api_id {api_id!r}: rename keeps the module ({old_module!r}) but new_qualname "
                f"is {qualname!r}; write '{old_module}.{name}' or use kind 'relocate'"
            )
    return module, name


def _check_target(mapping: ApiMapping) -> None:
    old_obj = mapping.old_object()
    label = f"api_id {mapping.api_id!r}"
    if isinstance(old_obj, ModuleType):
        raise MappingError(
            f"{label}: {mapping.old_qualname!r} is a module; name a function or class in it"
        )
    if not callable(old_obj) and not isinstance(old_obj, CONSTANT_TYPES):
        raise MappingError(
            f"{label}: {mapping.old_qualname!r} is neither callable nor a constant "
            f"({type(old_obj).__name__}); only functions, classes and int/float/str constants "
            "are edit targets"
        )
    usage = mapping.usage["usage"]
    if isinstance(old_obj, CONSTANT_TYPES) and usage != "same":
        raise MappingError(
            f"{label}: {mapping.old_qualname!r} is a constant, so its new name can only alias "
            f"it; use usage 'same', got {usage!r}"
        )
    existing = getattr(importlib.import_module(mapping.new_module), mapping.new_name, _MISSING)
    # In an edited world the new name exists already: as this very mapping's new API.
    ours = (
        existing is old_obj
        if is_alias_target(old_obj, usage)
        else (getattr(existing, API_ID_ATTRIBUTE, None) == mapping.api_id)
    )
    if existing is not _MISSING and not ours:
        where = "builtins" if mapping.new_module == "builtins" else f"module {mapping.new_module!r}"
        raise MappingError(
            f"{label}: new name {mapping.new_name!r} already exists in {where}; pick a name "
            "that does not clash"
        )
    if (
        isinstance(old_obj, type)
        and usage != "same"
        and not is_function_adapted_class(old_obj, usage)
    ):
        raise MappingError(
            f"{label}: class target {mapping.old_qualname!r} only supports usage 'same' (its "
            f"new name is a subclass, whose constructor keeps the old usage), got {usage!r}"
        )


# ------------------------------------------------------------------------------ adapters


@dataclass(frozen=True)
class _ForwardPlan:
    """How the generated body calls the old API."""

    renamed: dict[str, str]  # old parameter name -> new parameter name
    packed: str | None = None  # new parameter whose items become the old positional arguments
    # The old API takes the iterable itself as well as its items (`max(xs)` = `max(*xs)`).
    packs_iterable: bool = False
    min_packed: int = 0
    kwargs_renames: tuple[tuple[str, str], ...] = ()  # (old, new) keys passed through **kwargs
    old_signature: Signature | None = None


def _signature_or_none(obj: Any) -> Signature | None:
    try:
        return inspect.signature(obj)
    except (TypeError, ValueError):
        return None


def _synthetic_signature(usage: dict[str, Any]) -> Signature:
    """A stand-in for C functions without a signature (max, functools.reduce, math.log)."""
    var_args = Parameter("args", Parameter.VAR_POSITIONAL)
    var_kwargs = Parameter("kwargs", Parameter.VAR_KEYWORD)
    count = {"reorder": len(usage.get("order", [])), "keyword_only": len(usage.get("names", []))}
    leading = [
        Parameter(f"arg{i}", Parameter.POSITIONAL_ONLY) for i in range(count.get(usage["usage"], 0))
    ]
    if usage["usage"] == "keyword_only":
        # Listed forms describe every call the old API takes, so nothing passes by keyword.
        return Signature(leading if "forms" in usage else [*leading, var_kwargs])
    return Signature([*leading, var_args, var_kwargs])


def _plan_adapter(
    mapping: ApiMapping, old_signature: Signature | None
) -> tuple[Signature, _ForwardPlan]:
    usage = mapping.usage
    signature = old_signature or _synthetic_signature(usage)
    params = list(signature.parameters.values())
    label = f"api_id {mapping.api_id!r}"
    for param in params:
        if param.name in _RESERVED_NAMES:
            raise MappingError(
                f"{label}: old parameter {param.name!r} clashes with adapter internals"
            )
    kind = usage["usage"]
    if kind == "same":
        new_params, plan = params, _ForwardPlan(renamed={})
    elif kind == "reorder":
        new_params, plan = _plan_reorder(label, params, usage["order"])
    elif kind == "pack_varargs":
        new_params, plan = _plan_pack(label, params, usage.get("name", "items"))
    elif kind == "keyword_only":
        new_params, plan = _plan_keyword_only(
            label, params, usage["names"], usage.get("defaults", {})
        )
    else:
        new_params, plan = _plan_rename_keywords(label, params, usage["map"])
    names = [param.name for param in new_params]
    if len(set(names)) != len(names):
        raise MappingError(f"{label}: the new signature would repeat a parameter name: {names}")
    return Signature(new_params), _ForwardPlan(
        renamed=plan.renamed,
        packed=plan.packed,
        packs_iterable=bool(usage.get("iterable_form", False)),
        min_packed=plan.min_packed,
        kwargs_renames=plan.kwargs_renames,
        old_signature=signature,
    )


def _positional(params: list[Parameter]) -> list[Parameter]:
    kinds = (Parameter.POSITIONAL_ONLY, Parameter.POSITIONAL_OR_KEYWORD)
    return [param for param in params if param.kind in kinds]


def _plan_reorder(
    label: str, params: list[Parameter], order: list[int]
) -> tuple[list[Parameter], _ForwardPlan]:
    count = len(order)
    positional = _positional(params)
    if params[:count] != positional[:count] or len(positional) < count:
        raise MappingError(
            f"{label}: reorder of {count} arguments needs {count} leading positional parameters "
            f"in the old signature, which has {[str(p) for p in params]}"
        )
    moved = [
        params[index].replace(kind=Parameter.POSITIONAL_ONLY, default=Parameter.empty)
        for index in order
    ]
    return [*moved, *params[count:]], _ForwardPlan(renamed={})


def _plan_pack(
    label: str, params: list[Parameter], items_name: str
) -> tuple[list[Parameter], _ForwardPlan]:
    if not any(param.kind is Parameter.VAR_POSITIONAL for param in params):
        raise MappingError(
            f"{label}: pack_varargs needs an old API taking *args, but its signature is "
            f"{[str(p) for p in params]}"
        )
    required = sum(param.default is Parameter.empty for param in _positional(params))
    keyword_part = [
        param for param in params if param.kind in (Parameter.KEYWORD_ONLY, Parameter.VAR_KEYWORD)
    ]
    packed = Parameter(items_name, Parameter.POSITIONAL_ONLY)
    return [packed, *keyword_part], _ForwardPlan(renamed={}, packed=items_name, min_packed=required)


def _plan_keyword_only(
    label: str, params: list[Parameter], names: list[str], defaults: Mapping[str, Any]
) -> tuple[list[Parameter], _ForwardPlan]:
    count = len(names)
    if any(param.kind is Parameter.VAR_POSITIONAL for param in params):
        raise MappingError(
            f"{label}: keyword_only cannot apply to an API taking *args; use pack_varargs"
        )
    positional = _positional(params)
    if len(positional) < count:
        raise MappingError(
            f"{label}: keyword_only names {names} but the old API has only "
            f"{len(positional)} positional parameters"
        )
    renamed = {param.name: name for param, name in zip(positional, names, strict=False)}
    new_params = []
    for param in params:
        if param.name in renamed:
            new_name = renamed[param.name]
            new_params.append(
                Parameter(
                    new_name,
                    Parameter.KEYWORD_ONLY,
                    default=defaults.get(new_name, Parameter.empty),
                )
            )
        elif param.kind in (Parameter.POSITIONAL_ONLY, Parameter.POSITIONAL_OR_KEYWORD):
            new_params.append(param.replace(kind=Parameter.KEYWORD_ONLY))
        else:
            new_params.append(param)
    return new_params, _ForwardPlan(renamed=renamed)


def _plan_rename_keywords(
    label: str, params: list[Parameter], renames: dict[str, str]
) -> tuple[list[Parameter], _ForwardPlan]:
    by_name = {param.name: param for param in params}
    has_var_keyword = any(param.kind is Parameter.VAR_KEYWORD for param in params)
    explicit: dict[str, str] = {}
    through_kwargs: list[tuple[str, str]] = []
    for old, new in renames.items():
        param = by_name.get(old)
        if param is None:
            if not has_var_keyword:
                raise MappingError(
                    f"{label}: rename_keywords: the old API has no keyword {old!r}; its "
                    f"parameters are {list(by_name)}"
                )
            through_kwargs.append((old, new))
        elif param.kind not in (Parameter.POSITIONAL_OR_KEYWORD, Parameter.KEYWORD_ONLY):
            raise MappingError(
                f"{label}: rename_keywords: parameter {old!r} cannot be passed by keyword"
            )
        else:
            explicit[old] = new
    new_params = [param.replace(name=explicit.get(param.name, param.name)) for param in params]
    if has_var_keyword:
        # Old keywords would otherwise slip through **kwargs; the generated body rejects them.
        through_kwargs.extend((old, new) for old, new in explicit.items())
    return new_params, _ForwardPlan(renamed=explicit, kwargs_renames=tuple(through_kwargs))


def _render_parameters(params: list[Parameter]) -> str:
    rendered: list[str] = []
    seen_star = False
    for index, param in enumerate(params):
        if param.kind is Parameter.KEYWORD_ONLY and not seen_star:
            rendered.append("*")
            seen_star = True
        if param.kind is Parameter.VAR_POSITIONAL:
            rendered.append(f"*{param.name}")
            seen_star = True
        elif param.kind is Parameter.VAR_KEYWORD:
            rendered.append(f"**{param.name}")
        elif param.default is Parameter.empty:
            rendered.append(param.name)
        else:
            rendered.append(f"{param.name}=_apiedit_defaults[{index}]")
        is_last_positional_only = param.kind is Parameter.POSITIONAL_ONLY and (
            index + 1 == len(params) or params[index + 1].kind is not Parameter.POSITIONAL_ONLY
        )
        if is_last_positional_only:
            rendered.append("/")
    return ", ".join(rendered)


def _render_call(plan: _ForwardPlan) -> str:
    assert plan.old_signature is not None
    arguments: list[str] = []
    var_keyword = None
    for param in plan.old_signature.parameters.values():
        name = plan.renamed.get(param.name, param.name)
        if plan.packed is not None:
            if param.kind is Parameter.VAR_POSITIONAL:
                arguments.append("_apiedit_items" if plan.packs_iterable else "*_apiedit_items")
            elif param.kind is Parameter.KEYWORD_ONLY:
                arguments.append(f"{param.name}={name}")
            elif param.kind is Parameter.VAR_KEYWORD:
                var_keyword = name
            continue
        if param.kind in (Parameter.POSITIONAL_ONLY, Parameter.POSITIONAL_OR_KEYWORD):
            arguments.append(name)
        elif param.kind is Parameter.VAR_POSITIONAL:
            arguments.append(f"*{name}")
        elif param.kind is Parameter.KEYWORD_ONLY:
            arguments.append(f"{param.name}={name}")
        else:
            var_keyword = name
    if var_keyword is not None:
        arguments.append(f"**{var_keyword}")
    return f"_apiedit_old({', '.join(arguments)})"


def _render_body(mapping: ApiMapping, new_signature: Signature, plan: _ForwardPlan) -> list[str]:
    lines: list[str] = []
    var_keyword = next(
        (p.name for p in new_signature.parameters.values() if p.kind is Parameter.VAR_KEYWORD),
        None,
    )
    for old, new in plan.kwargs_renames:
        assert var_keyword is not None
        lines += [
            f"    if {old!r} in {var_keyword}:",
            f'        raise TypeError("{mapping.new_name}() got an unexpected keyword argument '
            f"'{old}'\")",
        ]
        if old not in plan.renamed:
            lines += [
                f"    if {new!r} in {var_keyword}:",
                f"        {var_keyword}[{old!r}] = {var_keyword}.pop({new!r})",
            ]
    if plan.packed is not None:
        items = plan.packed
        lines += [
            "    try:",
            f"        _apiedit_items = tuple({items})",
            "    except TypeError:",
            f"        raise TypeError(f\"{mapping.new_name}() argument '{items}' must be an "
            f'iterable, not {{type({items}).__name__}}") from None',
        ]
        if plan.min_packed:
            lines += [
                f"    if len(_apiedit_items) < {plan.min_packed}:",
                f"        raise TypeError(\"{mapping.new_name}() argument '{items}' needs at "
                f'least {plan.min_packed} item(s)")',
            ]
    lines.append(f"    return {_render_call(plan)}")
    return lines


def _generate_function(
    mapping: ApiMapping,
    old_obj: Any,
    new_signature: Signature,
    plan: _ForwardPlan,
    call_counts: MutableMapping[str, int] | None,
) -> Callable[..., Any]:
    params = list(new_signature.parameters.values())
    header = f"def {mapping.new_name}({_render_parameters(params)}):"
    counting = ["    _apiedit_counts[_apiedit_api_id] += 1"] if call_counts is not None else []
    body = [header, *counting, *_render_body(mapping, new_signature, plan)]
    # The old object, the counters and the defaults are closure cells of a factory, not
    # globals: the new API's `__globals__` holds only the few builtins its body uses (captured
    # before an edited world may remove them), so it is no route to the removed API.
    source = "\n".join(
        [
            f"def _apiedit_factory({', '.join(_RESERVED_CLOSURE_NAMES)}):",
            *("    " + line for line in body),
            f"    return {mapping.new_name}",
        ]
    )
    namespace: dict[str, Any] = {"__builtins__": dict(_ADAPTER_BUILTINS)}
    code = compile(
        source, f"<new API {mapping.new_qualname} for {mapping.api_id}>", "exec", dont_inherit=True
    )
    exec(code, namespace)  # the source is built from validated identifiers only
    factory = namespace.pop("_apiedit_factory")
    defaults = tuple(param.default for param in params)
    return factory(old_obj, call_counts, mapping.api_id, defaults)


def _build_new_class(
    mapping: ApiMapping, old_class: type, call_counts: MutableMapping[str, int] | None
) -> type:
    namespace: dict[str, Any] = {
        "__doc__": mapping.doc,
        "__module__": mapping.new_module,
        "__qualname__": mapping.new_name,
        API_ID_ATTRIBUTE: mapping.api_id,
    }
    if old_class is type:
        # CPython honours the one-argument form `type(x)` only on `type` itself.
        def __new__(metaclass: type, *args: Any, **kwargs: Any) -> Any:
            if len(args) == 1 and not kwargs:
                return type(args[0])
            return type.__new__(metaclass, *args, **kwargs)

        namespace["__new__"] = __new__
    old_metaclass = type(old_class)
    api_id = mapping.api_id

    # The new class is a subclass (so its instantiations can be counted), but values made the
    # old way (`5`, `[]`, literals, library results) must still pass `isinstance(v, New)`, as
    # they would if the class had only been renamed. For an ABC-based old class (ChainMap) the
    # ABC machinery asks every subclass of it, this one included, so a check that is already
    # running answers nominally instead of asking the old class again (which would recurse).
    running = {"check": False}

    def _delegated(cls: type, question: Any, nominal: Any) -> bool:
        if running["check"]:
            return nominal(cls, question)
        running["check"] = True
        try:
            return (isinstance if nominal is type.__instancecheck__ else issubclass)(
                question, old_class
            )
        finally:
            running["check"] = False

    def __instancecheck__(cls: type, instance: Any) -> bool:
        return _delegated(cls, instance, type.__instancecheck__)

    def __subclasscheck__(cls: type, subclass: type) -> bool:
        return _delegated(cls, subclass, type.__subclasscheck__)

    members: dict[str, Any] = {
        "__instancecheck__": __instancecheck__,
        "__subclasscheck__": __subclasscheck__,
        "__module__": __name__,
    }
    if call_counts is not None:

        def __call__(cls: type, *args: Any, **kwargs: Any) -> Any:
            call_counts[api_id] += 1
            return old_metaclass.__call__(cls, *args, **kwargs)

        members["__call__"] = __call__
    metaclass = type(f"{mapping.new_name}Type", (old_metaclass,), members)
    try:
        return metaclass(mapping.new_name, (old_class,), namespace)
    except TypeError as error:
        raise MappingError(
            f"api_id {mapping.api_id!r}: cannot derive the new class {mapping.new_name!r} from "
            f"{mapping.old_qualname!r}: {error}; pick another target"
        ) from error
