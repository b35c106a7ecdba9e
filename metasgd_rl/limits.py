"""Hard limits on the work a config or checkpoint may ask for, checked before anything runs.

A file is data, but some of its numbers set how long a command runs: a checkpoint whose config says
``family_kwargs: {max_episode_steps: 1e9}`` would make ``metasgd-rl evaluate`` roll out one episode for days. The
memory check (:mod:`metasgd_rl.memory`) refuses what cannot fit; these limits refuse what would fit but never end.
Each is far above what the shipped configs use (a horizon of at most a few hundred steps, 40 tasks, 20 episodes,
two hidden layers of 100 units, one or two inner steps), so no sensible experiment meets them.

:func:`check_work_limits` checks a config's keys (integers, within :data:`WORK_LIMITS`) and, given the family, the
horizon it was built with; :func:`~metasgd_rl.config.resolve_config` (configs, resumed runs) and
:meth:`~metasgd_rl.MetaSGD.load` (checkpoints) call it.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

#: the largest value of each key a config or checkpoint may give (dots reach into nested mappings)
WORK_LIMITS: dict[str, int] = {
    "family_kwargs.max_episode_steps": 100_000,
    "meta_batch_size": 10_000,
    "episodes_per_task": 10_000,
    "eval_tasks": 10_000,
    "inner_steps": 100,
    "policy_kwargs.hidden_sizes": 100_000,
}
#: the most hidden layers a policy may have
MAX_HIDDEN_LAYERS = 100


class WorkLimitError(ValueError):
    """A config or checkpoint asks for more work than :data:`WORK_LIMITS` allows; the one-line message names the
    key, the value and the limit."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _lookup(config: Mapping[str, Any], key: str) -> tuple[bool, Any]:
    """``(present, value)`` of ``key`` in ``config``, dots reaching into nested mappings."""
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _quote(value: Any) -> str:
    """A file's value quoted short, and cheaply: it may be huge."""
    from metasgd_rl.quote import short_repr  # a leaf module: config, which imports this one, re-exports it

    return short_repr(value)


def _refusal(key: str, value: Any, allowed: str) -> WorkLimitError:
    return WorkLimitError(f"{key}={_quote(value)} is not allowed; use {allowed} (a hard limit on the work a config or "
                          "checkpoint may ask for)")


def check_work_limits(config: Mapping[str, Any], family: Any = None) -> None:
    """Refuse (:class:`WorkLimitError`) a config whose keys of :data:`WORK_LIMITS` are not integers within their
    limits (an absent key or a ``max_episode_steps`` of None passes), or, given ``family``, whose family was built
    with a longer horizon than the limit."""
    for key, limit in WORK_LIMITS.items():
        present, value = _lookup(config, key)
        if not present or (value is None and key == "family_kwargs.max_episode_steps"):
            continue
        if key == "policy_kwargs.hidden_sizes":
            _check_hidden_sizes(key, value, limit)
        elif not _is_int(value) or not 1 <= value <= limit:
            raise _refusal(key, value, f"an integer from 1 to {limit:,}")
    if family is not None:
        horizon = getattr(family, "max_episode_steps", None)
        limit = WORK_LIMITS["family_kwargs.max_episode_steps"]
        if not (isinstance(horizon, numbers.Integral) and not isinstance(horizon, bool) and 1 <= horizon <= limit):
            name = getattr(family, "id", None) or type(family).__name__
            raise WorkLimitError(f"family {name!r} built from this config has max_episode_steps={_quote(horizon)}; a "
                                 f"horizon from 1 to {limit:,} steps is allowed (a hard limit on the work a config or "
                                 "checkpoint may ask for): set family_kwargs.max_episode_steps within it")


def _check_hidden_sizes(key: str, value: Any, limit: int) -> None:
    if not isinstance(value, (list, tuple)):
        return  # not a list: the config's own validation says so
    if len(value) > MAX_HIDDEN_LAYERS:
        raise WorkLimitError(f"{key} has {len(value)} layers; at most {MAX_HIDDEN_LAYERS} are allowed (a hard limit "
                             "on the work a config or checkpoint may ask for)")
    if not all(_is_int(size) and 1 <= size <= limit for size in value):
        raise _refusal(key, list(value), f"layer sizes from 1 to {limit:,}")
