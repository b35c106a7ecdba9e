"""A lower bound of the memory a config needs, checked before anything big is built or written.

A setting such as ``meta_batch_size: 1000000000`` or ``hidden_sizes: [20000, 20000]`` would otherwise allocate
until a ``MemoryError`` (or the OOM killer) long after the run directory was created. :func:`estimate_memory`
counts only what the algorithm cannot do without, in float32 (4 bytes a number):

``parameters``
    θ and α, each with its gradient and two vectors of optimiser state (Adam's moments; TRPO's conjugate-gradient
    vectors): ``4 × 4 × (P + A)`` bytes, P the policy's parameter count, A α's (``alpha_granularity="element"``:
    P, per inner step with ``alpha_per_step``; ``"tensor"``/``"scalar"``: a few; an α not learned counts once).
``adapted``
    each inner step's gradient and adapted parameters θ'_t of every task: ``4 × 2 × K × T × P``. In second order
    (``first_order: false``) the meta-gradient also differentiates through the inner steps, which keeps two more
    copies per task (the gradient w.r.t. θ'_t and the Hessian-vector product it flows back through), for the C
    tasks differentiated at once: ``4 × (2 × K × T + 2 × C) × P``. (Measured on Navigation2D with 4M parameters:
    about 5 copies per task in first order and 8 in second, so both stay lower bounds.)
``rollouts``
    the episodes of one meta-iteration, kept for the meta-objective: ``inner_steps + 1`` batches (the
    pre-update ones and the post-update one) of ``H × T × E`` steps, each step holding its observation, its
    action and 4 scalars (reward, mask, log-probability, advantage): ``4 × (K+1) × H × T × E × (obs + act + 4)``.
``activations``
    one forward pass of the policy over one batch, to differentiate it: ``4 × H × C × E × Σ hidden_sizes``,
    C = ``task_chunk_size`` (or T). In second order each of the K pre-update batches' forward activations and their
    gradients stay in the graph too: ``× (1 + 2K)``. (Measured: about 3 batches' worth in first order, 6.5 in
    second with K = 1.)
``evaluation``
    the held-out evaluation every ``eval_every`` iterations (0: none): ``eval_tasks`` tasks' adapted
    parameters and their ``inner_steps + 1`` batches, as above.

H is the family's horizon (``max_episode_steps``), T ``meta_batch_size``, E ``episodes_per_task``, K
``inner_steps``. Training and evaluation do not run at once, so the total is
``parameters + max(adapted + rollouts + activations, evaluation)``. The real need is larger (environments,
autograd's graph, TRPO's extra vectors, Python's overhead), so
:func:`check_memory` refuses a config only when this lower bound already exceeds the memory available: it never
refuses a setting that fits, and catches the settings that are far out of reach.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from metasgd_rl.quote import short_repr

FLOAT_BYTES = 4
#: the scalars a rollout step holds besides its observation and action: reward, mask, log-probability, advantage
STEP_SCALARS = 4
#: the config keys that drive each part of the estimate (named in the refusal)
PART_KEYS: dict[str, tuple[str, ...]] = {
    "parameters": ("policy_kwargs.hidden_sizes",),
    "adapted": ("meta_batch_size", "policy_kwargs.hidden_sizes"),
    "rollouts": ("meta_batch_size", "episodes_per_task", "inner_steps", "family_kwargs.max_episode_steps"),
    "activations": ("meta_batch_size", "episodes_per_task", "policy_kwargs.hidden_sizes", "task_chunk_size"),
    "evaluation": ("eval_tasks", "episodes_per_task", "inner_steps"),
}
#: the shipped configs' usual values: a refusal names the keys furthest above them
TYPICAL: dict[str, int] = {"meta_batch_size": 20, "episodes_per_task": 20, "inner_steps": 1, "eval_tasks": 40,
                           "policy_kwargs.hidden_sizes": 100, "family_kwargs.max_episode_steps": 200,
                           "task_chunk_size": 20}


@dataclass
class MemoryEstimate:
    """The lower bound of :func:`estimate_memory`: ``total`` bytes and its ``parts`` (bytes by name)."""

    total: int
    parts: dict[str, int] = field(default_factory=dict)

    def largest(self) -> str:
        """The name of the largest part."""
        return max(self.parts, key=lambda k: self.parts[k])

    def describe(self) -> str:
        """``"rollouts 3.1 TB, parameters 12 kB, ..."``, largest first, parts of 0 bytes left out."""
        parts = sorted(((v, k) for k, v in self.parts.items() if v), reverse=True)
        return ", ".join(f"{k} {format_bytes(v)}" for v, k in parts)


def format_bytes(n: float) -> str:
    """``1234567`` -> ``"1.2 MB"`` (decimal units)."""
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError  # pragma: no cover


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation: psutil's ``available`` if psutil is installed, else
    ``MemAvailable`` of ``/proc/meminfo``, else free pages × page size (``os.sysconf``); None if unknown."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


def _space_dims(family: Any) -> tuple[int, int]:
    """(observation features, action numbers per step) of a family's spaces, as the sampler stores them."""
    import gymnasium as gym

    def dims(space: gym.Space) -> int:
        if isinstance(space, gym.spaces.Discrete):
            return int(space.n)
        return max(1, math.prod(int(s) for s in (space.shape or (1,))))

    act = family.action_space
    return dims(family.observation_space), 1 if isinstance(act, gym.spaces.Discrete) else dims(act)


def _parameter_counts(config: Mapping[str, Any], obs_dim: int, out_dim: int, act_dim: int) -> tuple[int, int]:
    """(P, A): the policy's parameter count and α's number count, from the config's sizes (nothing allocated)."""
    policy = dict(config.get("policy_kwargs") or {})
    hidden = [int(h) for h in policy.get("hidden_sizes", (100, 100))]
    sizes = [obs_dim, *hidden, out_dim]
    layers = [sizes[i] * sizes[i + 1] + sizes[i + 1] for i in range(len(sizes) - 1)]
    p = sum(layers) + (act_dim if policy.get("learn_std", True) else 0)
    steps = int(config.get("inner_steps", 1)) if config.get("alpha_per_step", False) else 1
    granularity = "scalar" if config.get("algo") == "maml" else config.get("alpha_granularity", "element")
    tensors = 2 * len(layers) + 1
    a = {"element": p, "tensor": tensors, "scalar": 1}.get(granularity, p) * steps
    return p, a


def estimate_memory(config: Mapping[str, Any], family: Any = None) -> MemoryEstimate:
    """A lower bound of the bytes a training run of ``config`` needs (see the module's docstring for the parts).

    ``config``: a config's keys (``meta_batch_size``, ``episodes_per_task``, ``inner_steps``, ``policy_kwargs``,
    ``eval_every``, ``eval_tasks``, ``task_chunk_size``, ...; missing ones take the model's defaults).
    ``family``: the task family (its spaces and ``max_episode_steps``); default: made from ``config["family"]``
    and ``config["family_kwargs"]``.
    """
    if family is None:
        from metasgd_rl.registry import make_task_family

        family = make_task_family(config.get("family", "Navigation2D-v0"), **dict(config.get("family_kwargs") or {}))
    import gymnasium as gym

    obs, act = _space_dims(family)
    out = int(family.action_space.n) if isinstance(family.action_space, gym.spaces.Discrete) else act
    p, a = _parameter_counts(config, obs, out, act)
    horizon = int(family.max_episode_steps)
    tasks, episodes = int(config.get("meta_batch_size", 20)), int(config.get("episodes_per_task", 20))
    steps = int(config.get("inner_steps", 1))
    chunk = min(tasks, int(config.get("task_chunk_size") or tasks))
    hidden = sum(int(h) for h in dict(config.get("policy_kwargs") or {}).get("hidden_sizes", (100, 100)))
    step_numbers = obs + act + STEP_SCALARS
    learned = config.get("algo") != "maml" and bool(config.get("learn_alpha", True))

    def batches(n_tasks: int) -> int:
        return FLOAT_BYTES * (steps + 1) * horizon * n_tasks * episodes * step_numbers

    eval_tasks = int(config.get("eval_tasks", 0)) if int(config.get("eval_every", 0) or 0) > 0 else 0
    second_order = not bool(config.get("first_order", False))
    parts = {
        "parameters": FLOAT_BYTES * (4 * p + (4 if learned else 1) * a),
        "adapted": FLOAT_BYTES * (2 * steps * tasks + (2 * chunk if second_order else 0)) * p,
        "rollouts": batches(tasks),
        "activations": FLOAT_BYTES * horizon * chunk * episodes * hidden * (1 + 2 * steps if second_order else 1),
        "evaluation": FLOAT_BYTES * eval_tasks * p + batches(eval_tasks),
    }
    training = parts["adapted"] + parts["rollouts"] + parts["activations"]
    return MemoryEstimate(parts["parameters"] + max(training, parts["evaluation"]), parts)


class MemoryCheckError(ValueError):
    """A config whose lower bound of memory exceeds the memory available (the message names the keys)."""


def check_memory(config: Mapping[str, Any], family: Any = None, available: int | None = None) -> MemoryEstimate:
    """:func:`estimate_memory`, or a :class:`MemoryCheckError` when it exceeds ``available`` bytes (default:
    :func:`available_memory`; unknown: no check). The message names the keys behind the largest part, the
    estimate and the memory available."""
    estimate = estimate_memory(config, family)
    available = available_memory() if available is None else available
    if available is not None and estimate.total > available:
        keys = _culprits(config, estimate)
        raise MemoryCheckError(
            f"{', '.join(f'{k}={short_repr(_lookup(config, k))}' for k in keys)} need{'s' * (len(keys) == 1)} at least "
            f"{format_bytes(estimate.total)} "
            f"of memory ({estimate.describe()}) but {format_bytes(available)} is available; lower "
            f"{' or '.join(keys)}")
    return estimate


def _culprits(config: Mapping[str, Any], estimate: MemoryEstimate) -> list[str]:
    """The keys to name: among those behind the parts of at least a quarter of the largest part, the (at most 3)
    furthest above their :data:`TYPICAL` values (the furthest one if none is above)."""
    largest = max(estimate.parts.values())
    scores: dict[str, float] = {}
    for part, size in estimate.parts.items():
        if size < largest / 4:
            continue
        for key in PART_KEYS[part]:
            value = _lookup(config, key)
            if isinstance(value, (list, tuple)):
                value = max(value, default=None)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 1:  # else: nothing to lower
                scores[key] = value / TYPICAL[key]
    ranked = sorted(scores, key=lambda k: -scores[k])
    return [k for k in ranked if scores[k] > 1][:3] or ranked[:1]


def _lookup(config: Mapping[str, Any], key: str) -> Any:
    """``config[key]``, dots reaching into nested mappings; None if absent."""
    section, _, name = key.rpartition(".")
    return dict(config.get(section) or {}).get(name) if section else config.get(key)
