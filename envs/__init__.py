"""Built-in task families of metasgd-rl, installed as the package ``metasgd_rl_envs`` (from the folder ``envs/``).

They register through the entry-point group ``metasgd_rl.task_families`` (see ``pyproject.toml``), the same
way a third-party package does; the library itself never imports this package by name. Importing it also
registers the single-task environments with gymnasium
(``gymnasium.make("metasgd_rl_envs:metasgd_rl/Navigation2D-v0")``, ``"metasgd_rl_envs:metasgd_rl/TabularMDP-v0"``,
...). The MuJoCo families (``metasgd_rl_envs.locomotion``) are not imported here: they need the optional
``mujoco`` extra.
"""

from metasgd_rl_envs import discrete, navigation  # noqa: F401  (registers the gymnasium ids)
