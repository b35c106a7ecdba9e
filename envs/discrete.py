"""Discrete toy task families: Bernoulli multi-armed bandits and random tabular MDPs.

Both are the small discrete benchmarks of RL² (Duan et al. 2016, "RL²: Fast Reinforcement Learning via
Slow Reinforcement Learning", arXiv 1611.02779: random multi-armed bandits and random tabular MDPs), with the
task distributions of their re-implementations in pytorch-maml-rl (Deleu, ``maml_rl/envs/bandit.py`` and
``maml_rl/envs/mdp.py``). They are cheap enough for fast tests and exercise the categorical policy and
one-hot observations end to end. Unlike pytorch-maml-rl, which observes the MDP state as a float, the state
is a ``Discrete`` observation here (one-hot encoded by the policy): a state index is a label, not a number.

- :class:`MultiArmedBanditFamily` (``MultiArmedBandit-v0``): ``arms`` Bernoulli arms whose success
  probabilities are uniform in [0, 1]; the observation is always 0 and an episode is ``pulls`` pulls.
- :class:`TabularMDPFamily` (``TabularMDP-v0``): ``states`` x ``actions`` MDPs whose transition rows are
  Dirichlet(1) and whose mean rewards are Normal(1, 1); rewards are Normal(mean, 1), every episode starts in
  state 0 and lasts ``max_episode_steps`` steps.

Vector env ≡ single envs, without a Python loop over sub-envs per step: at ``reset`` every environment (the
single env, or sub-env i of the vector env, seeded with ``seed + i`` as gymnasium's vector envs do) draws the
noise of a whole episode from its own generator (``gymnasium.utils.seeding.np_random``). Steps then only
index that noise, with the same float64 arithmetic in both, so the same task, seed and actions give
identical observations and rewards.
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

ARMS = 5
PULLS = 10
STATES = 10
ACTIONS = 5
HORIZON = 10
#: how far a transition row may sum away from 1 (JSON round trips are exact; this allows hand-written tasks)
ROW_SUM_TOLERANCE = 1e-6


# ---------------------------------------------------------------------------------------------------------
# argument and task validation


def _positive_int(owner: str, name: str, value: Any) -> int:
    """``value`` as an int >= 1; bools, non-integral floats and strings are refused."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{owner}: {name} must be an integer >= 1, got {value!r}")
    return int(value)


def _check_n(n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"sample_tasks: n must be an integer >= 0, got {n!r}")
    return int(n)


def _episodes(episodes_per_task: Any) -> int:
    if isinstance(episodes_per_task, bool) or not isinstance(episodes_per_task, (int, np.integer)) \
            or episodes_per_task < 1:
        raise ValueError(f"episodes_per_task must be an integer >= 1, got {episodes_per_task!r}")
    return int(episodes_per_task)


def _float_array(owner: str, name: str, value: Any, shape: tuple[int, ...] | None, what: str) -> np.ndarray:
    """``value`` as a finite float64 array of ``shape`` (any shape of that rank when ``shape`` has -1s)."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{owner}: {name} must be {what}, got {_short(value)}") from err
    ok = shape is None or (array.ndim == len(shape) and all(s in (-1, d) for s, d in zip(shape, array.shape,
                                                                                          strict=True)))
    if not ok or array.size == 0 or not np.all(np.isfinite(array)):
        raise ValueError(f"{owner}: {name} must be {what}, got {_short(value)}")
    return array


def _short(value: Any, limit: int = 200) -> str:
    text = repr(value.tolist() if isinstance(value, np.ndarray) else value)
    return text if len(text) <= limit else text[:limit] + "..."


def _probs_array(probs: Any, arms: int | None = None) -> np.ndarray:
    """A bandit task's success probabilities: ``arms`` finite numbers in [0, 1]."""
    what = f"a list of {arms if arms is not None else 'k >= 1'} probabilities in [0, 1]"
    array = _float_array("MultiArmedBandit", "probs", probs, (arms if arms is not None else -1,), what)
    if np.any((array < 0) | (array > 1)):
        raise ValueError(f"MultiArmedBandit: probs must be {what}, got {_short(probs)}")
    return array


def _mdp_arrays(transitions: Any, rewards_mean: Any, states: int | None = None,
                actions: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A tabular MDP task: ``transitions`` S x A x S (rows are distributions), ``rewards_mean`` S x A (finite)."""
    s, a = (states or -1), (actions or -1)
    s_text, a_text = (states or "S"), (actions or "A")
    what = f"a {s_text} x {a_text} x {s_text} nested list of probabilities whose rows sum to 1"
    p = _float_array("TabularMDP", "transitions", transitions, (s, a, s), what)
    if p.shape[0] != p.shape[2] or np.any(p < 0) or np.any(np.abs(p.sum(axis=-1) - 1) > ROW_SUM_TOLERANCE):
        raise ValueError(f"TabularMDP: transitions must be {what}, got {_short(transitions)}")
    r_what = f"a {p.shape[0]} x {p.shape[1]} nested list of finite numbers (one mean reward per state and action)"
    r = _float_array("TabularMDP", "rewards_mean", rewards_mean, p.shape[:2], r_what)
    return p, r


def _task_value(task: Any, key: str, family: str) -> Any:
    if not isinstance(task, dict) or key not in task:
        raise ValueError(f"{family}: a task must be a dict with key {key!r}, got {_short(task)}")
    return task[key]


def _check_actions(actions: Any, num_envs: int, n: int) -> np.ndarray:
    actions = np.asarray(actions)
    integral = np.issubdtype(actions.dtype, np.integer) or (
        np.issubdtype(actions.dtype, np.floating) and bool(np.all(actions == np.round(actions))))
    if actions.size != num_envs or not integral:
        raise ValueError(f"expected {num_envs} integer actions, got {_short(actions)}")
    actions = actions.reshape(num_envs).astype(np.int64)
    if np.any((actions < 0) | (actions >= n)):
        raise ValueError(f"actions must be in [0, {n}), got {_short(actions)}")
    return actions


def _check_action(action: Any, n: int) -> int:
    a = int(np.asarray(action).reshape(()))
    if not 0 <= a < n:
        raise ValueError(f"action must be in [0, {n}), got {action!r}")
    return a


def _sub_env_generators(rngs: list[np.random.Generator] | None, seed: int | None,
                        num_envs: int) -> list[np.random.Generator]:
    """Sub-env i's generator, seeded with ``seed + i`` like the single env's ``reset(seed=seed + i)``.

    Without a seed the generators of the previous reset go on (as a single env's ``np_random`` does).
    """
    if seed is not None:
        return [seeding.np_random(int(seed) + i)[0] for i in range(num_envs)]
    if rngs is None:
        return [seeding.np_random(None)[0] for _ in range(num_envs)]
    return rngs


# ---------------------------------------------------------------------------------------------------------
# multi-armed bandit


class MultiArmedBanditEnv(gym.Env):
    """One Bernoulli bandit: pulling arm a pays 1 with probability ``probs[a]``, else 0; observation always 0.

    No time limit of its own (:meth:`MultiArmedBanditFamily.make_env` adds one after ``pulls`` steps). The
    uniforms deciding the payouts are drawn ``pulls`` at a time at reset, as the vector env draws them.
    """

    metadata = {"render_modes": []}

    def __init__(self, probs: Sequence[float], pulls: int = PULLS):
        self.probs = _probs_array(probs)
        self.pulls = _positive_int("MultiArmedBanditEnv", "pulls", pulls)
        self.observation_space = spaces.Discrete(1)
        self.action_space = spaces.Discrete(len(self.probs))
        self._noise = np.zeros(0)
        self._t = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._noise = self.np_random.random(self.pulls)
        self._t = 0
        return 0, {}

    def step(self, action):
        a = _check_action(action, len(self.probs))
        if self._t >= len(self._noise):  # stepped past the horizon without a TimeLimit: draw the next block
            self._noise = np.concatenate([self._noise, self.np_random.random(self.pulls)])
        reward = float(self._noise[self._t] < self.probs[a])
        self._t += 1
        return 0, reward, False, False, {}


class MultiArmedBanditVectorEnv(VectorEnv):
    """Bandits as arrays: sub-env i pulls the arms of ``probs[i // episodes_per_task]``; one episode per reset.

    Each episode is truncated after ``pulls`` steps; finished sub-envs stay done with reward 0 until reset.
    """

    metadata = {"autoreset_mode": AutoresetMode.DISABLED}

    def __init__(self, probs: np.ndarray, episodes_per_task: int = 1, pulls: int = PULLS):
        probs = np.asarray(probs, dtype=np.float64)
        if probs.ndim != 2:
            raise ValueError(f"probs must be a [tasks, arms] array, got shape {probs.shape}")
        self.pulls = _positive_int("MultiArmedBanditVectorEnv", "pulls", pulls)
        self.probs = np.repeat(probs, _episodes(episodes_per_task), axis=0)
        self.num_envs, self.arms = self.probs.shape
        self.single_observation_space = spaces.Discrete(1)
        self.single_action_space = spaces.Discrete(self.arms)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._rngs: list[np.random.Generator] | None = None
        self._noise = np.zeros((self.num_envs, self.pulls))
        self._rows = np.arange(self.num_envs)
        self._elapsed = 0
        self._truncated = np.zeros(self.num_envs, dtype=bool)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        self._rngs = _sub_env_generators(self._rngs, seed, self.num_envs)
        self._noise = np.stack([rng.random(self.pulls) for rng in self._rngs])
        self._elapsed = 0
        self._truncated[:] = False
        return np.zeros(self.num_envs, dtype=np.int64), {}

    def step(self, actions):
        actions = _check_actions(actions, self.num_envs, self.arms)
        running = ~self._truncated
        noise = self._noise[:, min(self._elapsed, self.pulls - 1)]
        reward = (noise < self.probs[self._rows, actions]).astype(np.float64)
        reward = np.where(running, reward, 0.0)
        self._elapsed += 1
        self._truncated |= running & (self._elapsed >= self.pulls)  # as TimeLimit does
        terminated = np.zeros(self.num_envs, dtype=bool)
        return np.zeros(self.num_envs, dtype=np.int64), reward, terminated, self._truncated.copy(), {}


class MultiArmedBanditFamily(TaskFamily):
    """Bernoulli bandits (RL²): 5 arms with success probabilities uniform in [0, 1]; horizon 10 pulls.

    ``arms`` and ``pulls`` change the number of arms and the episode length. The observation is always 0, so a
    policy can only tell tasks apart through what its adaptation step learned from the rewards.
    """

    def __init__(self, arms: int = ARMS, pulls: int = PULLS):
        self.arms = _positive_int("MultiArmedBanditFamily", "arms", arms)
        self.pulls = _positive_int("MultiArmedBanditFamily", "pulls", pulls)
        self.max_episode_steps = self.pulls
        self.observation_space = spaces.Discrete(1)
        self.action_space = spaces.Discrete(self.arms)

    def sample_tasks(self, n: int, rng: np.random.Generator, split: str = "train") -> list[Task]:
        """``n`` tasks ``{"probs": [p_0, ..., p_{k-1}]}``; the test split draws from a separate stream."""
        n = _check_n(n)
        probs = split_generator(rng, split).uniform(0.0, 1.0, size=(n, self.arms))
        return [{"probs": row.tolist()} for row in probs]

    def task_probs(self, task: Task) -> np.ndarray:
        """The validated success probabilities of ``task`` (a clear ``ValueError`` if it is malformed)."""
        return _probs_array(_task_value(task, "probs", "MultiArmedBandit"), self.arms)

    def make_env(self, task: Task) -> gym.Env:
        env = MultiArmedBanditEnv(self.task_probs(task), pulls=self.pulls)
        return TimeLimit(env, max_episode_steps=self.pulls)

    def make_vector_env(self, tasks: Sequence[Task], episodes_per_task: int) -> MultiArmedBanditVectorEnv:
        episodes_per_task = _episodes(episodes_per_task)
        if len(tasks) == 0:
            raise ValueError("make_vector_env needs at least one task")
        probs = np.stack([self.task_probs(task) for task in tasks])
        return MultiArmedBanditVectorEnv(probs, episodes_per_task, self.pulls)


# ---------------------------------------------------------------------------------------------------------
# tabular MDP


def _draw_mdp_noise(rng: np.random.Generator, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """One episode's reward noise (standard normal) and transition uniforms, in this order."""
    return rng.standard_normal(horizon), rng.random(horizon)


def _next_state(cumulative: np.ndarray, u: np.ndarray) -> np.ndarray:
    """First index where the cumulative row exceeds ``u`` (clamped to the last state against rounding)."""
    return np.minimum((cumulative <= u[..., None]).sum(axis=-1), cumulative.shape[-1] - 1)


class TabularMDPEnv(gym.Env):
    """One tabular MDP: from state s, action a pays Normal(``rewards_mean[s][a]``, 1) and moves to
    s' ~ ``transitions[s][a]``; every episode starts in state 0.

    No time limit of its own (:meth:`TabularMDPFamily.make_env` adds one). The noise of ``max_episode_steps``
    steps is drawn at reset, as the vector env draws it.
    """

    metadata = {"render_modes": []}

    def __init__(self, transitions: Sequence, rewards_mean: Sequence, max_episode_steps: int = HORIZON):
        self.transitions, self.rewards_mean = _mdp_arrays(transitions, rewards_mean)
        self.horizon = _positive_int("TabularMDPEnv", "max_episode_steps", max_episode_steps)
        self._cumulative = np.cumsum(self.transitions, axis=-1)
        states, actions = self.rewards_mean.shape
        self.observation_space = spaces.Discrete(states)
        self.action_space = spaces.Discrete(actions)
        self._reward_noise = self._uniforms = np.zeros(0)
        self._state = 0
        self._t = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._reward_noise, self._uniforms = _draw_mdp_noise(self.np_random, self.horizon)
        self._state = 0
        self._t = 0
        return 0, {}

    def step(self, action):
        a = _check_action(action, int(self.action_space.n))
        if self._t >= len(self._uniforms):  # stepped past the horizon without a TimeLimit: draw the next block
            noise, uniforms = _draw_mdp_noise(self.np_random, self.horizon)
            self._reward_noise = np.concatenate([self._reward_noise, noise])
            self._uniforms = np.concatenate([self._uniforms, uniforms])
        reward = float(self.rewards_mean[self._state, a] + self._reward_noise[self._t])
        self._state = int(_next_state(self._cumulative[self._state, a], self._uniforms[self._t]))
        self._t += 1
        return self._state, reward, False, False, {}


class TabularMDPVectorEnv(VectorEnv):
    """Tabular MDPs as arrays: sub-env i runs MDP ``i // episodes_per_task``; one episode per reset.

    Each episode starts in state 0 and is truncated after ``max_episode_steps`` steps; finished sub-envs stay
    done with reward 0 until reset.
    """

    metadata = {"autoreset_mode": AutoresetMode.DISABLED}

    def __init__(self, transitions: np.ndarray, rewards_mean: np.ndarray, episodes_per_task: int = 1,
                 max_episode_steps: int = HORIZON):
        transitions = np.asarray(transitions, dtype=np.float64)
        rewards_mean = np.asarray(rewards_mean, dtype=np.float64)
        if transitions.ndim != 4 or rewards_mean.shape != transitions.shape[:3]:
            raise ValueError(f"transitions must be [tasks, S, A, S] and rewards_mean [tasks, S, A], got shapes "
                             f"{transitions.shape} and {rewards_mean.shape}")
        episodes_per_task = _episodes(episodes_per_task)
        self.horizon = _positive_int("TabularMDPVectorEnv", "max_episode_steps", max_episode_steps)
        self.transitions, self.rewards_mean = transitions, rewards_mean
        self._cumulative = np.cumsum(transitions, axis=-1)
        self._task = np.repeat(np.arange(len(transitions)), episodes_per_task)  # sub-env -> task
        self.num_envs = len(self._task)
        _, states, actions, _ = transitions.shape
        self.single_observation_space = spaces.Discrete(states)
        self.single_action_space = spaces.Discrete(actions)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._rngs: list[np.random.Generator] | None = None
        self._reward_noise = np.zeros((self.num_envs, self.horizon))
        self._uniforms = np.zeros((self.num_envs, self.horizon))
        self._states = np.zeros(self.num_envs, dtype=np.int64)
        self._elapsed = 0
        self._truncated = np.zeros(self.num_envs, dtype=bool)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        self._rngs = _sub_env_generators(self._rngs, seed, self.num_envs)
        noise = [_draw_mdp_noise(rng, self.horizon) for rng in self._rngs]
        self._reward_noise = np.stack([r for r, _ in noise])
        self._uniforms = np.stack([u for _, u in noise])
        self._states = np.zeros(self.num_envs, dtype=np.int64)
        self._elapsed = 0
        self._truncated[:] = False
        return self._states.copy(), {}

    def step(self, actions):
        actions = _check_actions(actions, self.num_envs, int(self.single_action_space.n))
        running = ~self._truncated
        t = min(self._elapsed, self.horizon - 1)
        reward = self.rewards_mean[self._task, self._states, actions] + self._reward_noise[:, t]
        next_states = _next_state(self._cumulative[self._task, self._states, actions], self._uniforms[:, t])
        self._states = np.where(running, next_states, self._states)
        reward = np.where(running, reward, 0.0)
        self._elapsed += 1
        self._truncated |= running & (self._elapsed >= self.horizon)  # as TimeLimit does
        terminated = np.zeros(self.num_envs, dtype=bool)
        return self._states.copy(), reward, terminated, self._truncated.copy(), {}


class TabularMDPFamily(TaskFamily):
    """Random tabular MDPs (RL²): 10 states, 5 actions, Dirichlet(1) transitions, Normal(1, 1) mean rewards; horizon 10.

    ``states``, ``actions`` and ``max_episode_steps`` change the sizes and the horizon. Every episode starts in
    state 0 (as in RL²); rewards are Normal(mean, 1).
    """

    def __init__(self, states: int = STATES, actions: int = ACTIONS, max_episode_steps: int = HORIZON):
        self.states = _positive_int("TabularMDPFamily", "states", states)
        self.actions = _positive_int("TabularMDPFamily", "actions", actions)
        self.max_episode_steps = _positive_int("TabularMDPFamily", "max_episode_steps", max_episode_steps)
        self.observation_space = spaces.Discrete(self.states)
        self.action_space = spaces.Discrete(self.actions)

    def sample_tasks(self, n: int, rng: np.random.Generator, split: str = "train") -> list[Task]:
        """``n`` tasks ``{"transitions": S x A x S, "rewards_mean": S x A}``; test tasks from a separate stream."""
        n = _check_n(n)
        rng = split_generator(rng, split)
        transitions = rng.dirichlet(np.ones(self.states), size=(n, self.states, self.actions))
        rewards_mean = rng.normal(1.0, 1.0, size=(n, self.states, self.actions))
        return [{"transitions": p.tolist(), "rewards_mean": r.tolist()}
                for p, r in zip(transitions, rewards_mean, strict=True)]

    def task_arrays(self, task: Task) -> tuple[np.ndarray, np.ndarray]:
        """The validated ``(transitions, rewards_mean)`` arrays of ``task`` (a clear ``ValueError`` if malformed)."""
        return _mdp_arrays(_task_value(task, "transitions", "TabularMDP"),
                           _task_value(task, "rewards_mean", "TabularMDP"), self.states, self.actions)

    def make_env(self, task: Task) -> gym.Env:
        env = TabularMDPEnv(*self.task_arrays(task), max_episode_steps=self.max_episode_steps)
        return TimeLimit(env, max_episode_steps=self.max_episode_steps)

    def make_vector_env(self, tasks: Sequence[Task], episodes_per_task: int) -> TabularMDPVectorEnv:
        episodes_per_task = _episodes(episodes_per_task)
        if len(tasks) == 0:
            raise ValueError("make_vector_env needs at least one task")
        arrays = [self.task_arrays(task) for task in tasks]
        return TabularMDPVectorEnv(np.stack([p for p, _ in arrays]), np.stack([r for _, r in arrays]),
                                   episodes_per_task, self.max_episode_steps)


def _register_gymnasium_ids() -> None:
    """Expose the single-task envs to ``gymnasium.make("metasgd_rl_envs.discrete:metasgd_rl/TabularMDP-v0", ...)``."""
    ids = {
        "metasgd_rl/MultiArmedBandit-v0": ("metasgd_rl_envs.discrete:MultiArmedBanditEnv", PULLS),
        "metasgd_rl/TabularMDP-v0": ("metasgd_rl_envs.discrete:TabularMDPEnv", HORIZON),
    }
    for env_id, (entry_point, horizon) in ids.items():
        if env_id not in gym.registry:
            gym.register(env_id, entry_point=entry_point, max_episode_steps=horizon)


_register_gymnasium_ids()
