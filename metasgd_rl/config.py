"""Experiment configs: a YAML file plus ``--set key=value`` overrides, validated into one complete dict.

A config holds the constructor arguments of :class:`~metasgd_rl.MetaSGD` / :class:`~metasgd_rl.MAML`
(``family``, ``meta_batch_size``, ``outer_kwargs``, ...) and the run keys of :data:`RUN_DEFAULTS` (``algo``,
``iterations``, ``checkpoint_every``, ...). :func:`resolve_config` checks every key, type and range *before*
anything is written, fills in every default (so a run's ``config.yaml`` fixes the run even if a default
changes later) and raises a :class:`ConfigError` whose one-line message names the key, the value and what
is allowed.

YAML note: plain PyYAML reads ``1e-5`` as a string (YAML 1.1 wants ``1.0e-5``); :func:`yaml_load` reads it
as the number everybody means.
"""

from __future__ import annotations

import copy
import difflib
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from metasgd_rl.quote import short_repr, short_text

RUN_DEFAULTS: dict[str, Any] = {
    "algo": "metasgd",
    "iterations": None,  # required
    "checkpoint_every": 50,
    "eval_every": 0,
    "eval_tasks": 40,
    "run_dir": None,  # default: runs/<config name>-<timestamp>
    "progress_bar": True,
}
ALGOS = ("metasgd", "maml")
#: MAML fixes these constructor arguments (one untrained scalar α); its configs must not set them
MAML_FIXED = ("alpha_granularity", "learn_alpha", "alpha_parameterization", "alpha_optimizer", "alpha_lr")
#: the only keys ``--set`` may change when resuming: they do not change what the iterations compute (a
#: ``task_chunk_size`` changes only the order of floating-point sums, ``max_envs`` nothing but peak memory)
RESUME_MUTABLE = ("iterations", "checkpoint_every", "eval_every", "progress_bar", "sampler", "ray_address",
                  "ray_workers", "task_chunk_size", "ray_startup_timeout", "max_envs")


#: the longest error message a refusal prints: values are quoted short (:func:`short_repr`); this bounds the rest
MAX_MESSAGE_CHARS = 2000


class ConfigError(ValueError):
    """A bad config: the message is one line naming the key, the value and what is allowed (at most
    :data:`MAX_MESSAGE_CHARS` characters: a value quoted whole could make it megabytes long)."""

    def __init__(self, message: str):
        text = " ".join(str(message).split())
        if len(text) > MAX_MESSAGE_CHARS:
            keep = (MAX_MESSAGE_CHARS - 5) // 2
            text = f"{text[:keep]} ... {text[-keep:]}"
        super().__init__(text)


# -- YAML ---------------------------------------------------------------------------------------------------


#: the most values a YAML document may expand to, aliases counted at each use (a scalar counts one per
#: :data:`_CHARS_PER_VALUE` characters too): a config holds a few hundred, while an "alias bomb" of a few hundred
#: bytes expands to billions
MAX_YAML_VALUES = 100_000
_CHARS_PER_VALUE = 80
#: the deepest nesting a YAML document may have, aliases followed (a config nests 3 or 4 levels)
MAX_YAML_DEPTH = 100
#: the largest config file read, in bytes (a config is a few kB)
MAX_CONFIG_BYTES = 10 * 2**20


class YamlLimitError(yaml.YAMLError):
    """YAML text that is valid but too large or too deep once its aliases are expanded (one-line message)."""


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [child for pair in node.value for child in pair]
    return list(node.value) if isinstance(node, yaml.SequenceNode) else []


def check_node_graph(root: yaml.Node) -> None:
    """Refuse (:class:`YamlLimitError`) a composed document that refers to itself through an alias, or whose
    expansion holds more than :data:`MAX_YAML_VALUES` values or nests deeper than :data:`MAX_YAML_DEPTH`.

    PyYAML shares an aliased node, so building the document is cheap; but copying, validating, printing or
    writing it back expands every alias. Sizes are summed bottom-up once per node (iteratively: the alias graph
    may be far deeper than Python's recursion limit), so the check costs the document's text, not its expansion.
    """
    size: dict[int, int] = {}
    height: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            children = _children(node)
            own = 1 + len(node.value) // _CHARS_PER_VALUE if isinstance(node, yaml.ScalarNode) else 1
            size[key] = own + sum(size[id(c)] for c in children)
            height[key] = 1 + max((height[id(c)] for c in children), default=0)
            open_nodes.discard(key)
            if size[key] > MAX_YAML_VALUES:
                raise YamlLimitError(f"its aliases expand to more than {MAX_YAML_VALUES:,} values (line "
                                     f"{node.start_mark.line + 1}); a config holds a few hundred: write the values out "
                                     "instead of nesting aliases")
            if height[key] > MAX_YAML_DEPTH:
                raise YamlLimitError(f"it nests more than {MAX_YAML_DEPTH} levels deep through its aliases (line "
                                     f"{node.start_mark.line + 1}); a config nests a few")
            continue
        if key in size:
            continue
        if key in open_nodes:
            raise YamlLimitError(f"an alias at line {node.start_mark.line + 1} refers to a value that contains it; a "
                                 "config cannot hold itself")
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in size)


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-5`` / ``3E4`` (no dot) as floats, refuses a key given twice in one
    mapping (plain YAML keeps the last one silently: a config would train with a value its reader did not see),
    and refuses documents nested deeper than :data:`MAX_YAML_DEPTH` or too large once expanded
    (:func:`check_node_graph`)."""

    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        # PyYAML composes recursively: a document nested thousands deep would end in a RecursionError
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise YamlLimitError(f"it nests more than {MAX_YAML_DEPTH} levels deep (line "
                                     f"{self.peek_event().start_mark.line + 1}); a config nests a few")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self) -> yaml.Node:
        node = super().compose_document()
        check_node_graph(node)
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Mark] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                first = seen.setdefault(key, key_node.start_mark)
            except TypeError:  # an unhashable key: SafeLoader's own error follows
                continue
            if first is not key_node.start_mark:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice (line {first.line + 1} and line "
                    f"{key_node.start_mark.line + 1}); give each key once", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def yaml_load(text: str) -> Any:
    """Parse YAML safely (no arbitrary objects), with exponent-only floats read as numbers.

    Every failure is a :class:`yaml.YAMLError` (:class:`YamlLimitError` for a document too large or too deep),
    including a value PyYAML's constructors cannot build (a date such as ``2024-13-45``, an integer of 5000
    digits), which would otherwise escape as a ``ValueError``.
    """
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506  (_Loader is a SafeLoader)
    except RecursionError:  # pragma: no cover  (compose_node's depth limit comes first)
        raise YamlLimitError(f"it nests more than {MAX_YAML_DEPTH} levels deep; a config nests a few") from None
    except (ValueError, OverflowError) as err:
        raise yaml.YAMLError(f"a value cannot be read: {str(err).split(';')[0]}") from err


class _Dumper(yaml.SafeDumper):
    """SafeDumper that writes lists inline (``hidden_sizes: [100, 100]``) and mappings as blocks."""


_Dumper.add_representer(list, lambda dumper, data: dumper.represent_sequence(
    "tag:yaml.org,2002:seq", data, flow_style=True))


def yaml_dump(config: Mapping[str, Any]) -> str:
    """YAML text of a resolved config, keys in schema order."""
    return yaml.dump(dict(config), Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True)


# -- validators: each takes (key, value) and returns the normalised value or raises ConfigError -------------

Validator = Callable[[str, Any], Any]


def _bad(key: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"{key}={short_repr(value)} is not allowed; use {allowed}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def integer(minimum: int | None = None, maximum: int | None = None) -> Validator:
    """An int (not a bool, not a float) that is at least ``minimum`` (and at most ``maximum``, if given)."""
    allowed = "an integer" if minimum is None else f"an integer >= {minimum}"
    if maximum is not None:
        allowed = f"an integer from {minimum} to {maximum}" if minimum is not None else f"an integer <= {maximum}"

    def check(key: str, value: Any) -> int:
        if not _is_int(value) or (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            raise _bad(key, value, allowed)
        return int(value)

    return check


#: the most torch threads or Ray workers a config may ask for (torch's C int overflows long before 2**31)
MAX_THREADS = 4096
#: the largest magnitude a float key may take unless its validator says otherwise: far above any sensible step size,
#: learning rate, standard deviation or timeout, and far below float32's 3.4e38, where a value such as
#: ``alpha_init: 1e300`` overflows the moment it becomes a tensor
MAX_MAGNITUDE = 1e6


def number(low: float | None = None, high: float | None = None, positive: bool = False) -> Validator:
    """A finite int or float (not a bool) within ``[low, high]`` (or ``> 0`` with ``positive``); a bound not given
    is ±:data:`MAX_MAGNITUDE`."""
    if low is None:
        low = 0.0 if positive else -MAX_MAGNITUDE
    if high is None:
        high = MAX_MAGNITUDE
    if positive:
        allowed = f"a positive number up to {high:g}"
    else:
        allowed = f"a number in [{low:g}, {high:g}]"

    def check(key: str, value: Any) -> float:
        ok = _is_number(value) and low <= value <= high and (not positive or value > 0)  # NaN fails the comparisons
        if not ok:
            raise _bad(key, value, allowed)
        return float(value)

    return check


def boolean() -> Validator:
    def check(key: str, value: Any) -> bool:
        if not isinstance(value, bool):
            raise _bad(key, value, "true or false")
        return value

    return check


def string(nullable: bool = False) -> Validator:
    def check(key: str, value: Any) -> str | None:
        if value is None and nullable:
            return None
        if not isinstance(value, str) or not value.strip():
            raise _bad(key, value, "a non-empty string" + (" or null" if nullable else ""))
        return value

    return check


def choice(options: Iterable[str]) -> Validator:
    options = list(options)

    def check(key: str, value: Any) -> str:
        if not isinstance(value, str) or value not in options:
            raise _bad(key, value, f"one of {options}")
        return value

    return check


def mapping() -> Validator:
    def check(key: str, value: Any) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise _bad(key, value, "a mapping of names to values")
        return dict(value)

    return check


def int_list(minimum: int = 1) -> Validator:
    def check(key: str, value: Any) -> list[int]:
        if not isinstance(value, (list, tuple)) or not all(_is_int(v) and v >= minimum for v in value):
            raise _bad(key, value, f"a list of integers >= {minimum}, e.g. [100, 100]")
        return [int(v) for v in value]

    return check


def optional(validator: Validator) -> Validator:
    def check(key: str, value: Any) -> Any:
        return None if value is None else validator(key, value)

    return check


def _inferred(default: Any) -> Validator:
    """A validator for a constructor argument the schema does not know, from its default's type."""
    if isinstance(default, bool):
        return boolean()
    if isinstance(default, int):
        return integer()
    if isinstance(default, float):
        return number()
    if isinstance(default, str):
        return string()
    return lambda key, value: value  # None or a structured default: the model checks it


def _device(key: str, value: Any) -> str:
    """A device the policies can run on here: 'cpu', 'cuda' / 'cuda:N' with such a GPU, 'mps' where available; not
    'meta' (no data), 'xla' and the other backends torch knows by name but this machine or package cannot use."""
    import torch

    string()(key, value)
    try:
        device = torch.device(value)
    except (RuntimeError, ValueError) as err:
        raise _bad(key, value, "a torch device such as 'cpu' or 'cuda'") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise _bad(key, value, "'cpu' (CUDA is not available on this machine)")
    mps = torch.backends.mps.is_available()
    usable = ["'cpu'"] + (["'cuda'"] if torch.cuda.is_available() else []) + (["'mps'"] if mps else [])
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise _bad(key, value, f"'cuda' or 'cuda:N' with N < {torch.cuda.device_count()} (the GPUs of this machine)")
    if device.type not in ("cpu", "cuda") and not (device.type == "mps" and mps):
        raise _bad(key, value, f"{' or '.join(usable)} (the devices of this machine that metasgd-rl runs its policies "
                               "on)")
    return value


_HOST_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
#: ``host:port`` or ``ray://host:port``; host a DNS name, an IPv4 address or a bracketed IPv6 address
_RAY_ADDRESS = re.compile(rf"(?:ray://)?(?:{_HOST_LABEL}(?:\.{_HOST_LABEL})*|\[[0-9A-Fa-f:.]+\]):([0-9]{{1,5}})")


def _ray_address(key: str, value: Any) -> str | None:
    """None (start a local Ray), ``"auto"`` / ``"local"``, or ``host:port`` / ``ray://host:port``. Only the form is
    checked, nothing is contacted: a misspelt address is refused before the run directory is written, not when the
    first rollout reaches ``ray.init``."""
    if value is None:
        return None
    match = _RAY_ADDRESS.fullmatch(value) if isinstance(value, str) else None
    if value not in ("auto", "local") and (match is None or not 1 <= int(match.group(1)) <= 65535):
        raise _bad(key, value, "null (a local Ray), 'auto' (the running cluster), 'local', HOST:PORT or "
                               "ray://HOST:PORT (a port from 1 to 65535)")
    return value


# -- the schema ---------------------------------------------------------------------------------------------


def _model_validators() -> dict[str, Validator]:
    from metasgd_rl.advantages import BASELINES
    from metasgd_rl.estimators import ESTIMATORS
    from metasgd_rl.model import ALPHA_OPTIMIZERS
    from metasgd_rl.outer import OUTER_OPTIMIZERS
    from metasgd_rl.ray_sampler import SAMPLERS
    from metasgd_rl.step_sizes import GRANULARITIES, PARAMETERIZATIONS

    return {
        "family": string(),
        "family_kwargs": mapping(),
        "policy_kwargs": mapping(),
        "meta_batch_size": integer(1),
        "episodes_per_task": integer(1),
        "inner_steps": integer(1),
        "alpha_init": number(),
        "alpha_granularity": choice(GRANULARITIES),
        "alpha_per_step": boolean(),
        "alpha_parameterization": choice(PARAMETERIZATIONS),
        "alpha_optimizer": choice(ALPHA_OPTIMIZERS),
        "alpha_lr": number(positive=True),
        "learn_alpha": boolean(),
        "first_order": boolean(),
        "estimator": choice(ESTIMATORS),
        "outer": choice(OUTER_OPTIMIZERS),
        "outer_kwargs": mapping(),
        "baseline": choice(BASELINES),
        "gamma": number(0.0, 1.0),
        "gae_lambda": number(0.0, 1.0),
        "normalize_advantages": boolean(),
        "seed": integer(0),
        "device": _device,
        "sampler": choice(SAMPLERS),
        "ray_address": _ray_address,
        "ray_workers": optional(integer(1, MAX_THREADS)),
        "task_chunk_size": optional(integer(1)),
        "num_threads": optional(integer(1, MAX_THREADS)),
        "ray_startup_timeout": number(positive=True),
        "max_envs": optional(integer(1)),
    }


RUN_VALIDATORS: dict[str, Validator] = {
    "algo": choice(ALGOS),
    "iterations": integer(1),
    "checkpoint_every": integer(1),
    "eval_every": integer(0),
    "eval_tasks": integer(1),
    "run_dir": string(nullable=True),
    "progress_bar": boolean(),
}


def model_defaults() -> dict[str, Any]:
    """The model's constructor arguments and their defaults, read from ``MetaSGD.__init__`` (one source)."""
    from metasgd_rl.model import constructor_defaults

    return constructor_defaults()


def schema(algo: str = "metasgd") -> dict[str, tuple[Validator, Any]]:
    """Every allowed key of a config for ``algo``, with its validator and default, in output order."""
    known = _model_validators()
    keys: dict[str, tuple[Validator, Any]] = {k: (RUN_VALIDATORS[k], d) for k, d in RUN_DEFAULTS.items()}
    defaults = model_defaults()
    if "family_kwargs" in defaults:  # next to family in resolved configs
        defaults = {"family": defaults.pop("family", None), "family_kwargs": defaults.pop("family_kwargs"),
                    **defaults}
    for name, default in defaults.items():
        if algo == "maml" and name in MAML_FIXED:
            continue
        keys[name] = (known.get(name) or _inferred(default), default)
    return keys


def _unknown_key(key: str, value: Any, allowed: Iterable[str], where: str = "") -> ConfigError:
    allowed = sorted(allowed)
    close = difflib.get_close_matches(key.rsplit(".", 1)[-1], allowed, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else "."
    return ConfigError(f"unknown key {short_repr(key)} (value {short_repr(value)}){where}{hint} Allowed keys: "
                       f"{', '.join(allowed)}")


# -- nested sections ----------------------------------------------------------------------------------------


def _resolve_policy_kwargs(given: Mapping[str, Any]) -> dict[str, Any]:
    from metasgd_rl.model import DEFAULT_POLICY_KWARGS
    from metasgd_rl.policies import ACTIVATIONS, INITS

    validators: dict[str, Validator] = {
        "hidden_sizes": int_list(1),
        "activation": choice(sorted(ACTIVATIONS)),
        "init_std": number(positive=True),
        "learn_std": boolean(),
        "init": choice(INITS),
        "output_init_scale": number(positive=True),
    }
    out = {k: list(v) if isinstance(v, tuple) else v for k, v in DEFAULT_POLICY_KWARGS.items()}
    for key, value in given.items():
        if key not in DEFAULT_POLICY_KWARGS:
            raise _unknown_key(f"policy_kwargs.{key}", value, DEFAULT_POLICY_KWARGS)
        validate = validators.get(key) or _inferred(DEFAULT_POLICY_KWARGS[key])
        out[key] = validate(f"policy_kwargs.{key}", value)
    return out


def _resolve_outer_kwargs(outer: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """Known keys and types from the optimiser's ``DEFAULTS``; ranges from constructing it on a dummy tensor."""
    import torch

    from metasgd_rl.outer import OUTER_OPTIMIZERS

    cls = OUTER_OPTIMIZERS[outer]
    defaults: dict[str, Any] = dict(getattr(cls, "DEFAULTS", {}))
    out = dict(defaults)
    for key, value in given.items():
        if key not in defaults:
            raise ConfigError(f"{_unknown_key(f'outer_kwargs.{key}', value, defaults, where=f' for outer {outer!r}')} "
                              "(outer_kwargs belong to the outer optimiser: --set outer_kwargs={} resets them)")
        default = defaults[key]
        if default is None or isinstance(default, float):
            validate = optional(number()) if default is None else number()
        else:
            validate = _inferred(default)
        out[key] = validate(f"outer_kwargs.{key}", value)
    try:
        cls([torch.nn.Parameter(torch.zeros(1))], **out)
    except (ValueError, TypeError) as err:
        message = str(err)
        if message.startswith("outer_kwargs "):  # the optimiser's "outer_kwargs max_kl=-1 is not allowed; ..."
            raise ConfigError(f"outer_kwargs.{message[len('outer_kwargs '):]} (outer {outer!r})") from err
        raise ConfigError(f"outer_kwargs for outer {outer!r}: {message}") from err
    return out


def _resolve_family(family: str, family_kwargs: Mapping[str, Any]) -> Any:
    """The family a config names, made once; a ConfigError if it is unknown, its kwargs are refused or its tasks
    are not JSON-able."""
    import gymnasium as gym
    import numpy as np

    from metasgd_rl.family import TaskFamilyError, sample_checked_tasks
    from metasgd_rl.registry import list_task_families, make_task_family, unknown_family_message

    if family not in list_task_families():
        raise ConfigError(unknown_family_message(family, subject=f"family={short_repr(family)}"))
    try:
        instance = make_task_family(family, **family_kwargs)
    except ImportError as err:
        raise ConfigError(f"family={family!r} cannot be used: {err}") from err
    except (ValueError, TypeError, gym.error.Error) as err:  # gym.error.Error: e.g. an env_id gymnasium lacks
        raise ConfigError(f"family_kwargs={short_repr(dict(family_kwargs))} is not allowed for family {family!r}: "
                          f"{err}") from err
    try:  # tasks that cannot be logged as JSON are refused now, before the run directory is written
        for split in ("train", "test"):
            sample_checked_tasks(instance, 2, np.random.default_rng(0), split=split)
    except TaskFamilyError as err:
        raise ConfigError(f"family={family!r} cannot be used: {err}") from err
    return instance


# -- resolution ---------------------------------------------------------------------------------------------


def default_run_dir(name: str) -> str:
    """``runs/<name>-<YYYYmmdd-HHMMSS>``, with a numeric suffix if that folder already exists; ``name`` is cut to
    200 bytes, so that a long config file name still gives a folder name the file system takes (255 bytes)."""
    name = name[:200]
    while len(os.fsencode(name)) > 200:  # whole characters, however many bytes each takes
        name = name[:-1]
    stem = f"runs/{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    candidate, n = stem, 1
    while Path(candidate).exists():
        candidate, n = f"{stem}-{n}", n + 1
    return candidate


def resolve_config(raw: Mapping[str, Any], name: str = "run") -> dict[str, Any]:
    """Validate ``raw`` and return the complete config (every key, defaults filled in).

    Raises :class:`ConfigError` on the first unknown key, wrong type, out-of-range value or a model the
    arguments cannot build. Writes nothing.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError(f"a config must be a mapping of keys to values, got {type(raw).__name__}")
    algo = choice(ALGOS)("algo", raw.get("algo", RUN_DEFAULTS["algo"]))
    keys = schema(algo)
    for key, value in raw.items():
        if key not in keys:
            if algo == "maml" and key in MAML_FIXED:
                raise ConfigError(f"{key}={short_repr(value)} is not allowed with algo 'maml' (MAML's α is one fixed "
                                  "scalar); remove it, or use algo 'metasgd'")
            raise _unknown_key(str(key), value, keys)
    if raw.get("iterations") is None:
        raise ConfigError("iterations is missing; use an integer >= 1 (in the config or --set iterations=N)")
    config: dict[str, Any] = {}
    for key, (validate, default) in keys.items():
        value = raw[key] if key in raw else copy.deepcopy(default)
        config[key] = validate(key, value)
    config["policy_kwargs"] = _resolve_policy_kwargs(config["policy_kwargs"])
    config["outer_kwargs"] = _resolve_outer_kwargs(config["outer"], config["outer_kwargs"])
    check_config_limits({"family_kwargs": config["family_kwargs"]})  # the horizon, before a family is built with it
    family = _resolve_family(config["family"], config["family_kwargs"])
    # the arguments a later default could change are written down (e.g. the locomotion families' simulator)
    config["family_kwargs"] = {**{k: family.make_kwargs[k] for k in family.legacy_kwargs if k in family.make_kwargs},
                               **config["family_kwargs"]}
    if config["run_dir"] is None:
        config["run_dir"] = default_run_dir(name)
    check_config_memory(config, family)  # first: what cannot fit is told so, with the memory it needs
    check_config_limits(config, family)
    try:
        build_model(config)  # whatever the model still refuses; builds in memory only
    except (ValueError, TypeError) as err:
        raise ConfigError(f"invalid configuration: {err}") from err
    return config


def check_config_limits(config: Mapping[str, Any], family: Any = None) -> None:
    """Refuse (:class:`ConfigError`) a config that asks for more work than the hard limits of
    :mod:`metasgd_rl.limits` allow (a horizon of 1e9 steps would run for days, yet fit in memory)."""
    from metasgd_rl.limits import WorkLimitError, check_work_limits

    try:
        check_work_limits(config, family)
    except WorkLimitError as err:
        raise ConfigError(str(err)) from err


def check_config_memory(config: Mapping[str, Any], family: Any = None) -> None:
    """Refuse (:class:`ConfigError`) a config whose lower bound of memory (:func:`~metasgd_rl.memory.check_memory`)
    exceeds the memory available, before anything big is built."""
    from metasgd_rl.memory import MemoryCheckError, check_memory

    try:
        check_memory(config, family)
    except MemoryCheckError as err:
        raise ConfigError(str(err)) from err


def model_kwargs(config: Mapping[str, Any]) -> dict[str, Any]:
    """The constructor arguments in a resolved config."""
    return {k: copy.deepcopy(v) for k, v in config.items() if k not in RUN_DEFAULTS}


def model_class(algo: str) -> type:
    from metasgd_rl.model import MAML, MetaSGD

    return {"metasgd": MetaSGD, "maml": MAML}[algo]


def build_model(config: Mapping[str, Any]):
    """A fresh model from a resolved config."""
    return model_class(config["algo"])(**model_kwargs(config))


# -- files and overrides ------------------------------------------------------------------------------------


def parse_set(item: str) -> tuple[list[str], Any]:
    """``"outer_kwargs.max_kl=0.02"`` -> ``(["outer_kwargs", "max_kl"], 0.02)``; the value is YAML."""
    key, sep, text = item.partition("=")
    path = key.strip().split(".")
    if not sep or not all(path):
        raise ConfigError(f"--set {short_repr(item)} is not allowed; use KEY=VALUE, e.g. --set gamma=0.95 or "
                          "--set outer_kwargs.max_kl=0.02")
    try:
        value = yaml_load(text) if text.strip() else None
    except YamlLimitError as err:
        raise ConfigError(f"--set {short_text(key)}={short_repr(text)} is not allowed: {err}") from err
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(f"--set {short_text(key)}={short_repr(text)} is not allowed: the value is not valid YAML "
                          f"({problem})") from err
    return path, value


def apply_overrides(raw: Mapping[str, Any], sets: Iterable[str]) -> dict[str, Any]:
    """A copy of ``raw`` with each ``KEY=VALUE`` of ``sets`` applied (dots reach into nested mappings)."""
    out = copy.deepcopy(dict(raw))
    for item in sets:
        path, value = parse_set(item)
        node = out
        for i, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                prefix = ".".join(path[: i + 1])
                raise ConfigError(f"--set {short_repr(item)}: {prefix}={short_repr(child)} is not a mapping, so it "
                                  f"has no key {short_repr(path[i + 1])}")
            node = child
        node[path[-1]] = value
    return out


def _read_config_text(path: Path) -> str:
    """The text of a config file, read no further than :data:`MAX_CONFIG_BYTES` (a config that is really a disk
    image or a device is not read whole); :class:`ConfigError` if it cannot be read or is not UTF-8 text."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as err:
        raise ConfigError(f"config file {str(path)!r} cannot be read ({err.strerror or err})") from err
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {str(path)!r} is not allowed: it is larger than {MAX_CONFIG_BYTES >> 20} MiB; "
                          "a config is a few kB of YAML text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"config file {str(path)!r} is not allowed: it is not UTF-8 text (byte {err.start} is "
                          f"0x{data[err.start]:02x}), so it is no config: a config is YAML text, like "
                          "configs/navigation2d-metasgd.yaml") from err


def read_yaml_file(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML file (empty file: ``{}``). A file that is not UTF-8 text (a PNG, a checkpoint), is
    larger than :data:`MAX_CONFIG_BYTES` or expands too far (:func:`check_node_graph`) is a :class:`ConfigError`."""
    path = Path(path)
    text = _read_config_text(path)
    try:
        data = yaml_load(text)
    except YamlLimitError as err:
        raise ConfigError(f"config file {str(path)!r} is not allowed: {err}") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {' '.join(str(err).split())}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of keys to values, "
                          f"not a {type(data).__name__}")
    return data


def load_config(path: str | Path, sets: Iterable[str] = (), run_dir: str | None = None) -> dict[str, Any]:
    """Read a YAML config, apply ``--set`` overrides (and ``--run-dir``), and resolve it."""
    raw = apply_overrides(read_yaml_file(path), sets)
    if run_dir is not None:
        raw["run_dir"] = run_dir
    return resolve_config(raw, name=Path(path).stem)
