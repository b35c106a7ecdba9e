"""metasgd-rl: gradient-based meta-reinforcement learning built around Meta-SGD.

The public names below are imported from their modules on first use (PEP 562), not when the package is: a
process that needs one light module (a Ray rollout actor imports :mod:`metasgd_rl.rollout_worker`) then does not
import torch, Stable-Baselines3 and the report code with it. ``metasgd_rl.MetaSGD``, ``from metasgd_rl import
MetaSGD`` and ``from metasgd_rl import *`` work as with eager imports; the imports under ``TYPE_CHECKING`` are the
same names for static tools (type checkers, the API pages).
"""

from __future__ import annotations

import importlib as _importlib
from typing import TYPE_CHECKING

# first: in the metasgd-rl command, its Ctrl-C handler while the command imports torch (see startup)
from metasgd_rl import startup as _startup  # noqa: F401

if TYPE_CHECKING:
    from metasgd_rl.advantages import compute_advantages
    from metasgd_rl.allocator import reuse_freed_memory
    from metasgd_rl.baselines import (
        adaptation_samples,
        budget_to_match,
        ppo_from_scratch,
        pretrain_multitask,
        random_init,
    )
    from metasgd_rl.checks import TaskFamilyCheckError, TaskFamilyReport, check_task_family
    from metasgd_rl.estimators import AdvantageConfig, MetaBatch, meta_objective
    from metasgd_rl.evaluation import AdaptationResult, evaluate_adaptation
    from metasgd_rl.family import EpisodeVectorEnv, Task, TaskFamily, split_generator
    from metasgd_rl.gym_family import GymTaskFamily
    from metasgd_rl.model import MAML, AdaptedPolicy, MetaSGD
    from metasgd_rl.native_mujoco import NativeMujocoVectorEnv
    from metasgd_rl.parameters import Choice, Distribution, LogUniform, ParameterPathError, Uniform
    from metasgd_rl.policies import CategoricalMLPPolicy, GaussianMLPPolicy, make_policy
    from metasgd_rl.probe import AlphaProbe, alpha_probe
    from metasgd_rl.registry import list_task_families, make_task_family, register_task_family
    from metasgd_rl.sampler import EpisodeBatch, sample_episodes
    from metasgd_rl.step_sizes import StepSizes

#: each public name's module (imported on first use of the name)
_MODULES = {
    "advantages": ["compute_advantages"],
    "allocator": ["reuse_freed_memory"],
    "baselines": ["adaptation_samples", "budget_to_match", "ppo_from_scratch", "pretrain_multitask", "random_init"],
    "checks": ["TaskFamilyCheckError", "TaskFamilyReport", "check_task_family"],
    "estimators": ["AdvantageConfig", "MetaBatch", "meta_objective"],
    "evaluation": ["AdaptationResult", "evaluate_adaptation"],
    "family": ["EpisodeVectorEnv", "Task", "TaskFamily", "split_generator"],
    "gym_family": ["GymTaskFamily"],
    "model": ["MAML", "AdaptedPolicy", "MetaSGD"],
    "native_mujoco": ["NativeMujocoVectorEnv"],
    "parameters": ["Choice", "Distribution", "LogUniform", "ParameterPathError", "Uniform"],
    "policies": ["CategoricalMLPPolicy", "GaussianMLPPolicy", "make_policy"],
    "probe": ["AlphaProbe", "alpha_probe"],
    "registry": ["list_task_families", "make_task_family", "register_task_family"],
    "sampler": ["EpisodeBatch", "sample_episodes"],
    "step_sizes": ["StepSizes"],
}
_EXPORTS = {name: module for module, names in _MODULES.items() for name in names}

__all__ = [
    "MAML",
    "AdaptationResult",
    "AdaptedPolicy",
    "AlphaProbe",
    "AdvantageConfig",
    "CategoricalMLPPolicy",
    "Choice",
    "Distribution",
    "EpisodeBatch",
    "EpisodeVectorEnv",
    "GaussianMLPPolicy",
    "GymTaskFamily",
    "LogUniform",
    "MetaBatch",
    "MetaSGD",
    "NativeMujocoVectorEnv",
    "ParameterPathError",
    "StepSizes",
    "Task",
    "Uniform",
    "TaskFamily",
    "TaskFamilyCheckError",
    "TaskFamilyReport",
    "adaptation_samples",
    "alpha_probe",
    "budget_to_match",
    "check_task_family",
    "compute_advantages",
    "evaluate_adaptation",
    "list_task_families",
    "make_policy",
    "make_task_family",
    "meta_objective",
    "ppo_from_scratch",
    "pretrain_multitask",
    "random_init",
    "register_task_family",
    "reuse_freed_memory",
    "sample_episodes",
    "split_generator",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """A public name, imported from its module on first use (then cached here), or a submodule by name
    (``metasgd_rl.callbacks``: eager imports made submodules attributes as a side effect)."""
    module = _EXPORTS.get(name)
    if module is not None:
        value = getattr(_importlib.import_module(f"{__name__}.{module}"), name)
        globals()[name] = value
        return value
    if not name.startswith("_"):
        from importlib.util import find_spec  # here, not on import: it imports re and fnmatch

        if find_spec(f"{__name__}.{name}") is not None:
            return _importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    """The public names and what is already set (``dir(metasgd_rl)`` lists the names before their import)."""
    return sorted({*globals(), *__all__})
