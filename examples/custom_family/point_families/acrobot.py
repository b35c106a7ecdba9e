"""AcrobotRandLinks: gymnasium's Acrobot-v1 (three discrete torques) with random link masses and upper-link length.

Written as a :class:`metasgd_rl.GymTaskFamily`: the family only declares which attributes of the env vary and
how; task sampling, validation and the vector env come from the library. The built-in ``PendulumRandParams-v0``
varies a pendulum's mass, length and gravity under a continuous torque; here the actions are discrete and the
system is underactuated, so a task changes how the two links swing against each other.

In gymnasium's ``AcrobotEnv`` the link constants are class attributes read by ``_dsdt`` at every step; the
family writes them on the env instance (the class stays untouched). ``LINK_COM_POS_1`` (the centre of mass of
the upper link, half its length by default) is derived from ``LINK_LENGTH_1``, so :meth:`apply_task` updates
it too. ``LINK_LENGTH_2`` is not varied: it does not enter the dynamics (nor the termination test), only the
rendering; ``LINK_MOI`` stays gymnasium's constant 1 for both links.
"""

from __future__ import annotations

import gymnasium as gym

import metasgd_rl as msr


@msr.register_task_family("AcrobotRandLinks-v0")
class AcrobotRandLinksFamily(msr.GymTaskFamily):
    """Acrobot-v1 (discrete torques) with random link masses and upper-link length (defaults 1, 1, 1); horizon 200."""

    env_id = "Acrobot-v1"
    parameters = {
        "LINK_MASS_1": msr.LogUniform(0.5, 2.0),
        "LINK_MASS_2": msr.LogUniform(0.5, 2.0),
        "LINK_LENGTH_1": msr.Uniform(0.5, 1.5),
    }
    max_episode_steps = 200

    def apply_task(self, env: gym.Env, task: msr.Task) -> None:
        super().apply_task(env, task)
        acrobot = env.unwrapped
        acrobot.LINK_COM_POS_1 = 0.5 * acrobot.LINK_LENGTH_1  # a uniform link's centre of mass
