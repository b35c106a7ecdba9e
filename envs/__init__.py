"""Built-in task families of metasgd-rl.

They register through the entry-point group ``metasgd_rl.task_families`` (see ``pyproject.toml``), the same
way a third-party package does; the library itself never imports this package by name. Importing it also
registers the single-task environments with gymnasium (``gymnasium.make("envs:metasgd_rl/Navigation2D-v0")``,
``"envs:metasgd_rl/TabularMDP-v0"``, ...). The MuJoCo families (``envs.locomotion``) are not imported here:
they need the optional ``mujoco`` extra.
"""

from envs import discrete, navigation  # noqa: F401  (registers the gymnasium ids)
