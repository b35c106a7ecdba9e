"""Registry of task families: explicit registration plus installed packages' entry points.

Third-party packages (and the built-in ``metasgd_rl_envs`` package, folder ``envs/``) declare families in the
entry-point group ``metasgd_rl.task_families``: the entry point's name is the family id and its value the
``"module:attr"`` of a :class:`TaskFamily` subclass or factory. Entry points are discovered lazily and
their modules are imported only when a family is made, so one broken plugin does not break the others.
"""

from __future__ import annotations

import importlib
import json
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, overload

from metasgd_rl.family import TaskFamily

ENTRY_POINT_GROUP = "metasgd_rl.task_families"

EntryPoint = str | Callable[..., TaskFamily]


@dataclass
class FamilySpec:
    """How to build one registered family: an entry point and default keyword arguments."""

    id: str
    entry_point: EntryPoint
    kwargs: dict[str, Any] = field(default_factory=dict)
    source: str = "register_task_family"

    def same_target(self, other: FamilySpec) -> bool:
        return _same_name(_target_name(self.entry_point), _target_name(other.entry_point)) and \
            self.kwargs == other.kwargs


def _same_name(a: str, b: str) -> bool:
    """Whether two ``module:attr`` names are the same object, allowing a package to re-export it
    (``pkg:Cls`` names ``pkg.mod:Cls`` when the entry point points at the package's re-export)."""
    if a == b:
        return True
    (mod_a, _, attr_a), (mod_b, _, attr_b) = a.partition(":"), b.partition(":")
    return attr_a == attr_b and (mod_a.startswith(mod_b + ".") or mod_b.startswith(mod_a + "."))


class UnknownTaskFamilyError(KeyError):
    """Raised by :func:`make_task_family` for an id nobody registered."""

    def __str__(self) -> str:  # KeyError would print the message with quotes around it
        return str(self.args[0])


_REGISTRY: dict[str, FamilySpec] = {}
_PLUGINS_LOADED = False
_PLUGINS_LOCK = threading.RLock()


def _target_name(entry_point: EntryPoint) -> str:
    if isinstance(entry_point, str):
        return entry_point
    return f"{entry_point.__module__}:{entry_point.__qualname__}"


def _check_id(family_id: str) -> None:
    if not isinstance(family_id, str) or not family_id.strip():
        raise ValueError(f"a task family id must be a non-empty string, got {family_id!r}")


def _add(spec: FamilySpec) -> None:
    existing = _REGISTRY.get(spec.id)
    if existing is not None:
        if existing.same_target(spec):
            return  # re-importing a module that registers itself is harmless
        raise ValueError(
            f"task family {spec.id!r} is already registered (entry point "
            f"{_target_name(existing.entry_point)!r}, from {existing.source}); refusing to replace it with "
            f"{_target_name(spec.entry_point)!r}. Pick another id, e.g. {spec.id.rsplit('-v', 1)[0]}-v1."
        )
    _REGISTRY[spec.id] = spec


@overload
def register_task_family(family_id: str, entry_point: EntryPoint, **kwargs: Any) -> None: ...
@overload
def register_task_family(family_id: str, entry_point: None = None, **kwargs: Any) -> Callable[[type], type]: ...


def register_task_family(family_id: str, entry_point: EntryPoint | None = None, **kwargs: Any):
    """Register a task family under ``family_id``.

    As a function, ``entry_point`` is ``"pkg.mod:Class"`` (imported lazily) or a callable returning a
    :class:`TaskFamily`; ``kwargs`` are default constructor arguments. Without ``entry_point`` it is a class
    decorator: ``@register_task_family("Name-v0")`` on a :class:`TaskFamily` subclass.
    A duplicate id with a different target is refused.
    """
    _check_id(family_id)
    if entry_point is None:

        def decorator(cls: type) -> type:
            if not (isinstance(cls, type) and issubclass(cls, TaskFamily)):
                raise TypeError(
                    f"@register_task_family({family_id!r}) decorates a TaskFamily subclass, got {cls!r}"
                )
            _add(_validated(FamilySpec(family_id, cls, dict(kwargs))))
            return cls

        return decorator
    if not (isinstance(entry_point, str) or callable(entry_point)):
        raise TypeError(f"entry_point must be 'module:attr' or a callable, got {entry_point!r}")
    if isinstance(entry_point, str) and entry_point.count(":") != 1:
        raise ValueError(f"entry_point {entry_point!r} for {family_id!r} must look like 'package.module:Class'")
    _add(_validated(FamilySpec(family_id, entry_point, dict(kwargs))))
    return None


def _validated(spec: FamilySpec) -> FamilySpec:
    """Let a family class check its declaration now (``validate_registration``), not at first use.

    A :class:`~metasgd_rl.GymTaskFamily` builds a probe env here, so a parameter path the env lacks fails at
    registration. String entry points stay lazy: their modules are imported only when the family is made.
    """
    validate = getattr(spec.entry_point, "validate_registration", None)
    if not isinstance(spec.entry_point, str) and callable(validate):
        existing = _REGISTRY.get(spec.id)
        if existing is None or not existing.same_target(spec):
            validate(**spec.kwargs)
    return spec


def _load_plugins() -> None:
    """Merge the entry points of installed packages into the registry (once; thread-safe: a thread that asks
    while another is loading waits for the whole registry instead of seeing part of it)."""
    global _PLUGINS_LOADED
    if _PLUGINS_LOADED:
        return
    with _PLUGINS_LOCK:
        if _PLUGINS_LOADED:
            return
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            spec = FamilySpec(ep.name, ep.value, {}, source=f"entry point of {ep.dist.name if ep.dist else '?'}")
            try:
                _add(spec)
            except ValueError as err:
                warnings.warn(f"ignoring conflicting entry point: {err}", stacklevel=2)
        _PLUGINS_LOADED = True


def list_task_families() -> list[str]:
    """Ids of all registered families, including those declared by installed packages, sorted."""
    _load_plugins()
    return sorted(_REGISTRY)


def _resolve(spec: FamilySpec) -> Callable[..., TaskFamily]:
    if not isinstance(spec.entry_point, str):
        return spec.entry_point
    module_name, _, attr = spec.entry_point.partition(":")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attr)
    except Exception as err:  # an import error inside a plugin is reported, not swallowed
        missing = getattr(err, "name", None) if isinstance(err, ModuleNotFoundError) else None
        advice = f"; install the package that provides the module {missing!r}" if missing else ""
        raise ImportError(
            f"task family {spec.id!r} (declared by {spec.source}): could not import entry point "
            f"{spec.entry_point!r} ({type(err).__name__}: {err}){advice}"
        ) from err


def close_family_ids(family_id: str, ids: list[str] | None = None) -> list[str]:
    """Registered ids (at most 3, closest first) that ``family_id`` likely means: their names without the version
    suffix (``-v0``) are alike or one starts with the other, so that a shared suffix alone is no resemblance."""
    import difflib
    import re

    def stem(name: str) -> str:
        return re.sub(r"-v\d+$", "", str(name)).lower()

    _load_plugins()
    target = stem(family_id)
    scored = []
    for i in sorted(_REGISTRY) if ids is None else ids:
        other = stem(i)
        ratio = difflib.SequenceMatcher(None, target, other).ratio()
        prefix = min(len(target), len(other)) >= 4 and (other.startswith(target) or target.startswith(other))
        if ratio >= 0.8 or prefix:
            scored.append((-ratio, i))
    return [i for _, i in sorted(scored, key=lambda item: item[0])][:3]  # ties keep the order of ``ids``


def close_gymnasium_id(family_id: str) -> str | None:
    """The gymnasium env id that ``family_id`` names or likely means (``acrobot-v2`` means ``Acrobot-v1``: the
    newest version of the closest name), or None. Only gymnasium's registry is read: no module is imported."""
    import re

    import gymnasium as gym

    if not isinstance(family_id, str):
        return None
    if family_id in gym.registry:
        return family_id

    def name_then_newest(env_id: str) -> tuple[str, int]:
        name, version = re.fullmatch(r"(.*?)(?:-v(\d+))?", env_id).groups()
        return name.lower(), -int(version or 0)

    close = close_family_ids(family_id, sorted(gym.registry, key=name_then_newest))
    return close[0] if close else None


#: where an unknown-family message sends the user for the registered ids
LIST_HINT = "metasgd-rl families lists them"


def unknown_family_message(family_id: str, subject: str | None = None) -> str:
    """One line saying that ``family_id`` is not registered (``subject`` names it, by default ``task family 'X'``),
    leading with what the user likely meant: close registered ids; for a gymnasium env id (or one close to it), how
    to use that env through ``GymEnv-v0`` and the parameters it has; only when nothing is close, how to register a
    family so that every process (the CLI, Ray workers) knows it."""
    from metasgd_rl.gym_family import gymnasium_advice

    _load_plugins()
    subject = subject or f"task family {family_id!r}"
    close = close_family_ids(family_id)
    meant = f"did you mean {' or '.join(map(repr, close))}?"
    env_id = close_gymnasium_id(family_id)
    if env_id is not None and env_id == family_id:
        return f"{subject} is a gymnasium env, not a task family: " + \
            (f"{meant} Or {gymnasium_advice(env_id)}" if close else gymnasium_advice(env_id))
    if close:
        return f"{subject} is not registered; {meant} ({LIST_HINT})"
    if env_id is not None:
        return f"{subject} is not registered; did you mean gymnasium's {env_id!r}? If so, {gymnasium_advice(env_id)}"
    return (
        f"{subject} is not registered in this process: a family registered in Python (register_task_family) exists "
        "only in a process that imported its module, and the metasgd-rl command and Ray workers are fresh processes; "
        f"declare it as an entry point of your package (pyproject.toml: [project.entry-points.\"{ENTRY_POINT_GROUP}\"] "
        f"{json.dumps(str(family_id))} = \"your_package.module:YourFamily\", then pip install -e .) or, in Python, "
        f"import that module first ({LIST_HINT})"
    )


def make_task_family(family_id: str, **kwargs: Any) -> TaskFamily:
    """Build the family registered as ``family_id``; ``kwargs`` override the registered defaults."""
    _load_plugins()
    spec = _REGISTRY.get(family_id)
    if spec is None:
        raise UnknownTaskFamilyError(unknown_family_message(family_id))
    factory = _resolve(spec)
    family = factory(**{**spec.kwargs, **kwargs})
    if not isinstance(family, TaskFamily):
        raise TypeError(
            f"entry point {_target_name(spec.entry_point)!r} of {family_id!r} returned "
            f"{type(family).__name__}, not a TaskFamily"
        )
    family.id = family_id
    # so that a saved model can rebuild the same family, whatever later defaults
    recorded = {key: getattr(family, key) for key in getattr(family, "legacy_kwargs", {}) if hasattr(family, key)}
    family.make_kwargs = _plain_kwargs({**recorded, **kwargs})
    return family


def legacy_family_kwargs(family_id: Any, family_kwargs: Any) -> Any:
    """``family_kwargs`` of a saved run or checkpoint completed with what the family was built with before these
    arguments existed (its class's ``legacy_kwargs``); unchanged for an unknown id or a family without them."""
    _load_plugins()
    spec = _REGISTRY.get(family_id) if isinstance(family_id, str) else None
    if spec is None or not isinstance(family_kwargs, (dict, type(None))):
        return family_kwargs
    try:
        legacy = getattr(_resolve(spec), "legacy_kwargs", {})
    except ImportError:
        return family_kwargs  # building the family will say so
    return {**legacy, **(family_kwargs or {})} if isinstance(legacy, dict) and legacy else family_kwargs


def _plain_kwargs(value: Any) -> Any:
    """``kwargs`` with objects that have a plain-data form (``to_dict``, e.g. distributions) replaced by it."""
    if isinstance(value, dict):
        return {k: _plain_kwargs(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_kwargs(v) for v in value]
    to_dict = getattr(value, "to_dict", None)
    return to_dict() if callable(to_dict) else value


def describe_task_family(family_id: str) -> str:
    """First line of the docstring of the class (or factory) registered as ``family_id``, imported but not built.

    Raises :class:`UnknownTaskFamilyError` for an unknown id and ``ImportError`` for a broken entry point.
    """
    _load_plugins()
    spec = _REGISTRY.get(family_id)
    if spec is None:
        raise UnknownTaskFamilyError(f"unknown task family {family_id!r}")
    doc = (_resolve(spec).__doc__ or "").strip()
    return doc.splitlines()[0].strip() if doc else ""
