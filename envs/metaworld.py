"""Meta-World task families (Yu et al. 2019; the ``metaworld`` package, v3 environments) on the benchmark's own
tasks and splits.

- :class:`MetaWorldML1Family` (``MetaWorld-ML1-v0``, ``env_name="reach-v3"``, ``"push-v3"``, ``"pick-place-v3"``,
  ...): one manipulation task, tasks differ by object and goal positions; 50 training and 50 test tasks.
- :class:`MetaWorldML10Family` (``MetaWorld-ML10-v0``): 10 training classes, 5 held-out test classes, 50 tasks each.
- :class:`MetaWorldML45Family` (``MetaWorld-ML45-v0``): 45 training classes, 5 held-out test classes.

A task is a JSON-able reference to one of the benchmark's tasks: ``{"env_name": "reach-v3", "index": 17,
"split": "train"}`` is the 18th ``reach-v3`` task of the benchmark's training tasks. The benchmark is built by
``metaworld`` itself from ``benchmark_seed`` (a family argument, so recorded with the run), so the same seed
gives the same tasks as any other Meta-World user's, and ``split="train"`` only ever draws the benchmark's
training tasks, ``split="test"`` only its test tasks (ML1: other goals; ML10/ML45: other classes).

Each task fixes its initial state (Meta-World freezes the object and goal positions of a task), and the goal is
not observed (the ML benchmarks' partially observable setting): the policy must find it from rewards. An
episode succeeds if ``info["success"]`` is true at any of its steps, as Meta-World users report it; the sampler
records it (:attr:`~metasgd_rl.TaskFamily.success_key`). Observations (39 numbers) and actions (4) agree across
classes, so one meta-batch may mix classes (ML10, ML45); the vector env keeps its environments per class between
rollouts, because building one costs about 0.1 s.

The benchmark is built once per process and cached (ML1 takes about 2 s, ML10 about 13 s, ML45 about 45 s
here; each Ray actor builds its own): ``metaworld`` draws the goals from NumPy's global generator, seeded with
``benchmark_seed`` and restored afterwards, so construction is serialised by a lock.

``metaworld`` is optional (``pip install "metasgd-rl[metaworld]"``; it pins ``mujoco==3.3.0``, which gymnasium's
MuJoCo locomotion families also run on). This module imports without it, and building a family without it raises
an ``ImportError`` that says what to install.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import VectorEnv

from metasgd_rl.family import EpisodeVectorEnv, Task, TaskFamily, as_generator, check_split

METAWORLD_MISSING = ('the Meta-World families need the metaworld package; install it with: '
                     'pip install "metasgd-rl[metaworld]"')
#: Meta-World v3's episode length (``SawyerXYZEnv.max_path_length``); the Meta-World paper's v1 used 150
METAWORLD_HORIZON = 500
TASK_KEYS = ("env_name", "index", "split")

_BENCHMARKS: dict[tuple[str, str | None, int], Any] = {}
_SEEDED_CLASSES: dict[type, type] = {}
_BENCHMARK_LOCK = threading.Lock()


def import_metaworld() -> Any:
    """The ``metaworld`` module, or an ``ImportError`` that says what to install."""
    try:
        import metaworld
    except ImportError as err:
        raise ImportError(METAWORLD_MISSING) from err
    return metaworld


def ml1_env_names() -> list[str]:
    """The v3 environment names ML1 accepts (``reach-v3``, ``push-v3``, ...)."""
    return list(import_metaworld().ML1.ENV_NAMES)


def load_benchmark(benchmark: str, env_name: str | None, seed: int) -> Any:
    """``metaworld.ML1(env_name, seed)``, ``ML10(seed)`` or ``ML45(seed)``, built once per process."""
    key = (benchmark, env_name, int(seed))
    with _BENCHMARK_LOCK:
        if key not in _BENCHMARKS:
            metaworld = import_metaworld()
            if benchmark == "ML1":
                _BENCHMARKS[key] = metaworld.ML1(env_name, seed=int(seed))
            else:
                _BENCHMARKS[key] = getattr(metaworld, benchmark)(seed=int(seed))
        return _BENCHMARKS[key]


class MetaWorldFamily(TaskFamily):
    """A Meta-World ML benchmark as a task family; subclasses name the benchmark.

    ``benchmark_seed`` is the seed ``metaworld`` builds the benchmark's tasks with (the same seed gives the same
    tasks); ``max_episode_steps`` the horizon (default 500, Meta-World v3's; shorter horizons end the episode
    earlier, as the Meta-World paper's 150 did).
    """

    benchmark: str = ""
    success_key = "success"
    #: a rollout builds and steps at most 50 environments at a time (about 1 GB; without a bound, 50 goals × 10
    #: episodes would hold 10 GB); a sampler's own ``max_envs`` overrides it. Envs are kept per class for reuse,
    #: so at most ``max_envs`` of each class exist, whatever the number of tasks and episodes
    max_envs = 50

    def __init__(self, *, env_name: str | None = None, benchmark_seed: int = 0,
                 max_episode_steps: int = METAWORLD_HORIZON):
        if isinstance(benchmark_seed, bool) or not isinstance(benchmark_seed, (int, np.integer)) \
                or benchmark_seed < 0:
            raise ValueError(f"{self._name}: benchmark_seed={benchmark_seed!r} is not allowed; use an integer >= 0")
        if isinstance(max_episode_steps, bool) or not isinstance(max_episode_steps, (int, np.integer)) \
                or not 1 <= max_episode_steps <= METAWORLD_HORIZON:
            raise ValueError(f"{self._name}: max_episode_steps={max_episode_steps!r} is not allowed; use an integer "
                             f"in [1, {METAWORLD_HORIZON}] (Meta-World's environments stop at {METAWORLD_HORIZON})")
        self.env_name = self._check_env_name(env_name)
        self.benchmark_seed = int(benchmark_seed)
        self.max_episode_steps = int(max_episode_steps)
        bench = load_benchmark(self.benchmark, self.env_name, self.benchmark_seed)
        self._classes = {"train": dict(bench.train_classes), "test": dict(bench.test_classes)}
        self._tasks: dict[str, dict[str, list[Any]]] = {}
        for split, tasks in (("train", bench.train_tasks), ("test", bench.test_tasks)):
            per_class: dict[str, list[Any]] = {name: [] for name in self._classes[split]}
            for task in tasks:
                per_class[task.env_name].append(task)
            self._tasks[split] = per_class
        #: every (class, index) of a split, in the benchmark's order: sample_tasks draws from these
        self._refs = {split: [(name, i) for name, tasks in self._tasks[split].items() for i in range(len(tasks))]
                      for split in ("train", "test")}
        self._pools: dict[type, list[gym.Env]] = {}  # free environments, per class
        first = self.sample_tasks(1, np.random.default_rng(0))[0]
        probe = self.make_env(first)
        self.observation_space = probe.observation_space
        self.action_space = probe.action_space
        self._release([probe])

    @property
    def _name(self) -> str:
        return type(self).__name__

    def _check_env_name(self, env_name: str | None) -> str | None:
        if env_name is not None:
            raise ValueError(f"{self._name}: env_name is only for MetaWorld-ML1-v0; {self.benchmark} fixes its "
                             "classes")
        return None

    # -- tasks ----------------------------------------------------------------------------------------------

    @property
    def classes(self) -> dict[str, list[str]]:
        """The environment names of each split (ML10: 10 training classes, 5 test classes)."""
        return {split: list(classes) for split, classes in self._classes.items()}

    def sample_tasks(self, n: int, rng: np.random.Generator, split: str = "train") -> list[Task]:
        """``n`` of the benchmark's ``split`` tasks, uniformly over all of them (so over classes too), without
        replacement while ``n`` does not exceed their number."""
        n = int(n)
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        refs = self._refs[check_split(split)]
        picks = as_generator(rng).choice(len(refs), size=n, replace=n > len(refs))
        return [{"env_name": refs[i][0], "index": int(refs[i][1]), "split": split} for i in picks]

    def benchmark_task(self, task: Task) -> Any:
        """The ``metaworld.Task`` a task dict refers to, after checking it names one of the benchmark's tasks."""
        if not isinstance(task, Mapping) or sorted(task) != sorted(TASK_KEYS):
            raise ValueError(f"{self._name}: a task is a dict with exactly the keys {list(TASK_KEYS)}, got {task!r}")
        split, env_name, index = task["split"], task["env_name"], task["index"]
        if split not in self._tasks:
            raise ValueError(f"{self._name}: task {task!r} has split={split!r}; use one of {list(self._tasks)}")
        if env_name not in self._tasks[split]:
            raise ValueError(f"{self._name}: task {task!r} names {env_name!r}, which is not a {split} class of "
                             f"{self.benchmark}; its {split} classes are {list(self._tasks[split])}")
        tasks = self._tasks[split][env_name]
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < len(tasks):
            raise ValueError(f"{self._name}: task {task!r} has index={index!r}; use an integer in "
                             f"[0, {len(tasks) - 1}]")
        return tasks[int(index)]

    # -- environments ---------------------------------------------------------------------------------------

    def make_env(self, task: Task) -> gym.Env:
        """A Meta-World environment bound to ``task``; its episodes end after ``max_episode_steps`` steps."""
        return self._bound_env(task, None)

    def _bound_env(self, task: Task, env: gym.Env | None) -> gym.Env:
        mw_task = self.benchmark_task(task)
        if env is None:
            env = self._env_class(task)()
            env.max_path_length = self.max_episode_steps  # the env truncates its own episodes at this length
            spaces = getattr(self, "observation_space", None), getattr(self, "action_space", None)
            if spaces[0] is not None and (env.observation_space, env.action_space) != spaces:
                raise ValueError(f"{self._name}: {task['env_name']!r} has observation space {env.observation_space} "
                                 f"and action space {env.action_space}, other classes {spaces[0]} and {spaces[1]}: "
                                 "its tasks cannot share a meta-batch with theirs")
        env.set_task(mw_task)
        return env

    def make_vector_env(self, tasks: Sequence[Task], episodes_per_task: int) -> VectorEnv:
        """Sub-env i runs ``tasks[i // E]`` on an environment of its class kept from earlier rollouts (built
        when none is free)."""
        tasks, episodes = list(tasks), int(episodes_per_task)
        if episodes < 1:
            raise ValueError(f"episodes_per_task must be >= 1, got {episodes}")
        for task in tasks:
            self.benchmark_task(task)  # refuse a bad task before touching any env
        envs = []
        for task in tasks:
            pool = self._pools.setdefault(self._env_class(task), [])
            for _ in range(episodes):
                envs.append(self._bound_env(task, pool.pop() if pool else None))
        return EpisodeVectorEnv.from_envs(envs, on_close=self._release)

    def _env_class(self, task: Task) -> type:
        """The (seeded) environment class of a checked task; pools of free environments are kept per class."""
        return seeded_class(self._classes[task["split"]][task["env_name"]])

    def _release(self, envs: list[gym.Env]) -> None:
        for env in envs:
            self._pools.setdefault(type(env), []).append(env)

    def close(self) -> None:
        """Close the environments kept for reuse."""
        for pool in self._pools.values():
            while pool:
                pool.pop().close()

    def describe(self) -> dict[str, Any]:
        """The benchmark, its seed, the horizon and the classes of each split, as plain data."""
        return {"benchmark": self.benchmark, "env_name": self.env_name, "benchmark_seed": self.benchmark_seed,
                "max_episode_steps": self.max_episode_steps, "classes": self.classes,
                "tasks": {split: len(refs) for split, refs in self._refs.items()}}

    def __repr__(self) -> str:
        name = f", env_name={self.env_name!r}" if self.env_name else ""
        return f"{type(self).__name__}(id={self.id!r}{name}, benchmark_seed={self.benchmark_seed})"


def _seeded_reset(self: Any, *, seed: int | None = None, options: dict[str, Any] | None = None):
    if seed is not None:
        self.np_random = np.random.default_rng(seed)
    return super(type(self), self).reset(seed=seed, options=options)


def seeded_class(cls: type) -> type:
    """A subclass of Meta-World environment class ``cls`` whose ``reset(seed=...)`` seeds ``env.np_random``.

    Meta-World's ``reset`` ignores the seed; gymnasium's API (and its env checker) expect a seeded reset to seed
    the env's generator. A task's initial state is fixed, so observations do not depend on the seed either way.
    """
    with _BENCHMARK_LOCK:
        if cls not in _SEEDED_CLASSES:
            _SEEDED_CLASSES[cls] = type(cls.__name__, (cls,), {"reset": _seeded_reset, "__module__": __name__,
                                                              "__doc__": cls.__doc__})
        return _SEEDED_CLASSES[cls]


class MetaWorldML1Family(MetaWorldFamily):
    """Meta-World ML1: one manipulation task (env_name, e.g. reach-v3), 50 training and 50 test goals; horizon 500."""

    benchmark = "ML1"

    def _check_env_name(self, env_name: str | None) -> str | None:
        names = ml1_env_names()
        if env_name not in names:
            raise ValueError(f"{self._name}: env_name={env_name!r} is not allowed; give one of Meta-World's v3 "
                             f"environments, e.g. 'reach-v3', 'push-v3', 'pick-place-v3' (all: {names})")
        return env_name


class MetaWorldML10Family(MetaWorldFamily):
    """Meta-World ML10: 10 training classes and 5 held-out test classes of 50 goals each; horizon 500."""

    benchmark = "ML10"


class MetaWorldML45Family(MetaWorldFamily):
    """Meta-World ML45: 45 training classes and 5 held-out test classes of 50 goals each; horizon 500."""

    benchmark = "ML45"
