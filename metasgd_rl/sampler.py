"""Batched rollouts: T tasks x E episodes, one policy call per time step with per-task parameters."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from metasgd_rl.family import EpisodeVectorEnv, Task, TaskFamily
from metasgd_rl.policies import Policy, observation_features


@dataclass
class EpisodeBatch:
    """Episodes of a meta-batch, time-major: tensors are ``[H, T, E, ...]``.

    ``mask[h, t, e]`` is 1 where step h of episode e of task t happened, 0 after the episode ended.
    ``observations`` are policy inputs (one-hot for discrete observation spaces). ``rewards`` are 0 where
    the mask is 0. ``actions`` are the sampled actions before any clipping by the environment.
    """

    observations: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    mask: torch.Tensor
    tasks: list[Task] = field(default_factory=list)

    @property
    def horizon(self) -> int:
        return self.rewards.shape[0]

    @property
    def num_tasks(self) -> int:
        return self.rewards.shape[1]

    @property
    def episodes_per_task(self) -> int:
        return self.rewards.shape[2]

    def episode_returns(self, gamma: float = 1.0) -> torch.Tensor:
        """(Discounted) return of each episode, ``[T, E]``."""
        if gamma == 1.0:
            return self.rewards.sum(0)
        discounts = gamma ** torch.arange(self.horizon, dtype=self.rewards.dtype, device=self.rewards.device)
        return torch.einsum("h,hte->te", discounts, self.rewards)

    def mean_returns(self) -> torch.Tensor:
        """Mean undiscounted return per task, ``[T]``."""
        return self.episode_returns().mean(-1)

    def task_major(self, x: torch.Tensor) -> torch.Tensor:
        """``[H, T, E, ...]`` -> ``[T, H, E, ...]``, the layout per-task parameters expect."""
        return x.transpose(0, 1)

    def to(self, device: torch.device | str) -> EpisodeBatch:
        return EpisodeBatch(
            *(t.to(device) for t in (self.observations, self.actions, self.rewards, self.mask)),
            tasks=self.tasks,
        )


def _seeds(seed: int | np.random.SeedSequence) -> tuple[int, int]:
    """An environment seed and a policy-noise seed, independent streams of one seed."""
    ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(int(seed))
    env_ss, noise_ss = ss.spawn(2)
    return int(env_ss.generate_state(1)[0] >> 1), int(noise_ss.generate_state(2, np.uint64)[0] >> 1)


@torch.no_grad()
def sample_episodes(
    family: TaskFamily,
    policy: Policy,
    params: Mapping[str, torch.Tensor],
    tasks: Sequence[Task],
    episodes_per_task: int,
    seed: int | np.random.SeedSequence,
    device: torch.device | str = "cpu",
) -> EpisodeBatch:
    """Roll out ``episodes_per_task`` episodes of each task, task t with the parameter set ``params[·][t]``.

    ``params`` carry a leading task axis of length ``len(tasks)`` (see :mod:`metasgd_rl.policies`).
    Sub-envs are reset with one seed (sub-env i gets seed + i) and actions are drawn from a local torch
    generator, both derived from ``seed``: the same seed gives the same batch.
    """
    tasks = list(tasks)
    num_tasks, episodes = len(tasks), int(episodes_per_task)
    horizon = int(family.max_episode_steps)
    env_seed, noise_seed = _seeds(seed)
    generator = torch.Generator(device=device).manual_seed(noise_seed)
    params = {n: p.detach() for n, p in params.items()}
    venv = family.make_vector_env(tasks, episodes)
    if isinstance(venv, EpisodeVectorEnv):
        venv.keep_infos = False
    try:
        n_envs = num_tasks * episodes
        if venv.num_envs != n_envs:
            raise ValueError(
                f"{family!r}.make_vector_env returned {venv.num_envs} sub-envs for {num_tasks} tasks x "
                f"{episodes} episodes"
            )
        obs_space = family.observation_space
        discrete_actions = hasattr(policy, "n_actions")
        raw_obs, _ = venv.reset(seed=env_seed)
        observations, actions, rewards, masks = [], [], [], []
        alive = np.ones(n_envs, dtype=bool)
        for _ in range(horizon):
            obs = observation_features(obs_space, torch.as_tensor(raw_obs, device=device))
            obs = obs.reshape(num_tasks, episodes, -1)
            action = policy.sample(obs, params, generator)
            observations.append(obs)
            actions.append(action)
            masks.append(torch.as_tensor(alive, dtype=torch.float32, device=device).reshape(num_tasks, episodes))
            env_action = action.cpu().numpy().reshape(n_envs, *(() if discrete_actions else (-1,)))
            raw_obs, reward, terminated, truncated, _ = venv.step(env_action)
            rewards.append(torch.as_tensor(np.where(alive, reward, 0.0), dtype=torch.float32, device=device))
            alive &= ~(np.asarray(terminated) | np.asarray(truncated))
            if not alive.any():
                break
    finally:
        venv.close()
    mask = torch.stack(masks)
    return EpisodeBatch(
        observations=torch.stack(observations),
        actions=torch.stack(actions),
        rewards=torch.stack(rewards).reshape(mask.shape),
        mask=mask,
        tasks=tasks,
    )
