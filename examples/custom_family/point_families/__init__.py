"""Example task families for metasgd-rl, packaged the way a project outside metasgd-rl would package them.

- ``PointReach-v0`` (:mod:`point_families.point_reach`): written from scratch as a :class:`metasgd_rl.TaskFamily`
  and registered only through the entry point in ``pyproject.toml``.
- ``AcrobotRandLinks-v0`` (:mod:`point_families.acrobot`): gymnasium's Acrobot as a
  :class:`metasgd_rl.GymTaskFamily`, registered with the ``@metasgd_rl.register_task_family`` decorator when
  this package is imported (and declared as an entry point too, so that it can be found without the import).
"""

from point_families.acrobot import AcrobotRandLinksFamily
from point_families.point_reach import PointReachEnv, PointReachFamily

__all__ = ["AcrobotRandLinksFamily", "PointReachEnv", "PointReachFamily"]
