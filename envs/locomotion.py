"""MuJoCo locomotion task families on gymnasium's v5 environments (MAML §5.3, ProMP §7).

- :class:`HalfCheetahVelFamily` (``HalfCheetahVel-v0``): run at a goal velocity (MAML, ProMP).
- :class:`HalfCheetahDirFamily` (``HalfCheetahDir-v0``): run forward or backward (MAML, ProMP).
- :class:`AntDirFamily` (``AntDir-v0``): the Ant runs forward or backward along x (MAML, ProMP).
- :class:`AntGoalFamily` (``AntGoal-v0``): the Ant walks to a goal position in a disc of radius 3 (ProMP, PEARL).
- :class:`HopperRandParamsFamily`, :class:`Walker2dRandParamsFamily` (``HopperRandParams-v0``,
  ``Walker2dRandParams-v0``): random body masses, inertias, joint damping and friction (ProMP's
  ``rand_param_envs``), the env's own reward.

The goal/direction families wrap the env in a reward wrapper that holds the task attribute (``goal_velocity``,
``direction``, ``goal``), so the declared parameter path resolves on the wrapper and the pooled envs of the
vector env get their task rewritten like any other :class:`~metasgd_rl.GymTaskFamily` parameter. Each wrapper
puts the terms of its reward in ``info`` (``reward_forward``, ``reward_ctrl``, ...): they sum to the reward.
Observations are gymnasium's v5 ones (e.g. HalfCheetah: ``qpos[1:]`` and ``qvel``, 17 numbers; pytorch-maml-rl's
HalfCheetah appends the torso's centre of mass), so returns are comparable with the papers' in scale, not
digit for digit.

Simulators: HalfCheetahVel, HalfCheetahDir, HopperRandParams and Walker2dRandParams step their vector envs in
MuJoCo's own batched rollout by default (``simulator="native"``: one ``mujoco.rollout`` call per time step for
all sub-envs, see :mod:`metasgd_rl.native_mujoco` and :mod:`metasgd_rl_envs.locomotion_native`);
``simulator="gymnasium"`` steps pooled gymnasium envs one by one. ``make_env`` is gymnasium's env either way. The
Ant families run on gymnasium only (their observation holds contact forces that the batched rollout does not
return).

MuJoCo is optional (``pip install "metasgd-rl[mujoco]"``): this module imports without it, and building a family
without it raises an ``ImportError`` that says what to install.
"""

from __future__ import annotations

import contextlib
import copy
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import VectorEnv

from metasgd_rl.family import Task, split_generator
from metasgd_rl.gym_family import GymTaskFamily
from metasgd_rl.native_mujoco import native_rollout_problem
from metasgd_rl.parameters import Choice, LogUniform, Uniform
from metasgd_rl_envs.locomotion_native import (
    CHEETAH_CTRL_COST_WEIGHT,
    HalfCheetahDirVectorEnv,
    HalfCheetahVelVectorEnv,
    HopperVectorEnv,
    Walker2dVectorEnv,
)

MUJOCO_MISSING = 'the MuJoCo locomotion families need MuJoCo; install it with: pip install "metasgd-rl[mujoco]"'
#: recent MuJoCo (4.0 here) warns about this attribute of gymnasium's half_cheetah.xml every time the model is compiled
SETTOTALMASS_WARNING = "compiler attribute 'settotalmass' is deprecated"

#: AntGoal: goals uniform in the disc of this radius (ProMP's AntRandGoalEnv, PEARL's ant-goal)
ANT_GOAL_RADIUS = 3.0
#: ProMP's rand_param_envs: factors base ** U(-3, 3)
RAND_PARAMS_LOG_SCALE_LIMIT = 3.0
#: how a family's vector env steps its sub-envs: MuJoCo's batched rollout or gymnasium's envs one by one
SIMULATORS = ("native", "gymnasium")
#: why the Ant families stay on gymnasium's envs
ANT_NOT_NATIVE = ("Ant-v5's observation (contact forces cfrc_ext) and contact cost come from mj_rnePostConstraint "
                  "after each step, which mujoco.rollout does not return")


# ---------------------------------------------------------------------------------------------------------
# MuJoCo: optional import, quiet model compilation


@contextlib.contextmanager
def quiet_mujoco_compiler() -> Iterator[None]:
    """Drop MuJoCo's "settotalmass is deprecated" warning while building envs; forward any other warning.

    MuJoCo prints that warning to stderr each time gymnasium's HalfCheetah model is compiled, once per pooled
    env. Inside the block MuJoCo's user-warning handler drops exactly that message and passes every other one
    to the handler installed before (if any) or to Python's ``warnings.warn``; the previous handler is restored
    on exit. Raises ``ImportError`` naming the extra to install when MuJoCo is missing.
    """
    try:
        import mujoco
    except ImportError as err:
        raise ImportError(MUJOCO_MISSING) from err
    previous: Callable[[str], None] | None = mujoco.get_mju_user_warning()

    def handler(message: str) -> None:
        if message.startswith(SETTOTALMASS_WARNING):
            return
        if previous is not None:
            previous(message)
        else:
            warnings.warn(f"MuJoCo: {message}", RuntimeWarning, stacklevel=2)

    mujoco.set_mju_user_warning(handler)
    try:
        yield
    finally:
        mujoco.set_mju_user_warning(previous)


class MujocoTaskFamily(GymTaskFamily):
    """A :class:`~metasgd_rl.GymTaskFamily` on a gymnasium MuJoCo env: quiet compilation, a clear error
    without MuJoCo, and :meth:`wrap` for a reward wrapper holding the task attribute.

    The built-in families fix their env, parameters and env arguments (they are the papers' protocols); only
    the horizon and the simulator can be changed: ``simulator="native"`` (the default where the family has a
    ``native_env``) steps the vector env's sub-envs together in MuJoCo's batched rollout, ``"gymnasium"`` steps
    gymnasium's envs one by one; asking for ``"native"`` where it cannot serve is a ``ValueError`` saying why.
    """

    #: the :class:`~metasgd_rl.native_mujoco.NativeMujocoVectorEnv` subclass mirroring this family's env, or None
    native_env: type | None = None
    #: why a family without ``native_env`` cannot run natively (said when ``simulator="native"`` is asked for)
    native_unavailable: str = "no native vector env mirrors its gymnasium env"
    #: runs saved before ``simulator`` existed stepped gymnasium's envs: they resume and evaluate on them
    legacy_kwargs = {"simulator": "gymnasium"}

    def __init__(self, max_episode_steps: int | None = None, simulator: str | None = None):
        super().__init__(max_episode_steps=max_episode_steps)
        default = "native" if self.native_env is not None else "gymnasium"
        self.simulator = default if simulator is None else simulator
        if self.simulator not in SIMULATORS:
            raise ValueError(f"{type(self).__name__}: simulator={simulator!r} is not allowed; use one of "
                             f"{list(SIMULATORS)}")
        if self.simulator == "native":
            if self.native_env is None:
                raise ValueError(f"{type(self).__name__}: simulator='native' cannot serve {self.env_id}: "
                                 f"{self.native_unavailable}; use simulator='gymnasium'")
            problem = native_rollout_problem()
            if problem is not None:
                raise ValueError(f"{type(self).__name__}: simulator='native' needs MuJoCo's batched rollout, but "
                                 f"{problem}; or use simulator='gymnasium'")
        self._native_source: gym.Env | None = None
        self._native_data: Any = None

    def make_base_env(self, max_episode_steps: int | None = None) -> gym.Env:
        try:
            with quiet_mujoco_compiler():
                env = super().make_base_env(max_episode_steps)
        except gym.error.DependencyNotInstalled as err:
            raise ImportError(f"{type(self).__name__}: {MUJOCO_MISSING}") from err
        except ImportError as err:
            raise ImportError(f"{type(self).__name__}: {err}") from err
        return self.wrap(env)

    def wrap(self, env: gym.Env) -> gym.Env:
        """The env the tasks run in: ``env`` (time-limited) inside the family's reward wrapper, if any."""
        return env

    def make_vector_env(self, tasks: Sequence[Task], episodes_per_task: int) -> VectorEnv:
        """Sub-env i runs ``tasks[i // E]``: on MuJoCo's batched rollout (``simulator="native"``, see
        :mod:`metasgd_rl.native_mujoco`) or on pooled gymnasium envs (``simulator="gymnasium"``)."""
        if self.simulator != "native":
            return super().make_vector_env(tasks, episodes_per_task)
        tasks, episodes = list(tasks), int(episodes_per_task)
        if episodes < 1:
            raise ValueError(f"episodes_per_task must be >= 1, got {episodes}")
        values = [self.task_values(task) for task in tasks]  # refuses a bad task before building anything
        if not tasks:
            raise ValueError("make_vector_env needs at least one task")
        source = self._native_env_source()
        model_paths = [path for path in self.parameters if path.startswith("model.")]
        if model_paths:  # one model per task, shared by its episodes
            per_task = [self._task_model(source.unwrapped.model, v, model_paths) for v in values]
        else:
            per_task = [source.unwrapped.model] * len(tasks)
        models = [model for model in per_task for _ in range(episodes)]
        reward_values = {path: np.repeat(np.stack([v[path] for v in values]), episodes, axis=0)
                         for path in self.parameters if not path.startswith("model.")}
        return self.native_env.from_env(source, models, self.max_episode_steps, reward_values)

    def _native_env_source(self) -> gym.Env:
        """The gymnasium env (never bound to a task) whose model, settings and spaces the native env copies."""
        if self._native_source is None:
            self._native_source = self.make_base_env()
        return self._native_source

    def _task_model(self, base: Any, values: dict[str, np.ndarray], paths: list[str]) -> Any:
        """A copy of ``base`` with the task's ``model.*`` parameters written as :meth:`apply_task` writes them into
        a gymnasium env's model, and its derived constants recomputed (``mj_setConst``)."""
        import mujoco

        model = copy.copy(base)
        for path in paths:
            value = self.defaults[path] * values[path] if self.parameters[path].scale else values[path]
            getattr(model, path[len("model."):])[...] = value
        if self._native_data is None:
            self._native_data = mujoco.MjData(base)
        mujoco.mj_setConst(model, self._native_data)
        return model

    def close(self) -> None:
        super().close()
        if self._native_source is not None:
            self._native_source.close()
            self._native_source = None

    def describe(self) -> dict[str, Any]:
        described = super().describe()
        described["simulator"] = self.simulator
        return described


def _squared_norm(action: Any) -> float:
    """||a||^2 in float64 of the action as given to the env (MuJoCo clamps it to the control range itself)."""
    return float(np.sum(np.square(np.asarray(action, dtype=np.float64))))


# ---------------------------------------------------------------------------------------------------------
# reward wrappers: each holds its task attribute and rebuilds the reward from the env's info


class HalfCheetahVelReward(gym.Wrapper):
    """reward = -|x_velocity - goal_velocity| - 0.05 ||a||^2 (MAML's and ProMP's HalfCheetah velocity task).

    ``x_velocity`` is HalfCheetah-v5's ``info["x_velocity"]`` = (x_after - x_before) / dt of the root, as in
    ProMP's and pytorch-maml-rl's code (MAML's rllab env used the torso's centre-of-mass velocity). The control
    cost is computed here in float64 from the action as given to the env (unclipped, as in ProMP's code), not
    taken from the env's ``info["reward_ctrl"]`` (weight 0.1, float32); ``info`` gets ours.
    """

    def __init__(self, env: gym.Env, goal_velocity: float = 0.0):
        super().__init__(env)
        self.goal_velocity = float(goal_velocity)

    def step(self, action):
        obs, _, terminated, truncated, info = self.env.step(action)
        forward = -abs(float(info["x_velocity"]) - self.goal_velocity)
        ctrl = -CHEETAH_CTRL_COST_WEIGHT * _squared_norm(action)
        info = {**info, "reward_forward": forward, "reward_ctrl": ctrl}
        return obs, forward + ctrl, terminated, truncated, info


class HalfCheetahDirReward(gym.Wrapper):
    """reward = direction * x_velocity - 0.05 ||a||^2 (MAML's and ProMP's HalfCheetah direction task).

    ``x_velocity`` and the control cost as in :class:`HalfCheetahVelReward`.
    """

    def __init__(self, env: gym.Env, direction: float = 1.0):
        super().__init__(env)
        self.direction = float(direction)

    def step(self, action):
        obs, _, terminated, truncated, info = self.env.step(action)
        forward = self.direction * float(info["x_velocity"])
        ctrl = -CHEETAH_CTRL_COST_WEIGHT * _squared_norm(action)
        info = {**info, "reward_forward": forward, "reward_ctrl": ctrl}
        return obs, forward + ctrl, terminated, truncated, info


def _ant_terms(info: dict[str, Any]) -> float:
    """Ant-v5's healthy reward, control cost and contact cost, as the env computed them (costs negative)."""
    return float(info["reward_survive"]) + float(info["reward_ctrl"]) + float(info["reward_contact"])


class AntDirReward(gym.Wrapper):
    """reward = direction * x_velocity + healthy reward - control cost - contact cost.

    The last three are Ant-v5's own ``info`` terms (``reward_survive``, ``reward_ctrl``, ``reward_contact``):
    with its defaults (healthy reward 1, control cost 0.5 ||a||^2, contact cost 5e-4 ||clip(cfrc_ext, -1, 1)||^2)
    they are the terms of ProMP's ``AntRandDirecEnv`` and pytorch-maml-rl's ``AntDirEnv``. (MAML's original
    rllab env weighted them differently: survive 0.05, control 0.005 ||a||^2.) ``x_velocity`` is the torso's
    (x_after - x_before) / dt, as in ProMP's code.
    """

    def __init__(self, env: gym.Env, direction: float = 1.0):
        super().__init__(env)
        self.direction = float(direction)

    def step(self, action):
        obs, _, terminated, truncated, info = self.env.step(action)
        forward = self.direction * float(info["x_velocity"])
        info = {**info, "reward_forward": forward}
        return obs, forward + _ant_terms(info), terminated, truncated, info


class AntGoalReward(gym.Wrapper):
    """reward = -||xy - goal||_1 + healthy reward - control cost - contact cost.

    ``xy`` is the torso's position after the step (Ant-v5's ``info["x_position"]``, ``info["y_position"]``, the
    root joint's ``qpos[:2]``, also the first two observations of this family); the other terms are Ant-v5's
    own ``info`` terms, with the weights :class:`AntGoalFamily` sets.
    """

    def __init__(self, env: gym.Env, goal: Any = (0.0, 0.0)):
        super().__init__(env)
        self.goal = np.array(goal, dtype=np.float64).reshape(2)

    def step(self, action):
        obs, _, terminated, truncated, info = self.env.step(action)
        xy = np.array([info["x_position"], info["y_position"]], dtype=np.float64)
        goal_reward = -float(np.sum(np.abs(xy - self.goal)))
        info = {**info, "reward_forward": goal_reward}
        return obs, goal_reward + _ant_terms(info), terminated, truncated, info


# ---------------------------------------------------------------------------------------------------------
# the families


class HalfCheetahVelFamily(MujocoTaskFamily):
    """HalfCheetah-v5 running at a goal velocity uniform in [0, 2] (MAML §5.3); horizon 200 (MAML).

    reward = -|x_velocity - goal_velocity| - 0.05 ||a||^2 (both papers' code: 0.5 * 0.1 ||a||^2), see
    :class:`HalfCheetahVelReward`. ProMP used horizon 100 (``max_episode_steps=100``) and velocities in [0, 3].
    Task: ``{"goal_velocity": v}``.
    """

    env_id = "HalfCheetah-v5"
    parameters = {"goal_velocity": Uniform(0.0, 2.0)}
    max_episode_steps = 200
    native_env = HalfCheetahVelVectorEnv

    def wrap(self, env: gym.Env) -> gym.Env:
        return HalfCheetahVelReward(env)


class HalfCheetahDirFamily(MujocoTaskFamily):
    """HalfCheetah-v5 running forward or backward, direction ±1 with equal probability (MAML §5.3); horizon 200.

    reward = direction * x_velocity - 0.05 ||a||^2 (MAML's and ProMP's code), see :class:`HalfCheetahDirReward`.
    Horizon 200 follows MAML; ProMP used 100 (``max_episode_steps=100``). Task: ``{"direction": ±1.0}``.
    Two tasks only: the "test" split cannot be held out and draws from the training distribution.
    """

    env_id = "HalfCheetah-v5"
    parameters = {"direction": Choice((-1.0, 1.0))}
    max_episode_steps = 200
    native_env = HalfCheetahDirVectorEnv
    disjoint_splits = False

    def wrap(self, env: gym.Env) -> gym.Env:
        return HalfCheetahDirReward(env)


class AntDirFamily(MujocoTaskFamily):
    """Ant-v5 running forward or backward along x, direction ±1 with equal probability (MAML §5.3); horizon 200.

    reward = direction * x_velocity + healthy reward - control cost - contact cost, the last three Ant-v5's own
    terms with its default weights, those of ProMP's code (see :class:`AntDirReward`); episodes end when the
    torso leaves z in [0.2, 1] (Ant-v5's default, as MAML's env). Horizon 200 follows MAML (40 episodes per
    task there); ProMP used 100. Task: ``{"direction": ±1.0}``. Two tasks only: the "test" split draws from
    the training distribution.
    """

    env_id = "Ant-v5"
    native_unavailable = ANT_NOT_NATIVE
    parameters = {"direction": Choice((-1.0, 1.0))}
    max_episode_steps = 200
    disjoint_splits = False

    def wrap(self, env: gym.Env) -> gym.Env:
        return AntDirReward(env)


class AntGoalFamily(MujocoTaskFamily):
    """Ant-v5 walking to a goal uniform in the disc of radius 3 (ProMP's AntRandGoalEnv, PEARL); horizon 100.

    Goals as in ProMP's and PEARL's code: angle uniform in [0, 2π), radius 3 sqrt(U[0, 1]). reward =
    -||xy - goal||_1 + healthy reward - control cost - contact cost (see :class:`AntGoalReward`), with the
    weights of ProMP's and PEARL's ant-goal env: control cost 0.1 ||a||^2 (Ant-v5's default is 0.5), contact
    cost Ant-v5's default 5e-4 ||clip(cfrc_ext, -1, 1)||^2, healthy reward 0 and no termination when the Ant
    falls (both codes have ``survive_reward = 0`` and ``done = False``). The agent observes its position
    (``exclude_current_positions_from_observation=False``, as ProMP's observation holds all of qpos).
    Horizon 100 follows PROTOCOLS (ProMP: 100 for ant); ProMP's released run script and PEARL used 200
    (``max_episode_steps=200``). Task: ``{"goal": [x, y]}``.
    """

    env_id = "Ant-v5"
    native_unavailable = ANT_NOT_NATIVE
    #: the bounding square declares the goal's shape and range; :meth:`sample_tasks` draws in the disc
    parameters = {"goal": Uniform(-ANT_GOAL_RADIUS, ANT_GOAL_RADIUS, shape=(2,))}
    env_kwargs = {
        "exclude_current_positions_from_observation": False,
        "ctrl_cost_weight": 0.1,
        "healthy_reward": 0.0,
        "terminate_when_unhealthy": False,
    }
    max_episode_steps = 100

    def wrap(self, env: gym.Env) -> gym.Env:
        return AntGoalReward(env)

    def sample_tasks(self, n: int, rng: np.random.Generator, split: str = "train") -> list[Task]:
        """``n`` goals uniform in the disc: all angles, then all radii (the order of ProMP's code)."""
        if int(n) < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        rng = split_generator(rng, split)
        angle = rng.uniform(0.0, 2.0 * math.pi, size=int(n))
        radius = ANT_GOAL_RADIUS * np.sqrt(rng.uniform(0.0, 1.0, size=int(n)))
        goals = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=-1)
        return [{"goal": [float(x), float(y)]} for x, y in goals]

    def describe(self) -> dict[str, Any]:
        described = super().describe()
        described["parameters"]["goal"] = {"uniform_disc": {"radius": ANT_GOAL_RADIUS}, "shape": [2]}
        return described


def _rand_params(damping_base: float = 1.3) -> dict[str, LogUniform]:
    """ProMP's rand_param_envs: every element of each array times base ** U(-3, 3), drawn independently."""
    limit = RAND_PARAMS_LOG_SCALE_LIMIT
    factors = LogUniform(1.5**-limit, 1.5**limit, scale=True)
    return {
        "model.body_mass": factors,
        "model.body_inertia": factors,
        "model.dof_damping": LogUniform(damping_base**-limit, damping_base**limit, scale=True),
        "model.geom_friction": factors,
    }


class HopperRandParamsFamily(MujocoTaskFamily):
    """Hopper-v5 with random body masses, inertias, joint damping and friction (ProMP §7); horizon 200 (ProMP).

    As ProMP's ``rand_param_envs`` (``RandomEnv.sample_tasks``): every element of ``model.body_mass``,
    ``model.body_inertia`` and ``model.geom_friction`` is multiplied by its own factor 1.5 ** U(-3, 3), every
    element of ``model.dof_damping`` by 1.3 ** U(-3, 3) (that code's damping base; zero entries, such as the
    world body's mass and the root's damping, stay zero). The reward is Hopper-v5's own. A task holds the
    factors: ``{"model.body_mass": [...], ...}``.
    """

    env_id = "Hopper-v5"
    parameters = _rand_params()
    max_episode_steps = 200
    native_env = HopperVectorEnv


class Walker2dRandParamsFamily(MujocoTaskFamily):
    """Walker2d-v5 with random body masses, inertias, joint damping and friction (ProMP §7); horizon 200 (ProMP).

    The factors of :class:`HopperRandParamsFamily` (ProMP's ``rand_param_envs``); the reward is Walker2d-v5's
    own.
    """

    env_id = "Walker2d-v5"
    parameters = _rand_params()
    max_episode_steps = 200
    native_env = Walker2dVectorEnv
