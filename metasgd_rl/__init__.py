"""metasgd-rl: gradient-based meta-reinforcement learning built around Meta-SGD."""

from metasgd_rl import startup as _startup  # first: the command's Ctrl-C handler while torch imports (see startup)
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
_startup.restore()
