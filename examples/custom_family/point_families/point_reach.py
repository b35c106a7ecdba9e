"""PointReach: a 1-D point mass with inertia that must come to rest at a target it cannot see.

The agent observes the position x and velocity v of a mass on a rail and applies a force f in [-1, 1]. Each
step of dt = 0.1 s integrates damped Newtonian dynamics (semi-implicit Euler)::

    v <- clip(v + dt * (f / mass - DAMPING * v), -MAX_SPEED, MAX_SPEED)
    x <- x + dt * v            (the rail ends at +-RAIL: the mass stops there)

and pays ``-|x - target| - CONTROL_COST * f**2``. A task fixes the ``target`` (uniform in [-1, 1]) and the
``mass`` (log-uniform in [0.5, 2]): neither is observed, so the policy must find out from its rewards where to
go and how hard to push (a heavy mass needs early force and early braking). Episodes start near the origin at
rest and last ``max_episode_steps`` steps (default 50), with no early termination.

Unlike the built-in Navigation2D (a 2-D point that *moves by* its action), the action here is a force: the
state includes velocity and a good policy has to brake, with a task-dependent braking distance.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.wrappers import TimeLimit

import metasgd_rl as msr

DT = 0.1
DAMPING = 0.5
CONTROL_COST = 0.05
MAX_SPEED = 2.0
RAIL = 2.0
START_NOISE = 0.1  # initial position uniform in [-0.1, 0.1], at rest

OBSERVATION_SPACE = spaces.Box(
    low=np.array([-RAIL, -MAX_SPEED], dtype=np.float32), high=np.array([RAIL, MAX_SPEED], dtype=np.float32),
    dtype=np.float32,
)
ACTION_SPACE = spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
TASK_KEYS = ("target", "mass")


def check_task(task: Mapping[str, Any]) -> dict[str, float]:
    """The task as ``{"target": float, "mass": float}``, or a ValueError naming what is wrong."""
    if not isinstance(task, Mapping) or set(task) != set(TASK_KEYS):
        raise ValueError(f"PointReach: a task is a dict with exactly the keys {list(TASK_KEYS)}, got {task!r}")
    target, mass = float(task["target"]), float(task["mass"])
    if not (math.isfinite(target) and abs(target) <= RAIL):
        raise ValueError(f"PointReach: task target={task['target']!r} must be a finite number in [-{RAIL}, {RAIL}]")
    if not (math.isfinite(mass) and mass > 0):
        raise ValueError(f"PointReach: task mass={task['mass']!r} must be a finite number > 0")
    return {"target": target, "mass": mass}


class PointReachEnv(gym.Env):
    """One PointReach task: a mass ``mass`` that should stop at ``target`` (no time limit of its own)."""

    metadata = {"render_modes": []}

    def __init__(self, target: float = 0.5, mass: float = 1.0):
        task = check_task({"target": target, "mass": mass})
        self.target, self.mass = task["target"], task["mass"]
        self.observation_space = OBSERVATION_SPACE
        self.action_space = ACTION_SPACE
        self._x = 0.0
        self._v = 0.0

    def _obs(self) -> np.ndarray:
        return np.array([self._x, self._v], dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._x = float(self.np_random.uniform(-START_NOISE, START_NOISE))
        self._v = 0.0
        return self._obs(), {}

    def step(self, action):
        force = float(np.clip(np.asarray(action, dtype=np.float64).reshape(-1)[0], -1.0, 1.0))
        v = float(np.clip(self._v + DT * (force / self.mass - DAMPING * self._v), -MAX_SPEED, MAX_SPEED))
        x = self._x + DT * v
        if abs(x) >= RAIL:  # the end of the rail stops the mass
            x, v = math.copysign(RAIL, x), 0.0
        self._x, self._v = x, v
        distance = abs(x - self.target)
        reward = -distance - CONTROL_COST * force**2
        return self._obs(), reward, False, False, {"distance": distance}


class PointReachFamily(msr.TaskFamily):
    """1-D point mass with inertia: reach an unseen per-task target with an unseen per-task mass; horizon 50."""

    observation_space = OBSERVATION_SPACE
    action_space = ACTION_SPACE

    def __init__(self, max_episode_steps: int = 50, target_range: Sequence[float] = (-1.0, 1.0),
                 mass_range: Sequence[float] = (0.5, 2.0)):
        if isinstance(max_episode_steps, bool) or not isinstance(max_episode_steps, int) or max_episode_steps < 1:
            raise ValueError(f"PointReach: max_episode_steps={max_episode_steps!r} must be an int >= 1")
        self.max_episode_steps = max_episode_steps
        self.target_range = _range("target_range", target_range, -RAIL, RAIL)
        self.mass_range = _range("mass_range", mass_range, 1e-3, math.inf)

    def sample_tasks(self, n: int, rng: np.random.Generator, split: str = "train") -> list[msr.Task]:
        """``n`` tasks: target uniform in ``target_range``, mass log-uniform in ``mass_range``."""
        if int(n) < 0:
            raise ValueError(f"PointReach: n must be >= 0, got {n}")
        rng = msr.split_generator(rng, split)  # held-out tasks come from a separate stream
        targets = rng.uniform(*self.target_range, size=int(n))
        masses = np.exp(rng.uniform(*np.log(self.mass_range), size=int(n)))
        return [{"target": float(t), "mass": float(m)} for t, m in zip(targets, masses, strict=True)]

    def make_env(self, task: msr.Task) -> gym.Env:
        return TimeLimit(PointReachEnv(**check_task(task)), max_episode_steps=self.max_episode_steps)


def _range(name: str, value: Sequence[float], low: float, high: float) -> list[float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"PointReach: {name}={value!r} must be [low, high]") from None
    if not (low <= lo <= hi <= high):
        raise ValueError(f"PointReach: {name}={value!r} must satisfy {low} <= low <= high <= {high}")
    return [lo, hi]
