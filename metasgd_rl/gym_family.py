"""Any gymnasium environment as a task family, by declaring which of its parameters vary and how.

    family = GymTaskFamily("CartPole-v1", {"length": Uniform(0.25, 1.0), "masspole": LogUniform(0.05, 0.5)},
                           max_episode_steps=200)

A task is ``{path: value}``: a float or a nested list per declared parameter (the factor, for ``scale=True``
parameters). Declared parameters are checked against a probe env when the family is built, and when it is
registered with :func:`metasgd_rl.register_task_family`: a path the env does not have is an error, never a
silent no-op.

The vector env reuses environments between rollouts (building 800 MuJoCo envs per rollout would cost
seconds): :meth:`GymTaskFamily.apply_task` writes every declared parameter from the task on each reuse, so a
reused env behaves exactly like a fresh ``make_env(task)``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import VectorEnv

from metasgd_rl.family import EpisodeVectorEnv, Task, TaskFamily, split_generator
from metasgd_rl.parameters import (
    Choice,
    Distribution,
    ParameterPathError,
    ParameterSlot,
    parse_distribution,
    resolve_path,
)


class GymTaskFamily(TaskFamily):
    """A gymnasium env whose declared parameters are drawn per task.

    ``env_id`` is a gymnasium id (``"CartPole-v1"``) or a callable returning an env; ``env_kwargs`` go to
    ``gymnasium.make`` (or the callable). ``parameters`` maps attribute paths to distributions (or their dict
    form). ``max_episode_steps`` defaults to the env's registered time limit. Declaring no parameters is refused
    with a list of those the env has (:func:`tunable_parameters`), so ``GymTaskFamily("Acrobot-v1")`` shows what
    Acrobot can vary.

    Subclasses may declare ``env_id``, ``parameters``, ``env_kwargs`` and ``max_episode_steps`` as class
    attributes, wrap the env in :meth:`make_base_env` (e.g. a reward that depends on a task parameter held
    by the wrapper) and extend :meth:`apply_task` to update quantities derived from the parameters.
    """

    env_id: str | Callable[..., gym.Env] | None = None
    parameters: Mapping[str, Distribution | Mapping[str, Any]] = {}
    env_kwargs: Mapping[str, Any] = {}
    max_episode_steps: int | None = None  # type: ignore[assignment]

    def __init__(
        self,
        env_id: str | Callable[..., gym.Env] | None = None,
        parameters: Mapping[str, Distribution | Mapping[str, Any]] | None = None,
        *,
        max_episode_steps: int | None = None,
        env_kwargs: Mapping[str, Any] | None = None,
    ):
        self.env_id = env_id if env_id is not None else type(self).env_id
        if self.env_id is None:
            raise ValueError(f"{type(self).__name__}: give env_id (a gymnasium id or a callable returning an env)")
        declared = parameters if parameters is not None else type(self).parameters
        self.env_kwargs = dict(env_kwargs if env_kwargs is not None else type(self).env_kwargs)
        if not isinstance(declared, Mapping):
            raise ValueError(f"{self._name}: parameters must be a non-empty mapping {{path: distribution}}, "
                             f"got {declared!r}")
        if not declared:
            raise ValueError(self._no_parameters_message())
        self.parameters = {str(p): parse_distribution(d, name=f"{self._name} parameter {p!r}")
                           for p, d in declared.items()}
        horizon = max_episode_steps if max_episode_steps is not None else type(self).max_episode_steps
        self._pool: list[gym.Env] = []

        probe = self._make_unbound(horizon)
        try:
            if horizon is None:
                horizon = probe.spec.max_episode_steps if probe.spec is not None else None
            if horizon is None or int(horizon) < 1:
                raise ValueError(f"{self._name}: the env has no time limit; give max_episode_steps >= 1")
            self.max_episode_steps = int(horizon)
            self.observation_space = probe.observation_space
            self.action_space = probe.action_space
            self.defaults = {path: self._check_parameter(probe, path, dist) for path, dist in self.parameters.items()}
        finally:
            probe.close()

    # -- declaration ----------------------------------------------------------------------------------------

    @property
    def _name(self) -> str:
        env = getattr(self, "env_id", None)
        return f"{type(self).__name__}({env if isinstance(env, str) else getattr(env, '__name__', env)!r})"

    def _no_parameters_message(self) -> str:
        """The refusal of a family that declares no parameter, listing those the env has (one line), so that the
        user can pick some without reading the env's source."""
        try:
            env = self.make_base_env(1)
        except Exception as err:  # still the missing declaration first, then why the list is missing
            return (f"{self._name}: declare which parameters vary, e.g. parameters={{'PARAMETER': Uniform(0.5, 2.0, "
                    f"scale=True)}} (its env could not be built to list them: {type(err).__name__}: {err})")
        try:
            example = example_parameter(env) or "PARAMETER"
            return (f"{self._name}: declare which parameters vary, e.g. parameters={{{example!r}: Uniform(0.5, 2.0, "
                    f"scale=True)}} (scale=True multiplies the default value); {tunable_summary(env)}")
        finally:
            env.close()

    def _check_parameter(self, env: gym.Env, path: str, dist: Distribution) -> np.ndarray:
        """The env's default value of ``path``, after checking the distribution can be written there. A path the env
        lacks, with nothing close to suggest, is refused with the parameters the env does have."""
        try:
            slot = resolve_path(env, path, env_name=self._name)
        except ParameterPathError as err:
            if "Did you mean" in str(err) or "no attribute" not in str(err):
                raise
            raise ParameterPathError(f"{err} {tunable_summary(env)}") from None
        default = np.array(slot.get(), dtype=np.float64)
        shape = self.value_shape(path, default.shape)
        if dist.scale:
            try:
                np.broadcast_shapes(shape, default.shape)
            except ValueError as err:
                raise ParameterPathError(
                    f"{self._name}: factors of shape {shape} for {path!r} do not broadcast to its shape "
                    f"{default.shape}"
                ) from err
            if np.broadcast_shapes(shape, default.shape) != default.shape:
                raise ParameterPathError(f"{self._name}: factors of shape {shape} for {path!r} would change its "
                                         f"shape {default.shape}")
        elif shape != default.shape:
            raise ParameterPathError(
                f"{self._name}: {path!r} has shape {default.shape} but its distribution draws shape {shape}; "
                f"give shape={list(default.shape)} (or scale=True to multiply the default value)"
            )
        return default

    def value_shape(self, path: str, default_shape: tuple[int, ...] | None = None) -> tuple[int, ...]:
        """Shape of the value a task holds for ``path``."""
        dist = self.parameters[path]
        if isinstance(dist, Choice) and np.ndim(dist.values) > 1:
            return tuple(np.shape(dist.values)[1:])
        if dist.shape is not None:
            return dist.shape
        if dist.scale:
            return default_shape if default_shape is not None else tuple(self.defaults[path].shape)
        return ()

    @classmethod
    def validate_registration(cls, **kwargs: Any) -> None:
        """Called by :func:`~metasgd_rl.register_task_family`: build the family once so that a parameter the
        env does not have fails at registration. Skipped if the family needs arguments only ``make`` gives."""
        try:
            family = cls(**kwargs)
        except TypeError as err:
            if "required" in str(err) and "argument" in str(err):
                return
            raise
        family.close()

    # -- environments ---------------------------------------------------------------------------------------

    def make_base_env(self, max_episode_steps: int | None = None) -> gym.Env:
        """A fresh env with the family's time limit, not yet bound to a task (subclasses add wrappers here)."""
        horizon = max_episode_steps if max_episode_steps is not None else self.max_episode_steps
        if callable(self.env_id):
            env = self.env_id(**self.env_kwargs)
            return gym.wrappers.TimeLimit(env, int(horizon)) if horizon is not None else env
        return gym.make(self.env_id, max_episode_steps=horizon, disable_env_checker=True, **self.env_kwargs)

    def _make_unbound(self, horizon: int | None) -> gym.Env:
        return self.make_base_env(horizon)

    def make_env(self, task: Task) -> gym.Env:
        env = self.make_base_env()
        self.apply_task(env, task)
        return env

    def apply_task(self, env: gym.Env, task: Task) -> None:
        """Write every declared parameter of ``task`` into ``env`` (overwriting what an earlier task set)."""
        values = self.task_values(task)
        for path, value in values.items():
            slot = self._slot(env, path)
            slot.set(self.defaults[path] * value if self.parameters[path].scale else value)
        if any(path.startswith("model.") for path in values):
            _refresh_mujoco_constants(env)

    def _slot(self, env: gym.Env, path: str) -> ParameterSlot:
        return resolve_path(env, path, env_name=self._name)

    def task_values(self, task: Task) -> dict[str, np.ndarray]:
        """The task's values as arrays, after checking it names exactly the declared parameters."""
        if not isinstance(task, Mapping):
            raise TypeError(f"{self._name}: a task is a dict {{path: value}}, got {task!r}")
        missing = sorted(set(self.parameters) - set(task))
        extra = sorted(set(task) - set(self.parameters))
        if missing or extra:
            raise ValueError(f"{self._name}: task {task!r} must give exactly the declared parameters "
                             f"{sorted(self.parameters)} (missing {missing}, unknown {extra})")
        values = {}
        for path in self.parameters:
            value = np.asarray(task[path], dtype=np.float64)
            if value.shape != self.value_shape(path) or not np.all(np.isfinite(value)):
                raise ValueError(f"{self._name}: task value {path}={task[path]!r} must be finite numbers of shape "
                                 f"{self.value_shape(path)}")
            values[path] = value
        return values

    def sample_tasks(self, n: int, rng: np.random.Generator, split: str = "train") -> list[Task]:
        """``n`` tasks, each parameter drawn independently; ``split="test"`` draws from a separate stream."""
        if int(n) < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        rng = split_generator(rng, split)
        draws = {path: dist.draw(rng, (int(n), *self.value_shape(path))) for path, dist in self.parameters.items()}
        return [{path: _plain(draws[path][i]) for path in self.parameters} for i in range(int(n))]

    def make_vector_env(self, tasks: Sequence[Task], episodes_per_task: int) -> VectorEnv:
        """Sub-env i runs ``tasks[i // E]`` on an env reused from earlier rollouts (built when none is free)."""
        tasks, episodes = list(tasks), int(episodes_per_task)
        if episodes < 1:
            raise ValueError(f"episodes_per_task must be >= 1, got {episodes}")
        if self.asynchronous:
            return super().make_vector_env(tasks, episodes)
        for task in tasks:
            self.task_values(task)  # refuse a bad task before touching any env
        n = len(tasks) * episodes
        envs = [self._pool.pop() if self._pool else self.make_base_env() for _ in range(n)]
        for i, env in enumerate(envs):
            self.apply_task(env, tasks[i // episodes])
        return EpisodeVectorEnv.from_envs(envs, on_close=self._pool.extend)

    def close(self) -> None:
        """Close the environments kept for reuse."""
        while self._pool:
            self._pool.pop().close()

    def describe(self) -> dict[str, Any]:
        """The declaration as plain data (env, parameters in their dict form, horizon)."""
        env = self.env_id if isinstance(self.env_id, str) else f"{self.env_id.__module__}:{self.env_id.__qualname__}"
        return {"env_id": env, "parameters": {p: d.to_dict() for p, d in self.parameters.items()},
                "max_episode_steps": self.max_episode_steps, "env_kwargs": json.loads(json.dumps(self.env_kwargs))}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.id!r}, env_id={self.describe()['env_id']!r}, " \
               f"parameters={sorted(self.parameters)})"


#: arrays of a MuJoCo model that task families commonly vary (ProMP's rand_param_envs: masses, inertias,
#: damping, friction), listed by :func:`tunable_parameters` when the env has a MuJoCo model
MUJOCO_PARAMETERS = ("model.body_mass", "model.body_inertia", "model.dof_damping", "model.geom_friction")
#: how many parameters a one-line message lists before "... (N more)"
SHOWN_PARAMETERS = 16


def _is_numeric(value: Any) -> bool:
    """Whether a :class:`GymTaskFamily` can vary ``value``: a number (not a bool) or a non-empty numeric array."""
    if isinstance(value, np.ndarray):
        return value.size > 0 and np.issubdtype(value.dtype, np.number)
    return isinstance(value, (int, float, np.number)) and not isinstance(value, (bool, np.bool_))


def tunable_parameters(env: gym.Env) -> dict[str, Any]:
    """The parameter paths a :class:`GymTaskFamily` can vary on ``env``, sorted, with their current values.

    They are the public numeric attributes of ``env.unwrapped`` (its own and its classes', read without calling
    properties, so listing them has no side effect), plus the common arrays of a MuJoCo model
    (:data:`MUJOCO_PARAMETERS`) where the env has one. Shown to a user who has not declared any parameter yet.
    """
    unwrapped = env.unwrapped
    attributes: dict[str, Any] = {}
    for klass in reversed(type(unwrapped).__mro__):
        attributes.update(vars(klass))
    attributes.update(getattr(unwrapped, "__dict__", {}))
    found = {name: attributes[name] for name in sorted(attributes)
             if not name.startswith("_") and _is_numeric(attributes[name])}
    model = getattr(unwrapped, "__dict__", {}).get("model")
    if model is not None and type(model).__module__.split(".")[0] == "mujoco":
        for path in MUJOCO_PARAMETERS:
            value = getattr(model, path.split(".", 1)[1], None)
            if _is_numeric(value):
                found[path] = value
    return found


def tunable_summary(env: gym.Env) -> str:
    """``"AcrobotEnv's numeric attributes: LINK_LENGTH_1=1, ..."``: :func:`tunable_parameters` on one line (arrays
    as ``name[shape]``, at most :data:`SHOWN_PARAMETERS` of them), or a line saying that it has none."""
    found = tunable_parameters(env)
    name = type(env.unwrapped).__name__
    if not found:
        return f"{name} has no public numeric attribute to vary (a wrapper or subclass can expose one)"
    shown = [f"{path}[{','.join(map(str, np.shape(value)))}]" if isinstance(value, np.ndarray) else
             f"{path}={float(value):g}" for path, value in list(found.items())[:SHOWN_PARAMETERS]]
    more = f", ... ({len(found) - SHOWN_PARAMETERS} more)" if len(found) > SHOWN_PARAMETERS else ""
    return f"{name}'s numeric attributes: {', '.join(shown)}{more}"


def example_parameter(env: gym.Env) -> str | None:
    """A parameter path to quote in an example declaration (which scales it): a MuJoCo model's body masses where the
    env has them, else its first non-zero mass, length or gravity, else its first non-zero numeric attribute; None if
    it has none."""
    found = tunable_parameters(env)
    if MUJOCO_PARAMETERS[0] in found:
        return MUJOCO_PARAMETERS[0]
    nonzero = [path for path, value in found.items() if np.all(np.asarray(value) != 0)]
    physical = [path for path in nonzero if any(word in path.lower() for word in ("mass", "length", "gravity"))]
    return next(iter(physical + nonzero + list(found)), None)


def gymnasium_advice(env_id: str) -> str:
    """How to use the gymnasium env ``env_id`` as a task family (``family=GymEnv-v0`` with an example declaration)
    and the parameters it has, on one line; only its parameters are left out if the env cannot be built here."""
    import warnings

    env = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            env = gym.make(env_id, disable_env_checker=True)
        example, summary = example_parameter(env), tunable_summary(env)
    except Exception as err:  # a missing dependency (Box2D, MuJoCo, ...): the advice stands without the list
        example, summary = None, f"it cannot be built here to list its parameters ({type(err).__name__}: {err})"
    finally:
        if env is not None:
            env.close()
    name = example or "PARAMETER"
    return (f"use it through family=GymEnv-v0 with family_kwargs={{env_id: {env_id}, parameters: {{{name}: "
            f"{{uniform: [0.5, 2.0], scale: true}}}}}} (Python: GymTaskFamily); {summary}")


def _plain(value: np.ndarray) -> float | list:
    return value.tolist() if value.ndim else float(value)


def _refresh_mujoco_constants(env: gym.Env) -> None:
    """Recompute a MuJoCo model's derived constants (subtree masses, ...) after its parameters changed."""
    model = getattr(env.unwrapped, "model", None)
    data = getattr(env.unwrapped, "data", None)
    if model is None or data is None or type(model).__module__.split(".")[0] != "mujoco":
        return
    import mujoco

    mujoco.mj_setConst(model, data)



def module_env_ids(family_kwargs: Any) -> list[str]:
    """The module-qualified gymnasium ids (``"some.module:Env-v0"``) among the ``env_id`` values of
    ``family_kwargs`` (nested mappings and lists included). ``gymnasium.make`` imports ``some.module`` for such an
    id, so a family built from these kwargs runs that module's code: loaders refuse them from files (a checkpoint,
    a run directory) unless the user allows it."""
    found: list[str] = []

    def visit(value: Any) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                if key == "env_id" and isinstance(item, str) and ":" in item:
                    found.append(item)
                else:
                    visit(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                visit(item)

    visit(family_kwargs)
    return found


def env_import_message(env_id: str, source: str, python: str) -> str:
    """The refusal of a module-qualified ``env_id`` read from ``source``; ``python`` says how to allow it in Python."""
    module = env_id.split(":", 1)[0]
    return (f"{source} names env_id={env_id!r} in family_kwargs: building its family would import the Python module "
            f"{module!r}, code chosen by the file; if you trust the file, allow it with --allow-env-imports "
            f"(Python: {python})")
