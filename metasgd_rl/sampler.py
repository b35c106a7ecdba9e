"""Batched rollouts: T tasks x E episodes, one policy call per time step with per-task parameters."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from metasgd_rl.family import (
    API_ADVICE,
    RAISED_ADVICE,
    EpisodeVectorEnv,
    ObservationShapeError,
    SubEnvError,
    Task,
    TaskFamily,
    TaskFamilyError,
    family_label,
    one_line,
    reset_problem,
    step_problem,
)
from metasgd_rl.policies import Policy, observation_features
from metasgd_rl.threads import torch_threads


@dataclass
class EpisodeBatch:
    """Episodes of a meta-batch, time-major: tensors are ``[H, T, E, ...]``.

    ``mask[h, t, e]`` is 1 where step h of episode e of task t happened, 0 after the episode ended.
    ``observations`` are policy inputs (one-hot for discrete observation spaces). ``rewards`` are 0 where
    the mask is 0. ``actions`` are the sampled actions before any clipping by the environment (0 where the
    mask is 0). ``success[t, e]`` is 1.0 if the family's ``success_key`` flag was true at any step of episode e of
    task t, else 0.0; None for a family without one.
    """

    observations: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    mask: torch.Tensor
    tasks: list[Task] = field(default_factory=list)
    #: ``[T, E, obs_dim]``: the observations after the last step (frozen for finished episodes), or None
    final_observations: torch.Tensor | None = None
    #: ``[T, E]``: 1.0 where the episode succeeded (see :attr:`TaskFamily.success_key`), or None
    success: torch.Tensor | None = None

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

    def success_rates(self) -> torch.Tensor | None:
        """Fraction of successful episodes per task, ``[T]``; None for a family without a success flag."""
        return None if self.success is None else self.success.mean(-1)

    def first_nonfinite(self) -> tuple[str, float, int, int, int] | None:
        """The first (by task, episode, step) NaN or inf among the rewards and observations of steps that happened:
        ``(what, value, task, episode, step)`` with ``what`` "reward" or "observation" and ``step`` counting the
        env's ``step`` calls from 1 (an observation at step 0 came from ``reset``); None if all are finite."""
        valid = self.mask > 0
        found = []
        bad = ~torch.isfinite(self.rewards) & valid
        if bool(bad.any()):
            h, t, e = (int(i) for i in min(bad.nonzero().tolist(), key=lambda i: (i[1], i[2], i[0])))
            found.append(((t, e, h + 1), ("reward", float(self.rewards[h, t, e]), t, e, h + 1)))
        obs = self.observations.reshape(*self.mask.shape, -1)
        bad_obs = ~torch.isfinite(obs).all(-1) & valid
        if bool(bad_obs.any()):
            h, t, e = (int(i) for i in min(bad_obs.nonzero().tolist(), key=lambda i: (i[1], i[2], i[0])))
            value = obs[h, t, e][~torch.isfinite(obs[h, t, e])][0]
            found.append(((t, e, h), ("observation", float(value), t, e, h)))
        return min(found)[1] if found else None

    def task_major(self, x: torch.Tensor) -> torch.Tensor:
        """``[H, T, E, ...]`` -> ``[T, H, E, ...]``, the layout per-task parameters expect."""
        return x.transpose(0, 1)

    def select_tasks(self, tasks: slice) -> EpisodeBatch:
        """The episodes of a contiguous range of tasks (views, no copy)."""
        return EpisodeBatch(
            *(t[:, tasks] for t in (self.observations, self.actions, self.rewards, self.mask)),
            tasks=self.tasks[tasks],
            final_observations=None if self.final_observations is None else self.final_observations[tasks],
            success=None if self.success is None else self.success[tasks],
        )

    def to(self, device: torch.device | str) -> EpisodeBatch:
        return EpisodeBatch(
            *(t.to(device) for t in (self.observations, self.actions, self.rewards, self.mask)),
            tasks=self.tasks,
            final_observations=None if self.final_observations is None else self.final_observations.to(device),
            success=None if self.success is None else self.success.to(device),
        )


def rollout_seeds(seed: int | np.random.SeedSequence) -> tuple[int, int]:
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
    max_envs: int | None = None,
) -> EpisodeBatch:
    """Roll out ``episodes_per_task`` episodes of each task, task t with the parameter set ``params[·][t]``.

    ``params`` carry a leading task axis of length ``len(tasks)`` (see :mod:`metasgd_rl.policies`).
    Sub-envs are reset with one seed (sub-env i gets seed + i) and the policy's noise comes from a local
    torch generator, both derived from ``seed``: the same seed gives the same batch. ``max_envs`` bounds the
    sub-envs that exist at a time (see :func:`rollout_chunk`); it never changes the batch.
    """
    env_seed, noise_seed = rollout_seeds(seed)
    tasks = list(tasks)
    return rollout_chunk(family, policy, params, tasks, episodes_per_task, env_seed, noise_seed, 0, len(tasks),
                         device, max_envs=max_envs)


def envs_limit(family: TaskFamily, max_envs: int | None) -> int | None:
    """The bound on sub-envs at a time that a rollout of ``family`` obeys: ``max_envs`` if given, else the
    family's :attr:`~metasgd_rl.TaskFamily.max_envs` (None: no bound)."""
    limit = max_envs if max_envs is not None else getattr(family, "max_envs", None)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1):
        raise ValueError(f"max_envs={limit!r} is not allowed; use an integer >= 1 or None (no bound)")
    return None if limit is None else int(limit)


def tasks_per_rollout(num_tasks: int, episodes: int, limit: int | None) -> int:
    """How many tasks' sub-envs step together under the bound ``limit`` (all of them without one). A task's
    episodes always step together, so a bound below ``episodes`` still runs one task (``episodes`` sub-envs)."""
    if limit is None:
        return max(num_tasks, 1)
    return max(1, limit // max(episodes, 1))


@torch.no_grad()
def rollout_chunk(
    family: TaskFamily,
    policy: Policy,
    params: Mapping[str, torch.Tensor],
    tasks: Sequence[Task],
    episodes_per_task: int,
    env_seed: int,
    noise_seed: int,
    first_task: int,
    total_tasks: int,
    device: torch.device | str = "cpu",
    max_envs: int | None = None,
) -> EpisodeBatch:
    """Tasks ``first_task ..`` of a meta-batch of ``total_tasks``, exactly as :func:`sample_episodes` rolls
    them out for the whole meta-batch.

    ``max_envs`` (default: the family's :attr:`~metasgd_rl.TaskFamily.max_envs`, None for no bound): at most this
    many sub-envs are built and stepped at a time; the tasks are rolled out in consecutive groups of
    ``max_envs // episodes_per_task`` (at least one task), each exactly as inside the whole chunk, and joined. The
    batch is the same bit for bit; peak memory no longer grows with tasks × episodes for simulators whose
    environments are large (Meta-World's hold about 20 MB each), and a family that reuses its envs between rollouts
    keeps only a group's worth.

    The vector env of this chunk is reset with ``env_seed + first_task * episodes_per_task`` (its sub-env j is
    sub-env ``first_task * E + j`` of the whole batch), and at every step the noise of all ``total_tasks`` tasks
    is drawn from the ``noise_seed`` generator and this chunk's slice is used. Chunks rolled out anywhere (e.g.
    on Ray workers) and joined with :func:`concat_chunks` are therefore the batch of the whole meta-batch.
    Actions after an episode ended are 0; rolling out stops when every episode of the chunk has ended. For a
    family with a ``success_key``, an episode succeeds if that ``info`` flag is true at any of its steps.
    """
    tasks = list(tasks)
    num_tasks, episodes = len(tasks), int(episodes_per_task)
    if not 0 <= first_task <= total_tasks - num_tasks:
        raise ValueError(f"tasks {first_task}..{first_task + num_tasks - 1} are not within a meta-batch of "
                         f"{total_tasks} tasks")
    group = tasks_per_rollout(num_tasks, episodes, envs_limit(family, max_envs))
    if group >= num_tasks:
        return _rollout_group(family, policy, params, tasks, episodes, env_seed, noise_seed, first_task,
                              total_tasks, device)
    return concat_chunks([
        _rollout_group(family, policy, {n: p[start:start + group] for n, p in params.items()},
                       tasks[start:start + group], episodes, env_seed, noise_seed, first_task + start, total_tasks,
                       device)
        for start in range(0, num_tasks, group)])


def _rollout_group(
    family: TaskFamily,
    policy: Policy,
    params: Mapping[str, torch.Tensor],
    tasks: list[Task],
    episodes: int,
    env_seed: int,
    noise_seed: int,
    first_task: int,
    total_tasks: int,
    device: torch.device | str,
) -> EpisodeBatch:
    """:func:`rollout_chunk` of tasks whose sub-envs all step at once, in one vector env."""
    num_tasks = len(tasks)
    horizon = int(family.max_episode_steps)
    generator = torch.Generator(device=device).manual_seed(noise_seed)
    task_slice = slice(first_task, first_task + num_tasks)
    params = {n: p.detach() for n, p in params.items()}
    success_key = getattr(family, "success_key", None)
    venv = family.make_vector_env(tasks, episodes)
    checked = _ObservationCheck(family, venv, tasks, first_task, episodes)
    if isinstance(venv, EpisodeVectorEnv):
        venv.keep_infos = (success_key,) if success_key else False
    try:
        n_envs = num_tasks * episodes
        if venv.num_envs != n_envs:
            raise ValueError(
                f"{family!r}.make_vector_env returned {venv.num_envs} sub-envs for {num_tasks} tasks x "
                f"{episodes} episodes"
            )
        obs_space = family.observation_space
        discrete_actions = hasattr(policy, "n_actions")
        raw_obs, _ = checked(0, venv.reset, seed=env_seed + first_task * episodes)
        observations, actions, rewards, alive_steps = [], [], [], []
        alive = np.ones(n_envs, dtype=bool)
        success = np.zeros(n_envs, dtype=bool)
        zero = torch.zeros((), device=device)
        sample_actions = policy.action_sampler(params)
        # a vector env with threads of its own (MuJoCo's rollout) asks for the policy to run on fewer torch threads
        with torch_threads(getattr(venv, "policy_threads", None)):
            for step in range(1, horizon + 1):
                obs = observation_features(obs_space, torch.as_tensor(raw_obs, device=device))
                obs = obs.reshape(num_tasks, episodes, -1)
                noise = policy.draw_noise((total_tasks, episodes), generator, device)[task_slice]
                action = sample_actions(obs, noise)
                if not alive.all():
                    mask = torch.as_tensor(alive, device=device)
                    mask = mask.reshape(num_tasks, episodes, *([1] * (action.dim() - 2)))
                    action = torch.where(mask, action, zero.to(action.dtype))
                observations.append(obs)
                actions.append(action)
                alive_steps.append(alive.copy())
                env_action = action.cpu().numpy().reshape(n_envs, *(() if discrete_actions else (-1,)))
                raw_obs, reward, terminated, truncated, infos = checked(step, venv.step, env_action)
                rewards.append(np.where(alive, reward, 0.0))
                if success_key:
                    success |= alive & info_flags(infos, success_key, n_envs)
                alive &= ~(np.asarray(terminated) | np.asarray(truncated))
                if not alive.any():
                    break
        final_obs = observation_features(obs_space, torch.as_tensor(raw_obs, device=device))
    finally:
        venv.close()
    shape = (len(alive_steps), num_tasks, episodes)
    return EpisodeBatch(
        observations=torch.stack(observations),
        actions=torch.stack(actions),
        rewards=torch.as_tensor(np.stack(rewards).reshape(shape), dtype=torch.float32, device=device),
        mask=torch.as_tensor(np.stack(alive_steps).reshape(shape), dtype=torch.float32, device=device),
        tasks=tasks,
        final_observations=final_obs.reshape(num_tasks, episodes, -1),
        success=torch.as_tensor(success.reshape(num_tasks, episodes), dtype=torch.float32, device=device)
        if success_key else None,
    )


class _ObservationCheck:
    """Calls ``venv.reset`` / ``venv.step`` and refuses observations whose shape is not the family's
    ``observation_space``'s with a :class:`TaskFamilyError` naming the family, the task, both shapes and the step
    (instead of numpy's "Output array is the wrong shape" or a policy fed the wrong features)."""

    def __init__(self, family: TaskFamily, venv: Any, tasks: list[Task], first_task: int, episodes: int):
        self.family, self.venv, self.tasks, self.first_task, self.episodes = family, venv, tasks, first_task, episodes
        shape = family.observation_space.shape
        self.expected = None if shape is None else tuple(shape)
        self.n_envs = len(tasks) * episodes
        self.batch_shape = None if shape is None else (self.n_envs, *shape)

    def __call__(self, step: int, call: Any, *args: Any, **kwargs: Any) -> tuple:
        try:
            out = call(*args, **kwargs)
        except ObservationShapeError as err:
            raise self.error(step, err.sub_env, err.shape) from err
        except SubEnvError as err:  # chained: what the env raised (if it raised)
            raise self.sub_env_error(step, err) from (err.__cause__ if err.__cause__ is not None else err)
        except (TaskFamilyError, MemoryError):
            raise
        except Exception as err:  # a vector env of the family's own (e.g. MuJoCo's batched one): no sub-env known
            raise self.vector_error(step, "raised", RAISED_ADVICE, one_line(err)) from err
        problem = step_problem(out, self.n_envs) if step else reset_problem(out)
        if problem:
            raise self.vector_error(step, problem, API_ADVICE)
        obs = out[0]
        if self.batch_shape is not None and isinstance(obs, np.ndarray) and obs.shape != self.batch_shape:
            bad = None
            if isinstance(self.venv, EpisodeVectorEnv):
                bad = next(((i, np.shape(o)) for i, o in enumerate(self.venv.sub_env_observations)
                            if np.shape(o) != self.expected), None)
            if bad is not None:
                raise self.error(step, *bad)
            raise TaskFamilyError(
                f"{family_label(self.family)}: make_vector_env's env returned observations of shape {obs.shape} "
                f"{self.when(step)} for {len(self.tasks)} tasks x {self.episodes} episodes; expected "
                f"{self.batch_shape} (family.observation_space has shape {self.expected})")
        return out

    def when(self, step: int) -> str:
        return "at reset" if step == 0 else f"at step {step}"

    def stage(self, step: int) -> str:
        return "in reset" if step == 0 else f"in step {step} of the rollout"

    def sub_env_error(self, step: int, err: SubEnvError) -> TaskFamilyError:
        """``err`` of sub-env ``err.sub_env`` of an :class:`EpisodeVectorEnv`, naming the family and the task."""
        t = err.sub_env // self.episodes
        return TaskFamilyError(
            f"{family_label(self.family)}: the env of task {self.first_task + t} of the meta-batch ({self.tasks[t]!r}) "
            f"{err.problem} {self.stage(step)} (episode {err.sub_env % self.episodes}){_detail(err.detail)}; "
            f"{err.advice}")

    def vector_error(self, step: int, problem: str, advice: str, detail: str = "") -> TaskFamilyError:
        """A failure of the family's vector env as a whole (which sub-env failed is not known)."""
        return TaskFamilyError(
            f"{family_label(self.family)}: make_vector_env's env for {len(self.tasks)} tasks x {self.episodes} "
            f"episodes (tasks {self.first_task}..{self.first_task + len(self.tasks) - 1} of the meta-batch) {problem} "
            f"{self.stage(step)}{_detail(detail)}; {advice}")

    def error(self, step: int, sub_env: int, shape: tuple[int, ...]) -> TaskFamilyError:
        t = sub_env // self.episodes
        return TaskFamilyError(
            f"{family_label(self.family)}: the env of task {self.first_task + t} of the meta-batch "
            f"({self.tasks[t]!r}) returned an observation of shape {tuple(shape)} {self.when(step)} (episode "
            f"{sub_env % self.episodes}), but family.observation_space has shape {self.expected}; make_env must "
            "build envs whose observations match the family's observation_space")


def _detail(detail: str) -> str:
    return f": {detail}" if detail else ""


def info_flags(infos: Mapping[str, object], key: str, num_envs: int) -> np.ndarray:
    """``[num_envs]`` bools: whether each sub-env's step info (gymnasium's vector format, where ``infos["_" + key]``
    marks the sub-envs that reported ``key``) has a true ``key``; False where a sub-env did not report it."""
    if key not in infos:
        return np.zeros(num_envs, dtype=bool)
    values = np.asarray(infos[key])
    if values.shape != (num_envs,):
        raise ValueError(f"info[{key!r}] of the vector env has shape {values.shape}, expected ({num_envs},): the "
                         f"success flag must be one number or bool per sub-env")
    flags = values.astype(bool)
    reported = infos.get("_" + key)
    return flags if reported is None else flags & np.asarray(reported, dtype=bool)


def concat_chunks(chunks: Sequence[EpisodeBatch]) -> EpisodeBatch:
    """Join the :func:`rollout_chunk` batches of consecutive task chunks along the task axis.

    A chunk whose episodes all ended before the longest chunk's is padded as :func:`sample_episodes` would
    have continued it: its final observations repeated (finished sub-envs are frozen), actions and rewards 0,
    mask 0.
    """
    horizon = max(c.horizon for c in chunks)
    padded = []
    for c in chunks:
        extra = horizon - c.horizon
        if extra == 0:
            padded.append(c)
            continue
        if c.final_observations is None:
            raise ValueError("a chunk shorter than the others needs its final_observations to be padded")
        pad = (extra, *c.rewards.shape[1:])
        padded.append(EpisodeBatch(
            observations=torch.cat([c.observations, c.final_observations.expand(extra, *c.final_observations.shape)]),
            actions=torch.cat([c.actions, c.actions.new_zeros((extra, *c.actions.shape[1:]))]),
            rewards=torch.cat([c.rewards, c.rewards.new_zeros(pad)]),
            mask=torch.cat([c.mask, c.mask.new_zeros(pad)]),
            tasks=c.tasks,
            success=c.success,
        ))
    return EpisodeBatch(
        observations=torch.cat([c.observations for c in padded], dim=1),
        actions=torch.cat([c.actions for c in padded], dim=1),
        rewards=torch.cat([c.rewards for c in padded], dim=1),
        mask=torch.cat([c.mask for c in padded], dim=1),
        tasks=[t for c in chunks for t in c.tasks],
        final_observations=None if any(c.final_observations is None for c in chunks)
        else torch.cat([c.final_observations for c in chunks], dim=0),
        success=None if any(c.success is None for c in chunks) else torch.cat([c.success for c in chunks], dim=0),
    )
