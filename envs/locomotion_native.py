"""The locomotion families' envs on MuJoCo's batched rollout: gymnasium's v5 HalfCheetah, Hopper and Walker2d,
their observations, rewards, terminations and ``info`` computed for all sub-envs at once.

Each class mirrors one gymnasium env (and, for the cheetah, the family's reward wrapper) line by line, in the
same floating-point operations and dtypes, so that a step from the same physics state with the same action
gives the same numbers bit for bit (``tests/test_native_mujoco.py``); the settings (reset noise, healthy
ranges, weights) are read from the gymnasium env itself. See :mod:`metasgd_rl.native_mujoco` for what is and
is not equal over whole trajectories.

The Ant families stay on gymnasium: Ant-v5's observation (the contact forces ``cfrc_ext``) and contact cost are
computed by ``mj_rnePostConstraint`` after each step from the solver's contact forces, which
``mujoco.rollout`` does not return.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from metasgd_rl.native_mujoco import NativeMujocoVectorEnv

#: the control cost weight of MAML's and ProMP's HalfCheetah tasks: 0.5 * 1e-1 * ||a||^2 (also used by the reward
#: wrappers of ``metasgd_rl_envs.locomotion``)
CHEETAH_CTRL_COST_WEIGHT = 0.05


class LocomotionVectorEnv(NativeMujocoVectorEnv):
    """Common to the three: built from the family's gymnasium env (its settings and initial pose)."""

    @classmethod
    def from_env(
        cls, env: gym.Env, models: Sequence[Any], horizon: int, task_values: dict[str, np.ndarray] | None = None
    ) -> LocomotionVectorEnv:
        """Sub-envs on ``models`` with the settings of the gymnasium env ``env`` (wrappers allowed)."""
        base = env.unwrapped
        venv = cls(models, base.init_qpos, base.init_qvel, base.frame_skip, horizon, env.observation_space,
                   env.action_space, task_values)
        venv.configure(base)
        return venv

    def configure(self, env: Any) -> None:
        """Copy the gymnasium env's settings (``env`` unwrapped)."""
        self.reset_noise_scale = float(env._reset_noise_scale)
        if not env._exclude_current_positions_from_observation:
            raise ValueError(f"{type(self).__name__} observes qpos[1:] (exclude_current_positions_from_observation="
                             "True); use simulator='gymnasium' for an env that observes the x position")

    def x_velocity(self, qpos_before: np.ndarray, qpos: np.ndarray, envs: np.ndarray) -> np.ndarray:
        """(x_after - x_before) / dt of the root, as the v5 envs compute ``info["x_velocity"]``."""
        return (qpos[:, 0] - qpos_before[:, 0]) / self.dt[envs]


class HalfCheetahVectorEnv(LocomotionVectorEnv):
    """HalfCheetah-v5: uniform qpos and normal qvel reset noise; observation ``qpos[1:]``, ``qvel``."""

    def reset_noise(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        s = self.reset_noise_scale
        dqpos = rng.uniform(low=-s, high=s, size=self.nq)
        return dqpos, s * rng.standard_normal(self.nv)

    def observe(self, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
        return np.concatenate((qpos[:, 1:], qvel), axis=1)

    def reset_info(self, qpos: np.ndarray) -> dict[str, np.ndarray]:
        """Also the position terms of every step's ``info``."""
        return {"x_position": qpos[:, 0].copy()}

    def task_reward(self, x_velocity: np.ndarray, envs: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def transition(self, qpos_before, qpos, qvel, actions, envs):
        x_velocity = self.x_velocity(qpos_before, qpos, envs)
        forward = self.task_reward(x_velocity, envs)
        ctrl = -CHEETAH_CTRL_COST_WEIGHT * np.sum(np.square(np.asarray(actions, dtype=np.float64)), axis=1)
        info = {**self.reset_info(qpos), "x_velocity": x_velocity, "reward_forward": forward, "reward_ctrl": ctrl}
        return forward + ctrl, np.zeros(len(envs), dtype=bool), info


class HalfCheetahVelVectorEnv(HalfCheetahVectorEnv):
    """reward_forward = -|x_velocity - goal_velocity| (``HalfCheetahVelReward``)."""

    def task_reward(self, x_velocity: np.ndarray, envs: np.ndarray) -> np.ndarray:
        return -np.abs(x_velocity - self.task_values["goal_velocity"][envs])


class HalfCheetahDirVectorEnv(HalfCheetahVectorEnv):
    """reward_forward = direction * x_velocity (``HalfCheetahDirReward``)."""

    def task_reward(self, x_velocity: np.ndarray, envs: np.ndarray) -> np.ndarray:
        return self.task_values["direction"][envs] * x_velocity


class HoppingVectorEnv(LocomotionVectorEnv):
    """Hopper-v5 and Walker2d-v5: uniform reset noise; observation ``qpos[1:]``, ``clip(qvel, -10, 10)``; reward
    forward + healthy - control cost, terminated when unhealthy."""

    def configure(self, env: Any) -> None:
        super().configure(env)
        self.forward_reward_weight = env._forward_reward_weight
        self.ctrl_cost_weight = env._ctrl_cost_weight
        self.healthy_reward = env._healthy_reward
        self.terminate_when_unhealthy = bool(env._terminate_when_unhealthy)
        self.healthy_z_range = env._healthy_z_range
        self.healthy_angle_range = env._healthy_angle_range

    def reset_noise(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        s = self.reset_noise_scale
        dqpos = rng.uniform(low=-s, high=s, size=self.nq)
        return dqpos, rng.uniform(low=-s, high=s, size=self.nv)

    def observe(self, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
        return np.concatenate((qpos[:, 1:], np.clip(qvel, -10, 10)), axis=1)

    def reset_info(self, qpos: np.ndarray) -> dict[str, np.ndarray]:
        return {"x_position": qpos[:, 0].copy(), "z_distance_from_origin": qpos[:, 1] - self.init_qpos[1]}

    def is_healthy(self, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
        (min_z, max_z), (min_angle, max_angle) = self.healthy_z_range, self.healthy_angle_range
        z, angle = qpos[:, 1], qpos[:, 2]
        return (min_z < z) & (z < max_z) & (min_angle < angle) & (angle < max_angle)

    def transition(self, qpos_before, qpos, qvel, actions, envs):
        x_velocity = self.x_velocity(qpos_before, qpos, envs)
        healthy = self.is_healthy(qpos, qvel)
        forward = self.forward_reward_weight * x_velocity
        survive = healthy * self.healthy_reward
        ctrl_cost = self.ctrl_cost_weight * np.sum(np.square(actions), axis=1)  # in the actions' dtype, as gymnasium
        reward = (forward + survive) - ctrl_cost
        terminated = ~healthy & self.terminate_when_unhealthy
        info = {**self.reset_info(qpos), "x_velocity": x_velocity, "reward_forward": forward,
                "reward_ctrl": -ctrl_cost, "reward_survive": survive}
        return reward, terminated, info


class HopperVectorEnv(HoppingVectorEnv):
    """Hopper-v5: also healthy only while every entry of ``(qpos[2:], qvel)`` is within ``healthy_state_range``."""

    def configure(self, env: Any) -> None:
        super().configure(env)
        self.healthy_state_range = env._healthy_state_range

    def is_healthy(self, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
        low, high = self.healthy_state_range
        state = np.concatenate((qpos[:, 2:], qvel), axis=1)
        return super().is_healthy(qpos, qvel) & np.all((low < state) & (state < high), axis=1)


class Walker2dVectorEnv(HoppingVectorEnv):
    """Walker2d-v5."""
