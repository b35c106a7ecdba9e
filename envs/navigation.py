"""2D navigation (MAML §5.3; Meta-SGD's RL experiments; pytorch-maml-rl's ``Navigation2D``).

The agent is a point in the plane; it observes its position and moves by its action clipped to
[-0.1, 0.1] per coordinate. Reward is minus the Euclidean distance to the goal after the move. The episode
terminates when both coordinates are within 0.01 of the goal and is truncated after 100 steps. Goals are
uniform in [-0.5, 0.5]^2; the start is the origin, or uniform in the same square for the random-start
variant reported by Meta-SGD.

The single-task :class:`Navigation2DEnv` and the batched :class:`Navigation2DVectorEnv` do the same float32
arithmetic and draw random starts from the same per-sub-env generators (sub-env i seeded with seed + i, as
gymnasium's vector envs do), so they produce identical trajectories for the same task, seed and actions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space
from gymnasium.wrappers import TimeLimit

from metasgd_rl.family import Task, TaskFamily, split_generator

HORIZON = 100
MAX_ACTION = 0.1
LOW, HIGH = -0.5, 0.5
GOAL_TOLERANCE = 0.01

OBSERVATION_SPACE = spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32)
ACTION_SPACE = spaces.Box(-MAX_ACTION, MAX_ACTION, shape=(2,), dtype=np.float32)


def _move(position: np.ndarray, action: np.ndarray) -> np.ndarray:
    step = np.clip(np.asarray(action, dtype=np.float32), -MAX_ACTION, MAX_ACTION)
    return (position + step).astype(np.float32)


def _reward_and_done(position: np.ndarray, goal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    dx = position[..., 0] - goal[..., 0]
    dy = position[..., 1] - goal[..., 1]
    reward = -np.hypot(dx, dy).astype(np.float64)
    done = (np.abs(dx) < GOAL_TOLERANCE) & (np.abs(dy) < GOAL_TOLERANCE)
    return reward, done


def _start(rng: np.random.Generator | None, random_start: bool) -> np.ndarray:
    if not random_start:
        return np.zeros(2, dtype=np.float32)
    return rng.uniform(LOW, HIGH, size=2).astype(np.float32)


def _goal_array(goal: Sequence[float]) -> np.ndarray:
    goal = np.asarray(goal, dtype=np.float32)
    if goal.shape != (2,) or not np.all(np.isfinite(goal)):
        raise ValueError(f"Navigation2D goal must be 2 finite numbers, got {goal.tolist()!r}")
    return goal


class Navigation2DEnv(gym.Env):
    """One 2D navigation task (no time limit; :meth:`Navigation2DFamily.make_env` adds the horizon)."""

    metadata = {"render_modes": []}

    def __init__(self, goal: Sequence[float] = (0.0, 0.0), random_start: bool = False):
        self.observation_space = OBSERVATION_SPACE
        self.action_space = ACTION_SPACE
        self.goal = _goal_array(goal)
        self.random_start = bool(random_start)
        self._position = np.zeros(2, dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._position = _start(self.np_random, self.random_start)
        return self._position.copy(), {}

    def step(self, action):
        self._position = _move(self._position, action)
        reward, done = _reward_and_done(self._position, self.goal)
        return self._position.copy(), float(reward), bool(done), False, {}


class Navigation2DVectorEnv(VectorEnv):
    """All sub-envs of a meta-batch as arrays: sub-env i pursues ``goals[i]``; one episode per reset."""

    metadata = {"autoreset_mode": AutoresetMode.DISABLED}

    def __init__(self, goals: np.ndarray, random_start: bool = False, max_episode_steps: int = HORIZON):
        self.goals = np.asarray(goals, dtype=np.float32).reshape(-1, 2)
        self.num_envs = len(self.goals)
        self.random_start = bool(random_start)
        self.max_episode_steps = int(max_episode_steps)
        self.single_observation_space = OBSERVATION_SPACE
        self.single_action_space = ACTION_SPACE
        self.observation_space = batch_space(OBSERVATION_SPACE, self.num_envs)
        self.action_space = batch_space(ACTION_SPACE, self.num_envs)
        self._rngs: list[np.random.Generator] | None = None
        self._positions = np.zeros((self.num_envs, 2), dtype=np.float32)
        self._elapsed = 0
        self._terminated = np.zeros(self.num_envs, dtype=bool)
        self._truncated = np.zeros(self.num_envs, dtype=bool)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if self.random_start:
            if seed is not None:
                self._rngs = [seeding.np_random(int(seed) + i)[0] for i in range(self.num_envs)]
            elif self._rngs is None:
                self._rngs = [seeding.np_random(None)[0] for _ in range(self.num_envs)]
            self._positions = np.stack([_start(rng, True) for rng in self._rngs])
        else:
            self._positions = np.zeros((self.num_envs, 2), dtype=np.float32)
        self._elapsed = 0
        self._terminated[:] = False
        self._truncated[:] = False
        return self._positions.copy(), {}

    def step(self, actions):
        running = ~(self._terminated | self._truncated)
        moved = _move(self._positions, np.asarray(actions).reshape(self.num_envs, 2))
        self._positions = np.where(running[:, None], moved, self._positions)
        reward, done = _reward_and_done(self._positions, self.goals)
        reward = np.where(running, reward, 0.0)
        self._elapsed += 1
        self._terminated |= running & done
        self._truncated |= running & (self._elapsed >= self.max_episode_steps)  # as TimeLimit does
        return self._positions.copy(), reward, self._terminated.copy(), self._truncated.copy(), {}


class Navigation2DFamily(TaskFamily):
    """Goals uniform in [-0.5, 0.5]^2, start at the origin, horizon 100 (MAML / Meta-SGD protocol)."""

    random_start = False

    def __init__(self, max_episode_steps: int = HORIZON):
        if int(max_episode_steps) < 1:
            raise ValueError(f"max_episode_steps must be >= 1, got {max_episode_steps}")
        self.observation_space = OBSERVATION_SPACE
        self.action_space = ACTION_SPACE
        self.max_episode_steps = int(max_episode_steps)

    def sample_tasks(self, n: int, rng: np.random.Generator, split: str = "train") -> list[Task]:
        goals = split_generator(rng, split).uniform(LOW, HIGH, size=(int(n), 2))
        return [{"goal": [float(g) for g in goal]} for goal in goals]

    def make_env(self, task: Task) -> gym.Env:
        env = Navigation2DEnv(goal=task["goal"], random_start=self.random_start)
        return TimeLimit(env, max_episode_steps=self.max_episode_steps)

    def make_vector_env(self, tasks: Sequence[Task], episodes_per_task: int) -> Navigation2DVectorEnv:
        episodes_per_task = int(episodes_per_task)
        if episodes_per_task < 1:
            raise ValueError(f"episodes_per_task must be >= 1, got {episodes_per_task}")
        goals = np.stack([_goal_array(task["goal"]) for task in tasks])
        return Navigation2DVectorEnv(
            np.repeat(goals, episodes_per_task, axis=0), self.random_start, self.max_episode_steps
        )


class Navigation2DRandomStartFamily(Navigation2DFamily):
    """Meta-SGD's variant: the start is uniform in [-0.5, 0.5]^2, drawn at every reset."""

    random_start = True


def _register_gymnasium_ids() -> None:
    """Expose the single-task envs to ``gymnasium.make("metasgd_rl_envs:metasgd_rl/Navigation2D-v0", goal=...)``."""
    ids = {"metasgd_rl/Navigation2D-v0": False, "metasgd_rl/Navigation2D-RandomStart-v0": True}
    for env_id, random_start in ids.items():
        if env_id not in gym.registry:
            gym.register(
                env_id,
                entry_point="metasgd_rl_envs.navigation:Navigation2DEnv",
                max_episode_steps=HORIZON,
                kwargs={"random_start": random_start},
            )


_register_gymnasium_ids()
