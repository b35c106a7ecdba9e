"""A one-step Gaussian bandit whose meta-objective has a closed form (used by the gradient tests).

Observation is always 0, the action a is a real number, the reward is -(a - goal)^2 and the episode ends
after one step. With a linear Gaussian policy (mean = bias, fixed std σ) and one REINFORCE inner step from
E episodes without baseline or normalisation, θ' = μ + α ū with ū = mean_e (a_e - μ) r_e / σ², and

    F(μ, α) = E[J(θ')] = -[(1 - 2α)² d² + α² (d⁴/σ² + 14 d² + 15 σ²) / E] - σ²,     d = μ - goal,

whose partial derivatives are :func:`closed_form_gradient`.
"""

from __future__ import annotations

from collections.abc import Sequence

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from metasgd_rl import Task, TaskFamily
from metasgd_rl.family import check_split

OBS_SPACE = spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
ACT_SPACE = spaces.Box(-np.inf, np.inf, shape=(1,), dtype=np.float32)


def closed_form_objective(mu: float, alpha: float, sigma: float, episodes: int, goal: float) -> float:
    d = mu - goal
    var_term = (d**4 / sigma**2 + 14 * d**2 + 15 * sigma**2) / episodes
    return -((1 - 2 * alpha) ** 2 * d**2 + alpha**2 * var_term) - sigma**2


def closed_form_gradient(mu: float, alpha: float, sigma: float, episodes: int, goal: float) -> tuple[float, float]:
    """(∂F/∂μ, ∂F/∂α) of the expected post-adaptation return."""
    d = mu - goal
    d_mu = -(2 * (1 - 2 * alpha) ** 2 * d + alpha**2 * (4 * d**3 / sigma**2 + 28 * d) / episodes)
    d_alpha = -(-4 * (1 - 2 * alpha) * d**2 + 2 * alpha * (d**4 / sigma**2 + 14 * d**2 + 15 * sigma**2) / episodes)
    return d_mu, d_alpha


class BanditEnv(gym.Env):
    def __init__(self, goal: float):
        self.observation_space, self.action_space, self.goal = OBS_SPACE, ACT_SPACE, float(goal)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(1, dtype=np.float32), {}

    def step(self, action):
        reward = -float((float(np.asarray(action).reshape(-1)[0]) - self.goal) ** 2)
        return np.zeros(1, dtype=np.float32), reward, True, False, {}


class BanditVectorEnv(VectorEnv):
    metadata = {"autoreset_mode": AutoresetMode.DISABLED}

    def __init__(self, goals: np.ndarray):
        self.goals = np.asarray(goals, dtype=np.float64)
        self.num_envs = len(self.goals)
        self.single_observation_space, self.single_action_space = OBS_SPACE, ACT_SPACE
        self.observation_space = batch_space(OBS_SPACE, self.num_envs)
        self.action_space = batch_space(ACT_SPACE, self.num_envs)

    def reset(self, *, seed=None, options=None):
        return np.zeros((self.num_envs, 1), dtype=np.float32), {}

    def step(self, actions):
        reward = -((np.asarray(actions, dtype=np.float64).reshape(-1) - self.goals) ** 2)
        done = np.ones(self.num_envs, dtype=bool)
        return np.zeros((self.num_envs, 1), dtype=np.float32), reward, done, np.zeros_like(done), {}


class BanditFamily(TaskFamily):
    """Goals uniform in [low, high] (low == high gives one fixed goal)."""

    observation_space, action_space, max_episode_steps = OBS_SPACE, ACT_SPACE, 1

    def __init__(self, low: float = -1.0, high: float = 1.0):
        self.low, self.high = float(low), float(high)

    def sample_tasks(self, n: int, rng: np.random.Generator, split: str = "train") -> list[Task]:
        return [{"goal": float(g)} for g in rng.uniform(self.low, self.high, size=n)]

    def make_env(self, task: Task) -> gym.Env:
        return BanditEnv(task["goal"])

    def make_vector_env(self, tasks: Sequence[Task], episodes_per_task: int) -> VectorEnv:
        return BanditVectorEnv(np.repeat([t["goal"] for t in tasks], episodes_per_task))


class ArmsEnv(gym.Env):
    """A one-step k-armed bandit: pulling ``best`` pays 1, any other arm 0. The observation is Discrete(1)."""

    def __init__(self, best: int, arms: int):
        self.observation_space, self.action_space = spaces.Discrete(1), spaces.Discrete(arms)
        self.best = int(best)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return 0, {}

    def step(self, action):
        return 0, float(int(action) == self.best), True, False, {}


class ArmsFamily(TaskFamily):
    """Discrete actions end to end: the task is which of ``arms`` arms pays (generic vector env).

    A finite task set, so the splits are disjoint: the last fifth of the arms (at least one) is held out.
    """

    max_episode_steps = 1

    def __init__(self, arms: int = 5):
        self.arms = int(arms)
        self.observation_space, self.action_space = spaces.Discrete(1), spaces.Discrete(self.arms)

    def sample_tasks(self, n: int, rng: np.random.Generator, split: str = "train") -> list[Task]:
        held_out = max(1, self.arms // 5)
        arms = range(self.arms - held_out) if check_split(split) == "train" else range(self.arms - held_out, self.arms)
        return [{"best": int(b)} for b in rng.choice(list(arms), size=n)]

    def make_env(self, task: Task) -> gym.Env:
        return ArmsEnv(task["best"], self.arms)
