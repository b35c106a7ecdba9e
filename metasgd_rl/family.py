"""Task families: a gymnasium environment plus a distribution over its parameters.

A *task* is a plain JSON-able dict (``{"goal": [0.3, -0.1]}``) that fixes the parameters of one
environment. A :class:`TaskFamily` samples tasks (reproducibly, from a caller-supplied generator, with
disjoint train/test splits where the task set is finite) and builds environments bound to tasks: one
``gymnasium.Env`` per task for single-task use (SB3, ``gymnasium.make``), and a vector env of T tasks x E
episodes for the batched sampler.
"""

from __future__ import annotations

import abc
import functools
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space, concatenate, create_empty_array, iterate

Task = dict[str, Any]
SPLITS = ("train", "test")


class TaskFamilyError(ValueError):
    """A task family broke its contract while in use (a task that is not JSON-able, a ``make_env`` that raised, an
    observation of the wrong shape): the one-line message names the family, the task and what to do."""


class ObservationShapeError(TaskFamilyError):
    """A sub-env of an :class:`EpisodeVectorEnv` returned an observation whose shape is not its space's."""

    def __init__(self, sub_env: int, shape: tuple[int, ...], expected: tuple[int, ...]):
        self.sub_env, self.shape, self.expected = sub_env, tuple(shape), tuple(expected)
        super().__init__(f"sub-env {sub_env} returned an observation of shape {self.shape}, but the observation "
                         f"space has shape {self.expected}")


class SubEnvError(TaskFamilyError):
    """Sub-env ``sub_env`` of an :class:`EpisodeVectorEnv` raised in ``stage`` ("reset" or "step"), or returned
    what gymnasium's API does not allow: ``problem`` says which ("raised", "returned a 4-tuple ..."), ``detail``
    what it raised, ``advice`` what to do. The sampler adds the family and the task."""

    def __init__(self, sub_env: int, stage: str, problem: str, advice: str, detail: str = ""):
        self.sub_env, self.stage, self.problem, self.advice, self.detail = sub_env, stage, problem, advice, detail
        super().__init__(f"sub-env {sub_env} {problem} in {stage}{': ' + detail if detail else ''}; {advice}")


#: what to do about an env that breaks gymnasium's API
API_ADVICE = ("gymnasium envs return (observation, info) from reset and (observation, reward, terminated, "
              "truncated, info) from step, with a scalar reward")
#: what to do about an env that raised
RAISED_ADVICE = "fix the env (msr.check_task_family(family) runs the family's envs on their own)"


def reset_problem(out: Any) -> str | None:
    """Why ``out``, returned by an env's ``reset``, is not gymnasium's ``(observation, info)``; None if it is."""
    if isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], dict):
        return None
    if isinstance(out, tuple) and len(out) == 2:
        return f"returned an info of type {_type_name(out[1])}, not a dict,"
    if isinstance(out, tuple):
        return f"returned a {len(out)}-tuple, not (observation, info),"
    return f"returned a {_type_name(out)}, not (observation, info) (the old gym API's observation alone),"


def step_problem(out: Any, batch: int | None = None) -> str | None:
    """Why ``out``, returned by an env's ``step``, is not gymnasium's 5-tuple with a scalar reward (``batch``: a
    vector env's, with ``batch`` rewards); None if it is. Only what no caller can use is reported (so that a result
    that was used is never blamed for a later error)."""
    if not isinstance(out, tuple) or len(out) != 5:
        if isinstance(out, tuple) and len(out) == 4:
            return "returned a 4-tuple (the old gym API's observation, reward, done, info)"
        return f"returned a {len(out)}-tuple" if isinstance(out, tuple) else f"returned a {_type_name(out)}"
    expected = () if batch is None else (batch,)
    if np.shape(out[1]) != expected:
        return f"returned a reward of shape {np.shape(out[1])}, not {expected},"
    return None


def family_label(family: Any) -> str:
    """``"task family 'Name-v0'"`` (or the class name of an unregistered family), for messages."""
    family_id = getattr(family, "id", None)
    return f"task family {family_id!r}" if family_id else f"task family {type(family).__name__}"


def one_line(err: BaseException) -> str:
    """``"Type: message"`` of an exception on one line."""
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _type_name(value: Any) -> str:
    cls = type(value)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def _conversion_hint(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return "convert numpy arrays with .tolist()"
    if isinstance(value, np.generic):
        return "convert numpy scalars with .item() (or float()/int())"
    if isinstance(value, tuple):
        return "use a list instead of a tuple (JSON turns it into a list)"
    if isinstance(value, (set, frozenset)):
        return "use a sorted list instead of a set"
    return "use lists, dicts with string keys, strings, numbers, bools or None"


def _json_problem(value: Any, path: str) -> str | None:
    """Why ``value`` (at ``path`` in a task) does not survive a JSON round trip unchanged, or None."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return None  # float subclasses (numpy.float64) serialise as floats
    if isinstance(value, list):
        for i, item in enumerate(value):
            problem = _json_problem(item, f"{path}[{i}]")
            if problem:
                return problem
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return (f"key {key!r} of {path!r} is a {_type_name(key)}: use string keys (JSON turns others into "
                        "strings)")
            problem = _json_problem(item, f"{path}.{key}")
            if problem:
                return problem
        return None
    return f"{path!r} is a {_type_name(value)}: {_conversion_hint(value)}"


def task_problem(task: Any) -> str | None:
    """None if ``task`` is a plain JSON-able dict that a JSON round trip gives back unchanged; else what is wrong,
    naming the offending key and its type (``"'goal' is a numpy.ndarray: convert numpy arrays with .tolist()"``)."""
    if not isinstance(task, dict):
        return f"the task is a {_type_name(task)}, not a dict: {_conversion_hint(task)}"
    for key, value in task.items():
        if not isinstance(key, str):
            return f"key {key!r} is a {_type_name(key)}: use string keys (JSON turns others into strings)"
        problem = _json_problem(value, key)
        if problem:
            return problem
    return None


def checked_tasks(family: Any, tasks: Any, source: str, n: int | None = None) -> list[Task]:
    """``tasks`` as a list, or a :class:`TaskFamilyError` naming ``family``, ``source`` (what produced them) and the
    first task that is not a plain JSON-able dict (tasks are logged and saved as JSON)."""
    if isinstance(tasks, (str, bytes, dict)) or not isinstance(tasks, Sequence):
        raise TaskFamilyError(f"{family_label(family)}: {source} returned a {_type_name(tasks)}; it must return a "
                              "list of tasks (JSON-able dicts)")
    tasks = list(tasks)
    if n is not None and len(tasks) != n:
        raise TaskFamilyError(f"{family_label(family)}: {source} returned {len(tasks)} tasks; it must return {n}")
    for i, task in enumerate(tasks):
        problem = task_problem(task)
        if problem:
            raise TaskFamilyError(f"{family_label(family)}: {not_json_message(source, i, problem)}")
    return tasks


def not_json_message(source: str, index: int, problem: str) -> str:
    """What to say of task ``index`` that ``source`` returned and that is not JSON-able (``problem``: from
    :func:`task_problem`); shared by training's refusal and :func:`~metasgd_rl.checks.check_task_family`."""
    return (f"{source} returned a task that is not JSON-able (task {index}: {problem}); tasks must be JSON-able "
            "dicts (they are logged with every iteration and saved as JSON)")


def sample_checked_tasks(family: TaskFamily, n: int, rng: np.random.Generator | int | np.random.SeedSequence,
                 split: str = "train") -> list[Task]:
    """``family.sample_tasks(n, rng, split)``, refused with a :class:`TaskFamilyError` unless it is a list of ``n``
    plain JSON-able dicts (see :func:`checked_tasks`). Training and evaluation sample through this. An exception
    ``sample_tasks`` raises becomes a :class:`TaskFamilyError` naming the family, with the original chained."""
    source = f"sample_tasks(split={split!r})"
    try:
        tasks = family.sample_tasks(n, rng, split=split)
    except (TaskFamilyError, MemoryError):
        raise
    except Exception as err:
        raise TaskFamilyError(f"{family_label(family)}: sample_tasks({n}, rng, split={split!r}) raised "
                              f"{one_line(err)}; fix the family's sample_tasks (msr.check_task_family(family) tests it)"
                              ) from err
    return checked_tasks(family, tasks, source, n)


def make_task_env(family: TaskFamily, task: Task, where: str = "") -> gym.Env:
    """``family.make_env(task)``; an exception it raises becomes a :class:`TaskFamilyError` naming the family and
    the task (``where``: e.g. ``" (task 3 of the meta-batch)"``), with the original exception chained."""
    try:
        return family.make_env(task)
    except TaskFamilyError:
        raise
    except Exception as err:
        raise TaskFamilyError(f"{family_label(family)}: make_env could not build an env for task {task!r}{where}: "
                              f"{one_line(err)}") from err


def as_generator(rng: np.random.Generator | int | np.random.SeedSequence) -> np.random.Generator:
    """Accept a numpy Generator, a SeedSequence or an int seed; never fall back to the global RNG."""
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer, np.random.SeedSequence)):
        return np.random.default_rng(rng)
    raise TypeError(
        f"rng must be a numpy.random.Generator, a SeedSequence or an int seed, got {type(rng).__name__}"
    )


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is not allowed; use one of {list(SPLITS)}")
    return split


def split_generator(rng: np.random.Generator | int | np.random.SeedSequence, split: str) -> np.random.Generator:
    """The generator a continuous family should draw ``split``'s tasks from.

    Both splits share the task distribution, but the same seed must not hand the training tasks back as
    held-out ones: "train" uses ``rng`` itself, "test" a separate stream seeded from it.
    """
    rng = as_generator(rng)
    if check_split(split) == "test":
        return np.random.default_rng(int(rng.integers(2**63)))
    return rng


class TaskFamily(abc.ABC):
    """Base class of task families.

    Subclasses set ``observation_space``, ``action_space`` and ``max_episode_steps`` (the horizon, also
    the length of a rollout), and implement :meth:`sample_tasks` and :meth:`make_env`. Families with a
    cheap batched simulator override :meth:`make_vector_env`; the default builds one environment per
    sub-env with :meth:`make_env` and steps them in a :class:`EpisodeVectorEnv` (or, with
    ``asynchronous = True``, in worker processes through gymnasium's ``AsyncVectorEnv``).
    """

    #: registry id and the keyword arguments it was made with, set by :func:`metasgd_rl.make_task_family`
    id: str | None = None
    make_kwargs: dict[str, Any] = {}
    #: step the generic vector env's sub-envs in worker processes (pays off for slow simulators on many cores)
    asynchronous: bool = False
    #: whether "test" tasks are held out from the training tasks. A family whose task set is too small to hold
    #: tasks out (e.g. two running directions) sets it False: evaluation on "test" then draws from the
    #: training distribution, and check_task_family skips the split-disjointness check.
    disjoint_splits: bool = True
    #: constructor arguments added after runs had been saved, with the value those runs were built with (e.g. the
    #: locomotion families' ``{"simulator": "gymnasium"}``): a run or checkpoint whose ``family_kwargs`` lack one
    #: is rebuilt with that value, so it resumes and evaluates as it was trained, and a new family records the
    #: attribute of that name in its ``make_kwargs`` and in its run's config (a later default cannot change it)
    legacy_kwargs: dict[str, Any] = {}
    #: the ``info`` key that flags success (Meta-World's ``"success"``), or None. An episode succeeds if the flag
    #: is true at any of its steps; the sampler records it and evaluation reports the success rate beside the
    #: return.
    success_key: str | None = None
    #: sub-envs a rollout builds and steps at a time unless the sampler is given its own ``max_envs`` (None: the
    #: whole meta-batch at once). Families whose environments are large set it (Meta-World's hold about 20 MB each,
    #: so 50 goals × 10 episodes at once would hold 10 GB); the batch is the same either way
    max_envs: int | None = None
    observation_space: gym.Space
    action_space: gym.Space
    max_episode_steps: int

    @abc.abstractmethod
    def sample_tasks(self, n: int, rng: np.random.Generator, split: str = "train") -> list[Task]:
        """Return ``n`` tasks drawn with ``rng``; ``split="test"`` draws held-out tasks."""

    @abc.abstractmethod
    def make_env(self, task: Task) -> gym.Env:
        """One environment bound to ``task``; it ends its episodes within ``max_episode_steps``."""

    def make_vector_env(self, tasks: Sequence[Task], episodes_per_task: int) -> VectorEnv:
        """A vector env of ``len(tasks) * episodes_per_task`` sub-envs; sub-env i runs ``tasks[i // E]``.

        Each ``reset`` starts exactly one episode per sub-env; finished sub-envs are frozen (last
        observation, zero reward, sticky done flag) until the next ``reset``: no autoreset into a second
        episode. Sub-env i is reset with ``seed + i``.
        """
        tasks = list(tasks)
        episodes_per_task = int(episodes_per_task)
        if episodes_per_task < 1:
            raise ValueError(f"episodes_per_task must be >= 1, got {episodes_per_task}")
        if self.asynchronous:
            env_fns = [functools.partial(_single_episode_env, self, task, f" (tasks[{i}])")
                       for i, task in enumerate(tasks) for _ in range(episodes_per_task)]
            return AsyncVectorEnv(env_fns, autoreset_mode=AutoresetMode.DISABLED)
        env_fns = [functools.partial(make_task_env, self, task, f" (tasks[{i}])")
                   for i, task in enumerate(tasks) for _ in range(episodes_per_task)]
        return EpisodeVectorEnv(env_fns)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.id!r})"


class SingleEpisode(gym.Wrapper):
    """Freezes an env once its episode ends: later steps return the last observation, reward 0 and the
    same done flags without stepping the simulator, until the next ``reset``."""

    def reset(self, **kwargs: Any):
        self._final: tuple | None = None
        return self.env.reset(**kwargs)

    def step(self, action):
        if getattr(self, "_final", None) is not None:
            obs, terminated, truncated = self._final
            return obs, 0.0, terminated, truncated, {}
        obs, reward, terminated, truncated, info = self.env.step(action)
        if terminated or truncated:
            self._final = (obs, terminated, truncated)
        return obs, reward, terminated, truncated, info


def _single_episode_env(family: TaskFamily, task: Task, where: str) -> gym.Env:
    return SingleEpisode(make_task_env(family, task, where))


#: no sub-env has returned yet
_NOTHING = object()


def _reset_sub_env(env: gym.Env, i: int, seed: int | None, options: dict | None) -> tuple[Any, dict]:
    """``env.reset(seed=seed, options=options)`` of sub-env ``i``, or a :class:`SubEnvError` if it raised or did
    not return gymnasium's ``(observation, info)``."""
    try:
        out = env.reset(seed=seed, options=options)
    except (TaskFamilyError, MemoryError):
        raise
    except Exception as err:
        raise SubEnvError(i, "reset", "raised", RAISED_ADVICE, one_line(err)) from err
    problem = reset_problem(out)
    if problem:
        raise SubEnvError(i, "reset", problem, API_ADVICE)
    return out


class EpisodeVectorEnv(VectorEnv):
    """Synchronous vector env that runs exactly one episode per sub-env between resets.

    Gymnasium's ``SyncVectorEnv`` either autoresets a finished sub-env (a second episode, possibly of
    the wrong length) or refuses to step it. Meta-RL rollouts want neither: a finished sub-env is frozen,
    returning its last observation, zero reward and its (sticky) termination/truncation flag, and costs
    no simulation until the next ``reset``.
    """

    metadata = {"autoreset_mode": AutoresetMode.DISABLED}
    #: merge the sub-envs' step infos (gymnasium's vector info format): True all keys, False none, or a tuple of
    #: the keys to keep. The sampler keeps only the family's ``success_key``: merging costs about a tenth of a
    #: MuJoCo step
    keep_infos: bool | tuple[str, ...] = True

    def __init__(self, env_fns: Sequence[Callable[[], gym.Env]]):
        self._setup([fn() for fn in env_fns], on_close=None)

    @classmethod
    def from_envs(
        cls, envs: Sequence[gym.Env], on_close: Callable[[list[gym.Env]], None] | None = None
    ) -> EpisodeVectorEnv:
        """A vector env over existing envs; ``on_close(envs)`` replaces closing them (e.g. to reuse them)."""
        venv = cls.__new__(cls)
        venv._setup(list(envs), on_close)
        return venv

    def _setup(self, envs: list[gym.Env], on_close: Callable[[list[gym.Env]], None] | None) -> None:
        if len(envs) == 0:
            raise ValueError("EpisodeVectorEnv needs at least one sub-env")
        self.envs = envs
        self._on_close = on_close
        self.num_envs = len(self.envs)
        self.single_observation_space = self.envs[0].observation_space
        self.single_action_space = self.envs[0].action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._obs = create_empty_array(self.single_observation_space, self.num_envs)
        self._env_obs: list[Any] = [None] * self.num_envs
        self._terminated = np.zeros(self.num_envs, dtype=bool)
        self._truncated = np.zeros(self.num_envs, dtype=bool)

    def reset(self, *, seed: int | Sequence[int | None] | None = None, options: dict | None = None):
        if seed is None or isinstance(seed, (int, np.integer)):
            seeds = [None if seed is None else int(seed) + i for i in range(self.num_envs)]
        else:
            seeds = list(seed)
            if len(seeds) != self.num_envs:
                raise ValueError(f"got {len(seeds)} seeds for {self.num_envs} sub-envs")
        infos: dict[str, Any] = {}
        for i, (env, s) in enumerate(zip(self.envs, seeds, strict=True)):
            self._env_obs[i], info = _reset_sub_env(env, i, s, options)
            infos = self._add_info(infos, info, i)
        self._terminated[:] = False
        self._truncated[:] = False
        self._concatenate()
        return np.copy(self._obs), infos

    def step(self, actions):
        rewards = np.zeros(self.num_envs, dtype=np.float64)
        infos: dict[str, Any] = {}
        running = np.flatnonzero(~(self._terminated | self._truncated))
        actions = list(iterate(self.action_space, actions))  # not actions[i]: Dict/Tuple spaces batch by key
        i, out = -1, _NOTHING
        try:  # around the loop, not in it: a sub-env that raises or breaks the API costs nothing until it does
            for i in running:
                out = self.envs[i].step(actions[i])
                obs, reward, terminated, truncated, info = out
                self._env_obs[i] = obs
                rewards[i] = reward
                self._terminated[i] = terminated
                self._truncated[i] = truncated
                if self.keep_infos is True:
                    infos = self._add_info(infos, info, i)
                elif self.keep_infos:
                    kept = {key: info[key] for key in self.keep_infos if key in info}
                    if kept:
                        infos = self._add_info(infos, kept, i)
        except (TaskFamilyError, MemoryError):
            raise
        except Exception as err:
            # only what sub-env i returned can be unusable (an earlier sub-env's result was used)
            problem = None if out is _NOTHING else step_problem(out)
            if problem:
                raise SubEnvError(int(i), "step", problem, API_ADVICE) from err
            raise SubEnvError(int(i), "step", "raised", RAISED_ADVICE, one_line(err)) from err
        self._concatenate()
        return np.copy(self._obs), rewards, self._terminated.copy(), self._truncated.copy(), infos

    @property
    def sub_env_observations(self) -> list[Any]:
        """The last observation of each sub-env, as the sub-env returned it."""
        return list(self._env_obs)

    def _concatenate(self) -> None:
        """Batch the sub-envs' observations; one of the wrong shape raises :class:`ObservationShapeError` (not
        numpy's "Output array is the wrong shape")."""
        try:
            self._obs = concatenate(self.single_observation_space, self._env_obs, self._obs)
        except ValueError as err:
            expected = self.single_observation_space.shape
            bad = [] if expected is None else [i for i, o in enumerate(self._env_obs) if np.shape(o) != expected]
            if not bad:
                raise
            raise ObservationShapeError(bad[0], np.shape(self._env_obs[bad[0]]), expected) from err

    def close_extras(self, **kwargs: Any) -> None:
        if self._on_close is not None:
            self._on_close(self.envs)
            return
        for env in self.envs:
            env.close()
