"""The edited world: remove old std-lib APIs from the running process and register the new ones.

`install_edited_world(mappings)` changes the CURRENT process for good; the sandbox calls it in a
forked child just before running a program. The pristine world is a process that never called it.

Program code versus library code. The program (the sample being executed) runs in a namespace
that is no imported module's `__dict__`; everything else is library code. Only the program loses
the old APIs: the std-lib keeps working even when it uses them itself (`Counter.most_common`
calls `sorted`, `statistics` does `from functools import reduce`, `tempfile` calls
`os.path.join`), so an edited API never breaks code the model did not write.

How an old name disappears for the program:
- The module's class becomes a `ModuleType` subclass whose data descriptors hide the names:
  attribute access, `getattr(m, n, None)`, `hasattr`, `from m import n`, `dir(m)` and
  `importlib.import_module(m).n` behave as if the name were gone, with CPython's own messages.
  Called from library code, the descriptor hands out the original object.
- C modules (`math`, `_heapq`, `posix`, `builtins`) also lose the name from their dict. Modules
  written in Python keep it there, because that dict is the globals of their own functions;
  `vars(m)` and `m.__dict__` still leave it out for the program (see below).
- Twin modules holding the same object under the same name (`_heapq.heappush`,
  `_functools.reduce`, `posix.getcwd`, `posixpath.join` behind `os.path`) are found by identity
  over a small list of candidates and edited the same way. `__all__` is edited (created where a
  Python module has none) so `from m import *` neither leaks nor breaks.
- Removed builtins are popped from the `builtins` module, whose dict is what bare names in the
  program resolve against; every library module gets them as (hidden) globals instead, which
  functions consult before builtins.
- The standard loaders' `exec_module` (built-in, frozen, extension and source loaders, at class
  level) re-apply all this whenever a module is executed again or for the first time: re-import
  after `del sys.modules[...]`, `importlib.reload`, `importlib.import_module`, a loader driven by
  hand, a library module first imported by the program. Hooking the loaders rather than adding
  a `sys.meta_path` finder means emptying `sys.meta_path` undoes nothing.
- Nothing reachable from the module points back at an original: the hiding class carries no
  table of hidden objects (a private registry keyed by class holds it), its descriptors hold only
  a name, and `vars(m)` / `m.__dict__` read by the program leave the hidden names out.
- "Library code" is code whose globals are the dict of a module that was loaded before the
  world was installed or later from the interpreter's own directories (never a namespace the
  program builds, even registered in `sys.modules`), and it gets an original only through an
  attribute access written literally in its bytecode (`os.path.join`, `from functools import
  reduce`): a library helper that looks names up from data (`pickle._loads`, `pydoc.locate`,
  `string.Formatter`) acts for the program and sees the name gone.

New APIs come from `mapping.build_new_callable`, counting calls in this process
(`new_api_call_counts()`). `prepare_world(mappings)` validates, imports, generates the adapters
and precomputes every write once (cached; e.g. in a sandbox worker before it forks), so
`PreparedWorld.install()` in the forked child only assigns. Measured on 2 CPUs with 159 modules
loaded: 0.3 ms for 10 module APIs, 2 ms for 7 module + 3 builtin APIs, 2.5 ms for the whole
55-entry catalogue (`prepare_world` 3 / 9 / 35 ms once per worker).

The loader hooks and the hiding descriptors are hand-written: no maintained library edits a live
interpreter's std-lib this way.
"""

from __future__ import annotations

import builtins
import dis
import importlib
import importlib.machinery
import logging
import os
import sys
import sysconfig
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from types import FrameType, ModuleType
from typing import Any, ClassVar

from apiedit_kedro.apis.mapping import (
    RECORD_FIELDS,
    ApiMapping,
    build_new_callable,
    parse_mappings,
    plain_value,
)

logger = logging.getLogger(__name__)

# Modules known to re-export another module's objects; candidates are still checked by identity.
_KNOWN_TWINS: dict[str, tuple[str, ...]] = {
    "os": ("posix", "nt"),
    "posixpath": ("genericpath",),
    "ntpath": ("genericpath",),
}
_PREPARED_CACHE_SIZE = 32

# Captured at import: the program may not call it (the sandbox blocks it), the descriptors do.
_getframe = sys._getframe
_module_dict = ModuleType.__dict__["__dict__"].__get__
_CALL_COUNTS: dict[str, int] = {}
_INSTALLED_API_IDS: set[str] = set()
_PREPARED: dict[tuple[tuple[str, ...], ...], PreparedWorld] = {}


def install_edited_world(
    mappings: Iterable[Mapping[str, Any] | ApiMapping] | PreparedWorld,
) -> None:
    """Remove the old APIs and add the new ones in this process, irreversibly."""
    world = mappings if isinstance(mappings, PreparedWorld) else prepare_world(mappings)
    world.install()


def new_api_call_counts() -> dict[str, int]:
    """api_id -> calls of the new API in this process since its world was installed."""
    return {api_id: _CALL_COUNTS[api_id] for api_id in sorted(_INSTALLED_API_IDS)}


def prepare_world(mappings: Iterable[Mapping[str, Any] | ApiMapping]) -> PreparedWorld:
    """Validate the mappings and build everything `install` needs; cached per mapping set.

    Call it in a long-lived process (e.g. a sandbox worker before it forks per sample) so that
    the per-sample `install()` only edits module dicts.
    """
    mappings = list(mappings)
    key = tuple(_record_key(mapping) for mapping in mappings)
    world = _PREPARED.get(key)
    if world is None:
        world = PreparedWorld(parse_mappings(mappings))
        if len(_PREPARED) >= _PREPARED_CACHE_SIZE:
            _PREPARED.pop(next(iter(_PREPARED)))
        _PREPARED[key] = world
    return world


@dataclass(frozen=True)
class ApiLocations:
    """Every dotted name under which an API is reachable (module aliases and twins included)."""

    old: tuple[str, ...]
    new: tuple[str, ...]


@lru_cache(maxsize=1024)
def api_locations(mapping: ApiMapping) -> ApiLocations:
    """Where the old API lives in the pristine world and the new one in the edited world."""
    module = importlib.import_module(mapping.old_module)
    old_obj = getattr(module, mapping.old_name)
    old_modules = [module, *_twin_modules(module, mapping.old_name, old_obj)]
    old = [f"{alias}.{mapping.old_name}" for m in old_modules for alias in _module_aliases(m)]
    new_module = importlib.import_module(mapping.new_module)
    new = [f"{alias}.{mapping.new_name}" for alias in _module_aliases(new_module)]
    return ApiLocations(old=tuple(dict.fromkeys(old)), new=tuple(dict.fromkeys(new)))


@dataclass
class _ModulePatch:
    """What one module object loses (name -> original object) and gains."""

    module: ModuleType
    aliases: tuple[str, ...] = ()
    hidden: dict[str, Any] = field(default_factory=dict)
    added: dict[str, Any] = field(default_factory=dict)
    keeps_globals: bool = False


@dataclass
class _ModulePlan:
    """The writes that edit one module, precomputed (see `_apply` and `_shield_module`)."""

    module: ModuleType
    inject: dict[str, Any]
    remove: tuple[str, ...]
    added: dict[str, Any]
    hiding_class: type | None
    exported: list[str] | None

    @classmethod
    def build(
        cls, module: ModuleType, patch: _ModulePatch | None, removed_builtins: Mapping[str, Any]
    ) -> _ModulePlan:
        namespace = _module_dict(module)
        python = _runs_python_code(module)
        shielded: dict[str, Any] = {}
        if python and getattr(module, "__name__", None) != "builtins":
            shielded = {
                name: obj
                for name, obj in removed_builtins.items()
                if namespace.get(name, obj) is obj
            }
        hidden = {**shielded, **(patch.hidden if patch else {})}
        added = dict(patch.added) if patch else {}
        hiding_class = None
        if hidden:
            base, already = _hiding_info(type(module))
            hiding_class = _hiding_class(base, {**already, **hidden})
        preview = {**namespace, **shielded}
        _edit_all(preview, hidden, added, create=python)
        exported = preview.get("__all__")
        return cls(
            module=module,
            inject={name: obj for name, obj in shielded.items() if name not in namespace},
            remove=() if python else tuple(patch.hidden if patch else ()),
            added=added,
            hiding_class=hiding_class,
            exported=None if exported is namespace.get("__all__") else list(exported),
        )

    def is_empty(self) -> bool:
        return not (self.inject or self.remove or self.added or self.hiding_class or self.exported)

    def apply(self) -> None:
        namespace = _module_dict(self.module)
        namespace.update(self.inject)
        if self.hiding_class is not None and not _set_module_class(self.module, self.hiding_class):
            for name in _hiding_info(self.hiding_class)[1]:
                namespace.pop(name, None)
        for name in self.remove:
            namespace.pop(name, None)
        namespace.update(self.added)
        if self.exported is not None:
            namespace["__all__"] = self.exported


class PreparedWorld:
    """Validated mappings with their new callables and per-module patches, ready to install."""

    def __init__(self, mappings: list[ApiMapping]) -> None:
        self.mappings = tuple(mappings)
        self.api_ids = tuple(mapping.api_id for mapping in mappings)
        patches: dict[int, _ModulePatch] = {}
        for mapping in mappings:
            module = importlib.import_module(mapping.old_module)
            old_obj = getattr(module, mapping.old_name)
            for holder in (module, *_twin_modules(module, mapping.old_name, old_obj)):
                _patch_for(patches, holder).hidden[mapping.old_name] = old_obj
            new_callable = build_new_callable(mapping, old_obj, call_counts=_CALL_COUNTS)
            new_module = importlib.import_module(mapping.new_module)
            _patch_for(patches, new_module).added[mapping.new_name] = new_callable
        self._patches = tuple(patches.values())
        self._removed_builtins = {
            mapping.old_name: getattr(builtins, mapping.old_name)
            for mapping in mappings
            if mapping.old_module == "builtins"
        }
        self._plans = self._plan_modules()

    def install(self) -> None:
        """Apply the patches to this process and keep them applied across re-imports."""
        for api_id in self.api_ids:
            _CALL_COUNTS[api_id] = 0
        _INSTALLED_API_IDS.update(self.api_ids)
        _LIBRARY.remember_loaded()
        _REPATCHER.shield(self._removed_builtins)
        for patch in self._patches:
            _REPATCHER.register(patch)
        add_module_exec_hook(before=_REPATCHER.before_exec, after=_REPATCHER.after_exec)
        planned = set()
        for plan in self._plans:  # the builtins module comes last: until then all code runs
            plan.apply()
            planned.add(id(plan.module))
        # Modules imported, or replaced in sys.modules, since the world was prepared.
        for patch in self._patches:
            for alias in patch.aliases:
                current = sys.modules.get(alias)
                if current is not None and id(current) not in planned:
                    _apply(patch, current)
        if self._removed_builtins:
            for module in list(sys.modules.values()):
                if id(module) not in planned and isinstance(module, ModuleType):
                    _shield_module(module, self._removed_builtins)
        logger.debug("installed edited world for %s", ", ".join(self.api_ids))

    def _plan_modules(self) -> list[_ModulePlan]:
        """Everything `install` writes, computed now so the forked child only assigns."""
        patches = {id(patch.module): patch for patch in self._patches}
        modules = {id(patch.module): patch.module for patch in self._patches}
        if self._removed_builtins:
            for module in list(sys.modules.values()):
                if isinstance(module, ModuleType):
                    modules.setdefault(id(module), module)
        plans = [
            _ModulePlan.build(module, patches.get(key), self._removed_builtins)
            for key, module in modules.items()
        ]
        plans.sort(key=lambda plan: plan.module is builtins)
        return [plan for plan in plans if not plan.is_empty()]

    def __repr__(self) -> str:
        return f"PreparedWorld({', '.join(self.api_ids)})"


def _record_key(record: Mapping[str, Any] | ApiMapping) -> tuple[str, ...]:
    if isinstance(record, ApiMapping):
        return tuple(repr(getattr(record, name)) for name in RECORD_FIELDS)
    if not hasattr(record, "get"):
        return (repr(record),)  # not a record: parse_mappings raises the explanatory error
    return tuple(repr(plain_value(record.get(name))) for name in RECORD_FIELDS)


def _patch_for(patches: dict[int, _ModulePatch], module: ModuleType) -> _ModulePatch:
    patch = patches.get(id(module))
    if patch is None:
        patch = _ModulePatch(
            module=module,
            aliases=tuple(_module_aliases(module)),
            keeps_globals=_runs_python_code(module),
        )
        patches[id(module)] = patch
    return patch


def _module_aliases(module: ModuleType) -> list[str]:
    """Names under which the module sits in sys.modules ('os.path' and 'posixpath')."""
    aliases = [name for name, value in list(sys.modules.items()) if value is module]
    return aliases or [module.__name__]


def _twin_modules(module: ModuleType, name: str, obj: Any) -> list[ModuleType]:
    """Other modules exposing the very same object under the same name."""
    candidates = {getattr(obj, "__module__", None), *_KNOWN_TWINS.get(module.__name__, ())}
    for alias in _module_aliases(module):
        candidates.add("_" + alias.rpartition(".")[2])
    twins: list[ModuleType] = []
    for candidate in sorted(c for c in candidates if isinstance(c, str) and c):
        other = sys.modules.get(candidate)
        if other is None:
            try:
                other = importlib.import_module(candidate)
            except ImportError:
                continue
        if other is not module and _module_dict(other).get(name) is obj and other not in twins:
            twins.append(other)
    return twins


def _runs_python_code(module: ModuleType) -> bool:
    """True when the module dict is the globals of Python functions (so names must stay)."""
    spec = getattr(module, "__spec__", None)
    loader = getattr(spec, "loader", None)
    if loader is importlib.machinery.BuiltinImporter:
        return False
    return not isinstance(loader, importlib.machinery.ExtensionFileLoader)


# ------------------------------------------------------------------------- applying a patch


def _apply(patch: _ModulePatch, module: ModuleType) -> None:
    namespace = _module_dict(module)
    _hide(module, patch.hidden)
    if not patch.keeps_globals:
        for name in patch.hidden:
            namespace.pop(name, None)
    namespace.update(patch.added)
    _edit_all(namespace, patch.hidden, patch.added, create=patch.keeps_globals)


def _hide(module: ModuleType, hidden: Mapping[str, Any]) -> None:
    """Make names unreachable as attributes from program code (see `_RemovedAttribute`)."""
    if not hidden:
        return
    base, already = _hiding_info(type(module))
    if not _set_module_class(module, _hiding_class(base, {**already, **hidden})):
        # An exotic module type that refuses a new class: removing beats leaking.
        for name in hidden:
            _module_dict(module).pop(name, None)


def _set_module_class(module: ModuleType, cls: type) -> bool:
    """Give `module` the class `cls`; False where its layout cannot take it.

    Through `object.__setattr__`, not `module.__class__ = cls`: a module type may define its own
    `__setattr__` that refuses every unknown name (torch's config modules raise AttributeError),
    which made installing a world fail in any process that had imported torch.
    """
    try:
        object.__setattr__(module, "__class__", cls)
    except TypeError:
        return False
    return True


def _edit_all(
    namespace: dict[str, Any], hidden: Mapping[str, Any], added: Mapping[str, Any], *, create: bool
) -> None:
    exported = namespace.get("__all__")
    if exported is None:
        if not (create and hidden):
            return  # a star import walks the dict, which already matches
        exported = [name for name in namespace if not name.startswith("_")]
    kept = [name for name in exported if name not in hidden]
    namespace["__all__"] = kept + [name for name in added if name not in kept]


def _shield_module(module: ModuleType, removed_builtins: Mapping[str, Any]) -> None:
    """Keep library code working without the removed builtins.

    Library functions find globals before builtins, so the removed builtins are put into the
    globals of every Python module (never over a name the module defines) and hidden from
    program code there. Only the program's own namespace, which has no such globals, loses them.
    """
    if getattr(module, "__name__", None) == "builtins" or not _runs_python_code(module):
        return
    namespace = _module_dict(module)
    injected = {
        name: obj
        for name, obj in removed_builtins.items()
        if namespace.setdefault(name, obj) is obj
    }
    _hide(module, injected)
    _edit_all(namespace, injected, {}, create=True)


class _LibraryRegistry:
    """The globals dicts of library modules (see the module docstring), held strongly so an id
    is never reused by a dict the program creates."""

    def __init__(self) -> None:
        self._dicts: dict[int, dict[str, Any]] = {}
        self._seen_modules = 0
        paths = sysconfig.get_paths()
        roots = {paths.get(key) for key in ("stdlib", "platstdlib", "purelib", "platlib")}
        roots.add(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        self._roots = tuple(os.path.realpath(root) + os.sep for root in roots if root)

    def remember(self, module: ModuleType) -> None:
        namespace = _module_dict(module)
        self._dicts[id(namespace)] = namespace

    def remember_loaded(self) -> None:
        if len(sys.modules) == self._seen_modules:
            return
        for module in list(sys.modules.values()):
            if isinstance(module, ModuleType):
                self.remember(module)
        self._seen_modules = len(sys.modules)

    def remember_if_trusted(self, module: ModuleType) -> None:
        """A module just executed by a standard loader: library if it comes from our roots."""
        spec = getattr(module, "__spec__", None)
        origin = getattr(spec, "origin", None)
        if origin in ("built-in", "frozen") or (
            isinstance(origin, str) and os.path.realpath(origin).startswith(self._roots)
        ):
            self.remember(module)

    def __contains__(self, namespace: dict[str, Any]) -> bool:
        return id(namespace) in self._dicts


_LIBRARY = _LibraryRegistry()


def remember_library_modules() -> None:
    """Count every module loaded now as library code (cheap when nothing new was imported)."""
    _LIBRARY.remember_loaded()


def is_library_frame(frame: FrameType | None) -> bool:
    """True for a frame running library code (see the module docstring)."""
    return frame is not None and frame.f_globals in _LIBRARY


_ATTRIBUTE_OPCODES = frozenset(
    dis.opmap[name]
    for name in ("LOAD_ATTR", "LOAD_METHOD", "IMPORT_FROM", "LOAD_SUPER_ATTR")
    if name in dis.opmap
)
_LOAD_ATTR = dis.opmap["LOAD_ATTR"]
_EXTENDED_ARG = dis.opmap["EXTENDED_ARG"]
_LOAD_ATTR_SHIFT = 1 if sys.version_info >= (3, 12) else 0  # 3.12 folded LOAD_METHOD in
_BYTECODE: dict[int, tuple[Any, bytes]] = {}


def _literal_access(frame: FrameType, name: str) -> bool:
    """True when the frame's current instruction reads attribute `name` written in its source."""
    code = frame.f_code
    cached = _BYTECODE.get(id(code))
    if cached is None or cached[0] is not code:
        cached = _BYTECODE[id(code)] = (code, code.co_code)
    raw = cached[1]
    offset = frame.f_lasti
    if not 0 <= offset < len(raw) - 1 or raw[offset] not in _ATTRIBUTE_OPCODES:
        return False
    argument, shift, back = raw[offset + 1], 8, offset - 2
    while back >= 0 and raw[back] == _EXTENDED_ARG:
        argument |= raw[back + 1] << shift
        shift, back = shift + 8, back - 2
    if raw[offset] == _LOAD_ATTR:
        argument >>= _LOAD_ATTR_SHIFT
    names = code.co_names
    return argument < len(names) and names[argument] == name


def _called_from_library(frame: FrameType | None, name: str) -> bool:
    """True for library code reading `name` literally; False for the program (see above)."""
    return is_library_frame(frame) and _literal_access(frame, name)  # type: ignore[arg-type]


class _RemovedAttribute:
    """Data descriptor that makes a module attribute absent for program code.

    Code of imported library modules still gets the original object, so the std-lib keeps
    working (`statistics` does `from functools import reduce`, `tempfile` calls
    `os.path.join`); program code, run in a namespace that is no module's, sees the name gone.
    It holds only the name: the original lives in the private registry of hiding classes.
    """

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, module: ModuleType | None, owner: type | None = None) -> Any:
        if module is None:
            return self
        if _called_from_library(_getframe(1), self.name):
            original = _HIDING_INFO[type(module)][1][self.name]
            return _module_dict(module).get(self.name, original)
        # ModuleType turns this into "module 'json' has no attribute 'dumps'".
        raise AttributeError(self.name)

    def __set__(self, module: ModuleType, value: Any) -> None:
        # Program code defining the name again (a polyfill) must see its own value.
        base, hidden = _HIDING_INFO[type(module)]
        remaining = {k: v for k, v in hidden.items() if k != self.name}
        _set_module_class(module, _hiding_class(base, remaining))
        _module_dict(module)[self.name] = value

    def __delete__(self, module: ModuleType) -> None:
        raise AttributeError(self.name)


def _visible_dict(module: ModuleType) -> dict[str, Any]:
    """`vars(m)` / `m.__dict__`: the real dict for library code, a copy without hidden names
    for the program (a Python module's dict still holds them: they are its functions' globals)."""
    namespace = _module_dict(module)
    if _called_from_library(_getframe(1), "__dict__"):
        return namespace
    hidden = _HIDING_INFO[type(module)][1]
    return {name: value for name, value in namespace.items() if name not in hidden}


# hiding class -> (the module class it derives from, hidden name -> original object)
_HIDING_INFO: dict[type, tuple[type, dict[str, Any]]] = {}
_HIDING_CLASSES: dict[tuple[type, tuple[tuple[str, int], ...]], type] = {}


def _hiding_info(cls: type) -> tuple[type, dict[str, Any]]:
    return _HIDING_INFO.get(cls, (cls, {}))


def _hiding_class(base: type, hidden: Mapping[str, Any]) -> type:
    if not hidden:
        return base
    key = (base, tuple(sorted((name, id(obj)) for name, obj in hidden.items())))
    cls = _HIDING_CLASSES.get(key)
    if cls is None:
        names = frozenset(hidden)

        def __dir__(module: ModuleType) -> list[str]:
            return [name for name in base.__dir__(module) if name not in names]

        namespace: dict[str, Any] = {name: _RemovedAttribute(name) for name in hidden}
        namespace.update(
            __dir__=__dir__, __dict__=property(_visible_dict), __module__=base.__module__
        )
        cls = type(base.__name__, (base,), namespace)
        _HIDING_INFO[cls] = (base, dict(hidden))
        _HIDING_CLASSES[key] = cls
    return cls


# --------------------------------------------------------------------- re-applying on import


class _Repatcher:
    """What every module execution must re-apply: the patches and the removed builtins."""

    def __init__(self) -> None:
        self._by_name: dict[str, list[_ModulePatch]] = {}
        self._by_origin: dict[str, list[_ModulePatch]] = {}
        self._removed_builtins: dict[str, Any] = {}

    def shield(self, removed_builtins: Mapping[str, Any]) -> None:
        """From now on, every freshly executed library module gets the removed builtins."""
        self._removed_builtins.update(removed_builtins)

    def register(self, patch: _ModulePatch) -> None:
        for alias in patch.aliases:
            registered = self._by_name.setdefault(alias, [])
            if patch not in registered:
                registered.append(patch)
        origin = _origin(patch.module)
        if origin is not None:
            registered = self._by_origin.setdefault(origin, [])
            if patch not in registered:
                registered.append(patch)

    def before_exec(self, module: ModuleType) -> None:
        if self._removed_builtins and _runs_python_code(module):
            # Before exec: module-level code of a fresh library module may use them.
            namespace = _module_dict(module)
            for name, obj in self._removed_builtins.items():
                namespace.setdefault(name, obj)

    def after_exec(self, module: ModuleType) -> None:
        patches = list(self._by_name.get(getattr(module, "__name__", None), []))  # type: ignore[arg-type]
        origin = _origin(module)
        patches += [p for p in self._by_origin.get(origin, []) if p not in patches]  # type: ignore[arg-type]
        for patch in patches:
            _apply(patch, module)
        if self._removed_builtins:
            _shield_module(module, self._removed_builtins)


def _origin(module: ModuleType) -> str | None:
    origin = getattr(getattr(module, "__spec__", None), "origin", None)
    if not isinstance(origin, str) or origin in ("built-in", "frozen"):
        return None
    return os.path.realpath(origin)


_REPATCHER = _Repatcher()


class _ExecHooks:
    """Hooks around every module execution by the standard loaders (see the module docstring)."""

    hooks: ClassVar[list[tuple[Any, Any]]] = []
    installed = False


def _hooked_exec(original: Any) -> Any:
    def exec_module(*args: Any) -> None:
        module = args[-1]
        _LIBRARY.remember_if_trusted(module)  # before: its own top level is library code
        for before, _after in list(_ExecHooks.hooks):
            if before is not None:
                before(module)
        original(*args)
        for _before, after in list(_ExecHooks.hooks):
            if after is not None:
                after(module)

    return exec_module


def add_module_exec_hook(before: Any = None, after: Any = None) -> None:
    """Run `before(module)` / `after(module)` around every execution of a module by one of the
    standard loaders, in this process from now on (the sandbox calls it in a forked child)."""
    if (before, after) not in _ExecHooks.hooks:
        _ExecHooks.hooks.append((before, after))
    if _ExecHooks.installed:
        return
    external = importlib.machinery.SourceFileLoader.__mro__  # FileLoader, SourceLoader, ...
    basics = next(cls for cls in external if "exec_module" in cls.__dict__)
    loaders = (
        importlib.machinery.BuiltinImporter,
        importlib.machinery.FrozenImporter,
        importlib.machinery.ExtensionFileLoader,
        basics,
    )
    for loader in loaders:
        raw = loader.__dict__["exec_module"]
        if isinstance(raw, staticmethod):
            loader.exec_module = staticmethod(_hooked_exec(raw.__func__))
        else:
            loader.exec_module = _hooked_exec(raw)
    _ExecHooks.installed = True
