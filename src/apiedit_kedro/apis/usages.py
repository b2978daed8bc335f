"""Which standard-library APIs a program uses: the detector behind the `api_usages` dataset.

Built on `apis.references.resolve_references`, which resolves imports, aliases, star imports and
attribute chains to qualified names. This module maps each qualified name to the module-level API
it reaches (`os.path.join` -> module `os.path`, name `join`; `itertools.chain.from_iterable` -> the
class `itertools.chain`) and keeps only the standard library. Built-ins (`sorted`, `zip`) are out of
the default scope; pass `builtins_in_scope` (e.g. the catalogued built-ins) to count them too.
"""

import importlib
import sys
import warnings
from collections.abc import Collection
from dataclasses import dataclass
from functools import cache

from apiedit_kedro.apis.references import resolve_references

_NOT_APIS = frozenset({"__future__", "typing"})  # annotations, not behaviour a program calls


@dataclass(frozen=True)
class ApiUse:
    """How often one module-level std-lib API is referenced (and called) by a program."""

    api: str
    module: str
    name: str
    references: int
    calls: int
    is_builtin: bool


@cache
def _module_api(qualname: str) -> tuple[str, str] | None:
    """(module, attribute) of the module-level API `qualname` reaches, or None if not std-lib."""
    parts = qualname.split(".")
    if parts[0] not in sys.stdlib_module_names or parts[0] in _NOT_APIS:
        return None
    for cut in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:cut])
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        if not hasattr(module, parts[cut]):
            return None
        return module_name, parts[cut]
    return None


def detect_api_uses(source: str, *, builtins_in_scope: Collection[str] = ()) -> list[ApiUse]:
    """The std-lib APIs `source` references, sorted by API name.

    `builtins_in_scope` names built-ins (`"sorted"` or `"builtins.sorted"`) that count as APIs.
    Raises SyntaxError when `source` does not parse.
    """
    wanted_builtins = {name.removeprefix("builtins.") for name in builtins_in_scope}
    counts: dict[tuple[str, str], list[int]] = {}
    with warnings.catch_warnings():
        # some upstream solutions use invalid escapes like "\d" in plain strings
        warnings.simplefilter("ignore", SyntaxWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        references = resolve_references(source)
    for reference in references:
        if reference.qualname.startswith("builtins."):
            name = reference.qualname.removeprefix("builtins.")
            location = ("builtins", name) if name in wanted_builtins else None
        else:
            location = _module_api(reference.qualname)
        if location is None:
            continue
        tally = counts.setdefault(location, [0, 0])
        tally[0] += 1
        # a call of a deeper attribute (`m.Class.method(...)`) is not a call of the API itself
        is_api_itself = reference.qualname == ".".join(location)
        tally[1] += int(reference.is_call and is_api_itself)
    return [
        ApiUse(
            api=f"{module}.{name}",
            module=module,
            name=name,
            references=refs,
            calls=calls,
            is_builtin=module == "builtins",
        )
        for (module, name), (refs, calls) in sorted(counts.items())
    ]
