"""Classic-control task families: gymnasium's CartPole, Pendulum and MountainCarContinuous with random physics.

Each task draws the physical constants of one environment; the reward function stays the env's own, so the
agent must adapt to the dynamics. Ranges are our choice (no paper fixes them): each spans the env's default
value by a factor of about two either way, wide enough that one policy does not fit all tasks.
"""

from __future__ import annotations

import gymnasium as gym

from metasgd_rl import Task
from metasgd_rl.gym_family import GymTaskFamily
from metasgd_rl.parameters import LogUniform, Uniform


class CartPoleRandParamsFamily(GymTaskFamily):
    """CartPole-v1 (discrete actions) with random pole half-length, pole mass and cart mass; horizon 200."""

    env_id = "CartPole-v1"
    parameters = {
        "length": Uniform(0.25, 1.0),  # half the pole's length (default 0.5)
        "masspole": LogUniform(0.05, 0.2),  # default 0.1
        "masscart": LogUniform(0.5, 2.0),  # default 1.0
    }
    max_episode_steps = 200

    def apply_task(self, env: gym.Env, task: Task) -> None:
        super().apply_task(env, task)
        cartpole = env.unwrapped
        cartpole.total_mass = cartpole.masspole + cartpole.masscart  # derived in CartPoleEnv.__init__
        cartpole.polemass_length = cartpole.masspole * cartpole.length


class PendulumRandParamsFamily(GymTaskFamily):
    """Pendulum-v1 with random mass, length and gravity (defaults 1, 1, 10); horizon 200."""

    env_id = "Pendulum-v1"
    parameters = {"m": Uniform(0.5, 2.0), "l": Uniform(0.5, 1.5), "g": Uniform(8.0, 12.0)}
    max_episode_steps = 200


class MountainCarContinuousRandParamsFamily(GymTaskFamily):
    """MountainCarContinuous-v0 with a random engine power (default 0.0015); horizon 200.

    With less power the car must swing back and forth more often before it can climb the hill.
    """

    env_id = "MountainCarContinuous-v0"
    parameters = {"power": LogUniform(0.001, 0.003)}
    max_episode_steps = 200
