"""Distributions over environment parameters, and how a dotted attribute path reaches the parameter.

A :class:`~metasgd_rl.gym_family.GymTaskFamily` declares which parameters of a gymnasium env vary between
tasks as ``{path: distribution}``. The path names an attribute of the env (``"length"`` of CartPole),
possibly nested (``"model.body_mass"`` of a MuJoCo env); the distribution says how a task's value is drawn
and whether it replaces the env's default value or multiplies it (``scale=True``, as ProMP's random-parameter
families scale masses and frictions by log-uniform factors).

Distributions are also accepted as plain dicts so that YAML configs can declare a family::

    {"uniform": [0.25, 1.0]}   {"log_uniform": [0.3, 3.4], "scale": true}   {"choice": [-1.0, 1.0]}
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np


@dataclass(frozen=True)
class Distribution:
    """Base of the parameter distributions.

    ``shape=None`` draws a scalar, or, with ``scale=True``, one factor per element of the env's default
    value. ``scale=True`` multiplies the default value by the drawn factor instead of replacing it; the task
    then records the factor.
    """

    shape: tuple[int, ...] | None = field(default=None, kw_only=True)
    scale: bool = field(default=False, kw_only=True)

    def __post_init__(self) -> None:
        if self.shape is not None:
            shape = tuple(int(s) for s in np.atleast_1d(self.shape)) if self.shape != () else ()
            if any(s < 1 for s in shape):
                raise ValueError(f"{type(self).__name__}: shape must contain positive sizes, got {self.shape!r}")
            object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "scale", bool(self.scale))

    def draw(self, rng: np.random.Generator, size: tuple[int, ...]) -> np.ndarray:
        """``size`` independent draws as an array of that shape."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """The plain-dict form that :func:`parse_distribution` reads back."""
        raise NotImplementedError

    def _extras(self) -> dict[str, Any]:
        extras: dict[str, Any] = {}
        if self.shape is not None:
            extras["shape"] = list(self.shape)
        if self.scale:
            extras["scale"] = True
        return extras


def _finite_pair(name: str, low: float, high: float) -> tuple[float, float]:
    low, high = float(low), float(high)
    if not (math.isfinite(low) and math.isfinite(high)) or low > high:
        raise ValueError(f"{name}(low={low}, high={high}): need finite bounds with low <= high")
    return low, high


@dataclass(frozen=True)
class Uniform(Distribution):
    """Uniform in ``[low, high]``."""

    low: float
    high: float

    def __post_init__(self) -> None:
        super().__post_init__()
        low, high = _finite_pair("Uniform", self.low, self.high)
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)

    def draw(self, rng: np.random.Generator, size: tuple[int, ...]) -> np.ndarray:
        return rng.uniform(self.low, self.high, size=size)

    def to_dict(self) -> dict[str, Any]:
        return {"uniform": [self.low, self.high], **self._extras()}


@dataclass(frozen=True)
class LogUniform(Distribution):
    """Log-uniform in ``[low, high]`` (``0 < low``): uniform in log space, for scales such as masses."""

    low: float
    high: float

    def __post_init__(self) -> None:
        super().__post_init__()
        low, high = _finite_pair("LogUniform", self.low, self.high)
        if low <= 0:
            raise ValueError(f"LogUniform(low={low}, high={high}): low must be > 0")
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)

    def draw(self, rng: np.random.Generator, size: tuple[int, ...]) -> np.ndarray:
        return np.exp(rng.uniform(math.log(self.low), math.log(self.high), size=size))

    def to_dict(self) -> dict[str, Any]:
        return {"log_uniform": [self.low, self.high], **self._extras()}


@dataclass(frozen=True)
class Choice(Distribution):
    """One of ``values`` with equal probability (numbers, or equal-length lists of numbers)."""

    values: tuple

    def __post_init__(self) -> None:
        super().__post_init__()
        values = np.asarray(self.values, dtype=np.float64) if len(self.values) else np.zeros(0)
        if len(values) == 0 or not np.all(np.isfinite(values)):
            raise ValueError(f"Choice(values={list(self.values)!r}): need at least one finite value")
        if values.ndim > 1 and self.shape is not None:
            raise ValueError("Choice: give either vector values or shape, not both")
        object.__setattr__(self, "values", tuple(np.asarray(self.values).tolist()))

    def draw(self, rng: np.random.Generator, size: tuple[int, ...]) -> np.ndarray:
        values = np.asarray(self.values)
        value_shape = values.shape[1:]
        index = rng.integers(len(values), size=size[: len(size) - len(value_shape)] if value_shape else size)
        return values[index]

    def to_dict(self) -> dict[str, Any]:
        return {"choice": list(self.values), **self._extras()}


_KINDS: dict[str, type[Distribution]] = {"uniform": Uniform, "log_uniform": LogUniform, "choice": Choice}


def parse_distribution(spec: Distribution | Mapping[str, Any], name: str = "parameter") -> Distribution:
    """A :class:`Distribution` from itself or from its dict form (``{"uniform": [low, high], ...}``)."""
    if isinstance(spec, Distribution):
        return spec
    if not isinstance(spec, Mapping):
        raise TypeError(
            f"{name}: expected a Distribution (Uniform, LogUniform, Choice) or a dict such as "
            f"{{'uniform': [0.5, 2.0]}}, got {spec!r}"
        )
    kinds = [k for k in spec if k in _KINDS]
    unknown = [k for k in spec if k not in _KINDS and k not in ("shape", "scale")]
    if len(kinds) != 1 or unknown:
        raise ValueError(
            f"{name}: {dict(spec)!r} must have exactly one of the keys {sorted(_KINDS)} plus optional "
            f"'shape' and 'scale'"
        )
    kind = kinds[0]
    extras = {k: spec[k] for k in ("shape", "scale") if k in spec}
    args = spec[kind]
    if kind == "choice":
        return Choice(tuple(args), **extras)
    if not isinstance(args, Sequence) or len(args) != 2:
        raise ValueError(f"{name}: {kind} takes [low, high], got {args!r}")
    return _KINDS[kind](*args, **extras)


# ---------------------------------------------------------------------------------------------------------
# attribute paths


class ParameterPathError(ValueError):
    """A declared parameter does not exist on the environment (or cannot hold the values drawn for it)."""


def _chain(env: gym.Env) -> list[Any]:
    """The env and everything it wraps, outermost first."""
    chain: list[Any] = [env]
    while isinstance(chain[-1], gym.Wrapper):
        chain.append(chain[-1].env)
    return chain


def _has(obj: Any, name: str) -> bool:
    try:
        return name in vars(obj) or hasattr(type(obj), name)
    except TypeError:  # objects without __dict__ (e.g. MuJoCo structs)
        return hasattr(obj, name)


def _public_names(obj: Any) -> list[str]:
    return [n for n in dir(obj) if not n.startswith("_")]


def close_names(name: str, names: list[str], n: int = 3) -> list[str]:
    """The (at most ``n``) ``names`` most like ``name``, closest first, ignoring case: envs spell their parameters in
    either case (Acrobot's ``LINK_LENGTH_1``, CartPole's ``length``), and a user types ``link_length_1``."""
    by_lower: dict[str, list[str]] = {}
    for other in names:
        by_lower.setdefault(other.lower(), []).append(other)
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=n)
    return [other for lowered in close for other in by_lower[lowered]][:n]


@dataclass(frozen=True)
class ParameterSlot:
    """Where one parameter lives: ``owner.attr`` (an array is written in place)."""

    owner: Any
    attr: str

    def get(self) -> Any:
        return getattr(self.owner, self.attr)

    def set(self, value: Any) -> None:
        current = self.get()
        if isinstance(current, np.ndarray):
            np.copyto(current, np.asarray(value, dtype=current.dtype).reshape(current.shape))
        elif isinstance(current, (bool, np.bool_)):
            setattr(self.owner, self.attr, bool(value))
        elif isinstance(current, (int, np.integer)) and float(value).is_integer():
            setattr(self.owner, self.attr, int(value))
        else:
            setattr(self.owner, self.attr, float(value))


def resolve_path(env: gym.Env, path: str, env_name: str = "the environment") -> ParameterSlot:
    """The slot that ``path`` names on ``env``.

    The first component is looked up on the wrappers from the outside in, then on ``env.unwrapped`` (so a
    reward wrapper's ``goal_velocity`` and CartPole's ``length`` both resolve); later components are plain
    attributes. A missing attribute raises :class:`ParameterPathError` naming the path and close matches.
    """
    parts = path.split(".")
    if not path or not all(parts):
        raise ParameterPathError(f"parameter path {path!r} is not a dotted attribute name")
    private = next((part for part in parts if part.startswith("_")), None)
    if private is not None:  # through __class__, __dict__, __globals__ a task would rewrite Python's own objects
        raise ParameterPathError(
            f"{env_name}: parameter path {path!r} is not allowed: {private!r} starts with '_', and private attributes "
            "and Python internals cannot vary between tasks; name public attributes only (a wrapper or subclass can "
            "expose a private value as a public property)"
        )
    chain = _chain(env)
    owner = next((obj for obj in chain if _has(obj, parts[0])), None)
    if owner is None:
        names = sorted({n for obj in chain for n in _public_names(obj)})
        close = close_names(parts[0], names)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ParameterPathError(
            f"{env_name} has no parameter {path!r}: no attribute {parts[0]!r} on its wrappers or on "
            f"{type(env.unwrapped).__name__}.{hint}"
        )
    for i, part in enumerate(parts[1:], start=1):
        obj = getattr(owner, parts[i - 1])
        if not _has(obj, part):
            close = close_names(part, _public_names(obj))
            hint = f" Did you mean {', '.join(repr('.'.join(parts[:i] + [c])) for c in close)}?" if close else ""
            raise ParameterPathError(
                f"{env_name} has no parameter {path!r}: {'.'.join(parts[:i])!r} "
                f"({type(obj).__name__}) has no attribute {part!r}.{hint}"
            )
        owner = obj
    slot = ParameterSlot(owner, parts[-1])
    value = slot.get()
    if isinstance(value, np.ndarray):
        if not np.issubdtype(value.dtype, np.number):
            raise ParameterPathError(f"{env_name}: parameter {path!r} is an array of {value.dtype}, not numbers")
    elif not isinstance(value, (int, float, np.number)) or isinstance(value, bool):
        raise ParameterPathError(
            f"{env_name}: parameter {path!r} is {type(value).__name__} {value!r}; only numbers and numeric "
            "arrays can vary between tasks"
        )
    return slot
