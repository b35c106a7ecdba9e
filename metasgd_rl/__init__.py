"""metasgd-rl: gradient-based meta-reinforcement learning built around Meta-SGD."""

from metasgd_rl.family import EpisodeVectorEnv, Task, TaskFamily
from metasgd_rl.registry import list_task_families, make_task_family, register_task_family

__all__ = [
    "EpisodeVectorEnv",
    "Task",
    "TaskFamily",
    "list_task_families",
    "make_task_family",
    "register_task_family",
]
__version__ = "0.1.0"
