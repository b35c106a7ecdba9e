"""Checks that a task family keeps the contract the sampler and the meta-learners rely on.

A broken family rarely crashes: it silently trains on the wrong data (tasks that never reach the
environment, a test split that returns training tasks, a vector env that runs the wrong task in a sub-env).
:func:`check_task_family` runs a family through short, seeded rollouts and raises a
:class:`TaskFamilyCheckError` that names the family and what is wrong; a family that passes gets a
:class:`TaskFamilyReport`: the checks run or skipped, and the env checkers' warnings as plain text.
"""

from __future__ import annotations

import copy
import json
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env as gymnasium_check_env
from gymnasium.vector import VectorEnv
from gymnasium.vector.utils import concatenate, create_empty_array, iterate
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from metasgd_rl.family import SPLITS, Task, TaskFamily, not_json_message, one_line, task_problem

#: how many tasks per split the split-disjointness check draws
_SPLIT_SAMPLE = 50
#: tolerance when comparing a vector env with single envs (they may batch their arithmetic differently)
_ATOL = 1e-6


class TaskFamilyCheckError(ValueError):
    """Raised by :func:`check_task_family` when a family breaks the task-family contract. ``report`` holds the
    :class:`TaskFamilyReport` up to the failure (the checks that passed, the warnings so far)."""

    report: TaskFamilyReport | None = None


@dataclass(frozen=True)
class CheckOutcome:
    """One check of :func:`check_task_family`: its name, ``"passed"`` or ``"skipped"``, and why it was skipped."""

    name: str
    status: str
    reason: str = ""


@dataclass
class TaskFamilyReport:
    """What :func:`check_task_family` did: the family, each check (passed or skipped, with the reason) and the
    warnings gymnasium's and SB3's env checkers (or the family's env) gave, as plain text (no ANSI colours, no
    ``WARN:`` prefix, each once). ``str(report)`` is a short readable summary."""

    family: str
    checks: list[CheckOutcome] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def passed(self) -> list[str]:
        return [c.name for c in self.checks if c.status == "passed"]

    @property
    def skipped(self) -> list[str]:
        return [c.name for c in self.checks if c.status == "skipped"]

    def __str__(self) -> str:
        counts = f"{len(self.passed)} checks passed, {len(self.skipped)} skipped, {len(self.warnings)} warning" + \
            ("" if len(self.warnings) == 1 else "s")
        lines = [f"task family {self.family}: {counts}"]
        lines += [f"  {c.status:<7}  {c.name}" + (f" ({c.reason})" if c.reason else "") for c in self.checks]
        lines += [f"  warning  {w}" for w in self.warnings]
        return "\n".join(lines)


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def plain_warning(message: Any) -> str:
    """A warning's text without ANSI colour codes or gymnasium's ``WARN:`` prefix, on one line."""
    text = _ANSI.sub("", str(message)).strip()
    text = text.removeprefix("WARN:").strip()
    return " ".join(text.split())


def check_task_family(family: TaskFamily, *, n_tasks: int = 3, seed: int = 0, steps: int = 20) -> TaskFamilyReport:
    """Raise :class:`TaskFamilyCheckError` if ``family`` breaks the contract of :class:`TaskFamily`; else return a
    :class:`TaskFamilyReport` (``print(check_task_family(family))`` shows the checks and warnings).

    In order: its spaces and horizon; task sampling (``n`` JSON-able dicts, reproducible from a seed,
    invalid splits refused, test tasks disjoint from training tasks unless ``family.disjoint_splits`` is
    False); ``make_env`` (spaces, gymnasium's and SB3's env checkers; SB3's is skipped for an env it would
    take for a goal-conditioned one, i.e. with a ``compute_reward`` method but no Dict observations, as
    Meta-World's); determinism of an env for a fixed task, seed and actions; that different tasks change
    observations or rewards; and that ``make_vector_env`` runs task ``i // E`` in sub-env ``i`` exactly like a
    single env reset with ``seed + i``, freezing sub-envs whose episode ended.
    ``n_tasks`` tasks are used for the vector env, rollouts last at most ``steps`` steps.

    Warnings raised meanwhile (gymnasium's checker warns in yellow, e.g. about infinite Box bounds) are
    collected into the report as plain text rather than printed; on a failure they are on the error's
    ``report``.
    """
    name = _family_name(family)
    report = TaskFamilyReport(family=name)

    def passed(check: str) -> None:
        report.checks.append(CheckOutcome(check, "passed"))

    def skipped(check: str, reason: str) -> None:
        report.checks.append(CheckOutcome(check, "skipped", reason))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            _check_attributes(family, name)
            passed("spaces and horizon")
            tasks = _check_sampling(family, name, n_tasks, seed)
            passed("task sampling (JSON-able, seeded, splits)")
            if getattr(family, "disjoint_splits", True):
                passed("test tasks differ from training tasks")
            else:
                skipped("test tasks differ from training tasks", "the family declares disjoint_splits = False")
            sb3 = _check_make_env(family, name, tasks[0])
            passed("make_env spaces and gymnasium's env checker")
            if sb3:
                passed("stable-baselines3's env checker")
            else:
                skipped("stable-baselines3's env checker", "the env has compute_reward without Dict observations, "
                        "which SB3 would take for a goal-conditioned env")
            _check_determinism(family, name, tasks[0], seed, steps)
            passed("determinism for a fixed task, seed and actions")
            if _check_tasks_differ(family, name, tasks, seed, steps):
                passed("different tasks give different rollouts")
            else:
                skipped("different tasks give different rollouts", f"the {n_tasks} tasks drawn are all the same")
            _check_vector_env(family, name, tasks, seed, steps)
            passed("make_vector_env matches single envs")
        except TaskFamilyCheckError as err:
            err.report = report
            raise
        finally:
            for w in caught:
                text = plain_warning(w.message)
                if text and text not in report.warnings:
                    report.warnings.append(text)
    return report


def _family_name(family: Any) -> str:
    return getattr(family, "id", None) or type(family).__name__


def _fail(name: str, message: str) -> TaskFamilyCheckError:
    return TaskFamilyCheckError(f"{name}: {message}")


def _plain(value: Any) -> Any:
    """numpy scalars and arrays as Python values, so messages read ``-0.5`` rather than ``np.float64(-0.5)``."""
    return value.tolist() if isinstance(value, (np.ndarray, np.generic)) else value


# ---------------------------------------------------------------------------------------------------------
# attributes and sampling


def _check_attributes(family: TaskFamily, name: str) -> None:
    for attr in ("observation_space", "action_space"):
        space = getattr(family, attr, None)
        if not isinstance(space, spaces.Space):
            raise _fail(name, f"family.{attr} must be a gymnasium.spaces.Space, got {space!r}.")
    horizon = getattr(family, "max_episode_steps", None)
    if not isinstance(horizon, (int, np.integer)) or isinstance(horizon, bool) or horizon < 1:
        raise _fail(name, f"family.max_episode_steps must be an int >= 1, got {horizon!r}.")


def _sample(family: TaskFamily, n: int, seed: int, split: str) -> list[Task]:
    """Tasks drawn with a fresh generator, so the check never touches (or depends on) global RNG state."""
    return family.sample_tasks(n, np.random.default_rng(seed), split=split)


def _task_key(task: Task) -> str:
    return json.dumps(task, sort_keys=True)


def _check_task_list(name: str, tasks: Any, n: int, split: str) -> None:
    if not isinstance(tasks, list) or len(tasks) != n:
        raise _fail(name, f"sample_tasks({n}, rng, split={split!r}) must return a list of {n} tasks, got {tasks!r}.")
    for i, task in enumerate(tasks):
        if not isinstance(task, dict):
            raise _fail(name, f"sample_tasks(split={split!r}) returned {task!r}; a task must be a plain dict.")
        problem = task_problem(task)
        if problem:
            raise _fail(name, not_json_message(f"sample_tasks(split={split!r})", i, problem) + ".")
        same = json.loads(json.dumps(task)) == task
        if not same:
            raise _fail(
                name,
                f"task {task!r} changes in a JSON round trip (to {json.loads(json.dumps(task))!r}); "
                "use lists rather than tuples and string keys.",
            )


def _check_sampling(family: TaskFamily, name: str, n: int, seed: int) -> list[Task]:
    """Check both splits and return ``n`` training tasks drawn with ``seed``."""
    sampled = {}
    for split in SPLITS:
        sampled[split] = tasks = _sample(family, n, seed, split)
        _check_task_list(name, tasks, n, split)
        again = _sample(family, n, seed, split)
        if again != tasks:
            raise _fail(
                name,
                f"sample_tasks(split={split!r}) gave different tasks for the same seed ({tasks!r} then "
                f"{again!r}); draw only from the rng argument, never from the global numpy RNG.",
            )
    try:
        _sample(family, n, seed, "validation")
    except ValueError:
        pass
    except Exception as err:
        raise _fail(
            name, f"sample_tasks(split='validation') must raise ValueError, got {type(err).__name__}: {err}."
        ) from err
    else:
        raise _fail(name, f"sample_tasks(split='validation') must raise ValueError: the splits are {SPLITS}.")
    if not getattr(family, "disjoint_splits", True):
        return sampled["train"]  # a task set too small to hold tasks out (declared by the family)
    train = {_task_key(t) for t in _sample(family, _SPLIT_SAMPLE, seed, "train")}
    leaked = [t for t in _sample(family, _SPLIT_SAMPLE, seed, "test") if _task_key(t) in train]
    if leaked:
        raise _fail(
            name,
            f"with seed {seed}, the test split returns training tasks (e.g. {leaked[0]!r}); held-out "
            "tasks must differ from the training tasks drawn with the same seed.",
        )
    return sampled["train"]


# ---------------------------------------------------------------------------------------------------------
# single environments


def _make_env(family: TaskFamily, name: str, task: Task) -> gym.Env:
    try:
        env = family.make_env(task)
    except Exception as err:
        raise _fail(name, f"make_env({task!r}) raised {one_line(err)}") from err
    if not isinstance(env, gym.Env):
        raise _fail(name, f"make_env({task!r}) must return a gymnasium.Env, got {type(env).__name__}.")
    for attr in ("observation_space", "action_space"):
        if getattr(env, attr) != getattr(family, attr):
            raise _fail(
                name,
                f"make_env({task!r}).{attr} is {getattr(env, attr)!r} but family.{attr} is "
                f"{getattr(family, attr)!r}; every task's env must have the family's spaces.",
            )
    return env


def _run_checker(name: str, checker: str, check: Callable[[gym.Env], None], env: gym.Env) -> None:
    try:
        check(env)
    except Exception as err:
        raise _fail(name, f"{checker} rejects make_env(task): {type(err).__name__}: {err}") from err
    finally:
        env.close()


def _check_make_env(family: TaskFamily, name: str, task: Task) -> bool:
    """Each checker gets a fresh env: both step it, and gymnasium's also closes it. Whether SB3's checker ran
    (see :func:`_looks_like_goal_env`)."""
    _run_checker(
        name,
        "gymnasium's env checker",
        lambda env: gymnasium_check_env(env.unwrapped or env, skip_render_check=True),
        _make_env(family, name, task),
    )
    env = _make_env(family, name, task)
    if _looks_like_goal_env(env):
        env.close()
        return False
    _run_checker(name, "stable-baselines3's env checker", lambda env: sb3_check_env(env, warn=False), env)
    return True


def _looks_like_goal_env(env: gym.Env) -> bool:
    """Whether SB3's checker would take ``env`` for a goal-conditioned env and demand a Dict observation space:
    it does so for any env with a ``compute_reward`` method (Meta-World's envs use one internally). Such an env
    is checked by gymnasium's checker only."""
    return hasattr(env.unwrapped, "compute_reward") and not isinstance(env.observation_space, spaces.Dict)


def _seeded_action_space(family: TaskFamily, seed: int) -> spaces.Space:
    """A copy of the action space seeded with ``seed`` (the family's own space may be shared by envs)."""
    space = copy.deepcopy(family.action_space)
    space.seed(seed)
    return space


def _flat(space: spaces.Space, x: Any) -> np.ndarray:
    return np.asarray(spaces.flatten(space, x), dtype=np.float64)


def _rollout(family: TaskFamily, name: str, task: Task, seed: int, steps: int) -> list[tuple]:
    """``(obs, reward, terminated, truncated)`` of a fresh env over ``steps`` steps.

    Only the first reset is seeded; an episode that ends early is followed by another (so that short
    episodes, e.g. one-step bandits, still give enough steps to tell tasks apart).
    """
    actions = _seeded_action_space(family, seed)
    env = _make_env(family, name, task)
    try:
        obs, _ = env.reset(seed=seed)
        transitions = [(_flat(family.observation_space, obs), 0.0, False, False)]
        for _ in range(steps):
            obs, reward, terminated, truncated, _ = env.step(actions.sample())
            transitions.append((_flat(family.observation_space, obs), float(reward), terminated, truncated))
            if terminated or truncated:
                obs, _ = env.reset()
                transitions.append((_flat(family.observation_space, obs), 0.0, False, False))
        return transitions
    finally:
        env.close()


def _same_transition(a: tuple, b: tuple) -> bool:
    return np.array_equal(a[0], b[0]) and a[1] == b[1] and (bool(a[2]), bool(a[3])) == (bool(b[2]), bool(b[3]))


def _check_determinism(family: TaskFamily, name: str, task: Task, seed: int, steps: int) -> None:
    first = _rollout(family, name, task, seed, steps)
    second = _rollout(family, name, task, seed, steps)
    for t, (a, b) in enumerate(zip(first, second, strict=False)):
        if not _same_transition(a, b):
            raise _fail(
                name,
                f"two envs for task {task!r}, reset with seed {seed} and given the same actions, differ "
                f"at step {t}: (obs, reward, terminated, truncated) = {a} vs {b}. An env must draw its "
                "randomness from env.np_random (seeded by reset), not from global state.",
            )


def _check_tasks_differ(family: TaskFamily, name: str, tasks: list[Task], seed: int, steps: int) -> bool:
    """Whether there were two different tasks to compare (a family may have a single task)."""
    others = [t for t in tasks[1:] if t != tasks[0]]
    if not others:
        return False
    first = _rollout(family, name, tasks[0], seed, steps)
    second = _rollout(family, name, others[0], seed, steps)
    if not all(_same_transition(a, b) for a, b in zip(first, second, strict=False)):
        return True
    raise _fail(
        name,
        f"tasks {tasks[0]!r} and {others[0]!r} give identical observations and rewards: the task "
        "parameters do not reach the environment.",
    )


# ---------------------------------------------------------------------------------------------------------
# vector environment


def _check_vector_env(family: TaskFamily, name: str, tasks: list[Task], seed: int, steps: int) -> None:
    episodes = 2
    venv = family.make_vector_env(tasks, episodes)
    envs: list[gym.Env] = []
    try:
        n = len(tasks) * episodes
        if venv.num_envs != n:
            raise _fail(
                name,
                f"make_vector_env({len(tasks)} tasks, {episodes}) has num_envs={venv.num_envs}, "
                f"expected {n} (tasks x episodes_per_task).",
            )
        for attr in ("observation_space", "action_space"):
            if getattr(venv, f"single_{attr}") != getattr(family, attr):
                raise _fail(name, f"make_vector_env(...).single_{attr} differs from family.{attr}.")
        envs = [_make_env(family, name, tasks[i // episodes]) for i in range(n)]
        _compare_vector_with_singles(family, name, venv, envs, seed, steps, episodes)
    finally:
        venv.close()
        for env in envs:
            env.close()


def _compare_vector_with_singles(
    family: TaskFamily, name: str, venv: VectorEnv, envs: list[gym.Env], seed: int, steps: int, episodes: int
) -> None:
    """Step ``venv`` and its single-env twins with the same actions; sub-envs must match while running."""
    n = len(envs)
    obs_space = family.observation_space

    def mismatch(i: int, t: int, what: str, got: Any, expected: Any) -> TaskFamilyCheckError:
        return _fail(
            name,
            f"sub-env {i} of make_vector_env(tasks, {episodes}) must behave like "
            f"make_env(tasks[{i // episodes}]) reset with seed {seed} + {i} (sub-env i runs "
            f"tasks[i // episodes_per_task] and is seeded with seed + i), but at step {t} its {what} is "
            f"{_plain(got)!r} instead of {_plain(expected)!r}.",
        )

    vobs, _ = venv.reset(seed=seed)
    for i, (env, sub_obs) in enumerate(zip(envs, iterate(venv.observation_space, vobs), strict=True)):
        obs, _ = env.reset(seed=seed + i)
        if not np.allclose(_flat(obs_space, sub_obs), _flat(obs_space, obs), atol=_ATOL):
            raise mismatch(i, 0, "observation", sub_obs, obs)

    actions_space = _seeded_action_space(family, seed)
    batch = create_empty_array(family.action_space, n)
    done = np.zeros(n, dtype=bool)
    for t in range(1, steps + 1):
        actions = [actions_space.sample() for _ in range(n)]
        vobs, rewards, terminated, truncated, _ = venv.step(concatenate(family.action_space, actions, batch))
        sub_obs = list(iterate(venv.observation_space, vobs))
        for i, env in enumerate(envs):
            if done[i]:
                if rewards[i] != 0 or not (terminated[i] or truncated[i]):
                    raise _fail(
                        name,
                        f"sub-env {i} of make_vector_env was stepped or reset after its episode ended "
                        f"(step {t}: reward {float(rewards[i])}, terminated {bool(terminated[i])}, truncated "
                        f"{bool(truncated[i])}); a finished sub-env must stay done with reward 0 until reset.",
                    )
                continue
            obs, reward, term, trunc, _ = env.step(actions[i])
            if not np.allclose(_flat(obs_space, sub_obs[i]), _flat(obs_space, obs), atol=_ATOL):
                raise mismatch(i, t, "observation", sub_obs[i], obs)
            if not np.isclose(rewards[i], reward, atol=_ATOL):
                raise mismatch(i, t, "reward", rewards[i], reward)
            if (bool(terminated[i]), bool(truncated[i])) != (bool(term), bool(trunc)):
                raise mismatch(
                    i, t, "(terminated, truncated)", (bool(terminated[i]), bool(truncated[i])), (term, trunc)
                )
            done[i] = term or trunc
