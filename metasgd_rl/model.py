"""The user-facing model: Meta-SGD (and MAML as its fixed-scalar-α special case)."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import pickle
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from metasgd_rl.callbacks import CallbackLike, as_callback
from metasgd_rl.estimators import (
    ESTIMATORS,
    AdvantageConfig,
    MetaBatch,
    adapt_tasks,
    meta_gradient,
    meta_objective,
    rollout_sampler,
)
from metasgd_rl.family import Task, TaskFamily, family_label, sample_checked_tasks
from metasgd_rl.io import atomic_torch_save
from metasgd_rl.outer import OUTER_OPTIMIZERS, make_outer_optimizer
from metasgd_rl.policies import Policy, make_policy, observation_features
from metasgd_rl.ray_sampler import SAMPLERS, make_sampler
from metasgd_rl.registry import legacy_family_kwargs, make_task_family
from metasgd_rl.sampler import EpisodeBatch
from metasgd_rl.step_sizes import StepSizes
from metasgd_rl.threads import with_model_threads

CHECKPOINT_FORMAT = "metasgd-rl/1"
DEFAULT_POLICY_KWARGS: dict[str, Any] = dict(
    hidden_sizes=(100, 100), activation="relu", init_std=1.0, learn_std=True, init="default", output_init_scale=0.01
)
#: how α is trained: ``"joint"`` in one vector with θ by the outer optimiser, or by its own Adam (``alpha_lr``)
ALPHA_OPTIMIZERS = ("joint", "adam")
ALPHA_ADAM_EPS = 1e-20
#: what a run or checkpoint from before these settings existed was trained with
_LEGACY_SETTINGS = dict(alpha_parameterization="linear", alpha_optimizer="joint")
#: runs from before ``num_threads`` computed with the process's thread count
_LEGACY_RUN_SETTINGS = dict(num_threads=None)
_LEGACY_POLICY_KWARGS = dict(init="default", output_init_scale=0.01)


def with_legacy_defaults(config: Mapping[str, Any], alpha: bool = True) -> dict[str, Any]:
    """``config`` (a checkpoint's or a run's) completed with what runs from before α's optimiser,
    parameterisation and the policy's initialisation were settings used: α trained jointly with θ, stored as
    itself, PyTorch's initialisation with the output layer at ×0.01, and the family arguments its class lists in
    ``legacy_kwargs`` (the locomotion families' gymnasium simulator). ``alpha=False`` (MAML) adds no α keys."""
    out = {**_LEGACY_RUN_SETTINGS, **(_LEGACY_SETTINGS if alpha else {}), **config}
    out["policy_kwargs"] = {**_LEGACY_POLICY_KWARGS, **dict(out.get("policy_kwargs") or {})}
    if "family_kwargs" in out or isinstance(out.get("family"), str):
        out["family_kwargs"] = legacy_family_kwargs(out.get("family"), out.get("family_kwargs"))
    return out

# Streams of the seed tree (spawn keys under the model's seed).
_POLICY_INIT, _TRAIN_TASKS, _TRAIN_ROLLOUTS, _META_LOSS, _ADAPT = range(5)


def _int_at_least(name: str, value: Any, minimum: int) -> int:
    """``value`` as an int, or a ValueError naming it when it is not an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name}={value!r} is not allowed; use an integer >= {minimum}")
    return int(value)


def _positive_int(name: str, value: Any) -> int:
    return _int_at_least(name, value, 1)


def _choice(name: str, value: Any, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not allowed; use one of {list(allowed)}")
    return value


def nonfinite_report(family: TaskFamily, batch: MetaBatch) -> str | None:
    """Where the first NaN or inf reward or observation of a meta-batch's rollouts is (task, stage, step), or None."""
    stages = [(f"pre-adaptation rollouts of inner step {k + 1}", b) for k, b in enumerate(batch.pre_batches)]
    return first_nonfinite_in(family, [*stages, ("post-adaptation rollouts", batch.post_batch)], "meta-batch")


def first_nonfinite_in(family: TaskFamily, stages: Sequence[tuple[str, EpisodeBatch]], tasks_of: str) -> str | None:
    """``"task t of the <tasks_of> ({task}) got a non-finite reward (nan) at step 3 of episode 0 in <stage>; ..."`` for
    the first batch of ``stages`` that has a NaN or inf, or None."""
    for stage, episodes in stages:
        found = episodes.first_nonfinite()
        if found is not None:
            what, value, t, e, step = found
            at = "from reset" if step == 0 else f"at step {step}"
            return (f"task {t} of the {tasks_of} ({episodes.tasks[t]!r}) got a non-finite {what} ({value}) {at} of "
                    f"episode {e} in the {stage} of {family_label(family)}: its env must return finite rewards and "
                    "observations")
    return None


class AdaptedPolicy:
    """A policy adapted to one task; ``predict`` follows SB3 so ``evaluate_policy`` accepts it."""

    def __init__(self, policy: Policy, params: dict[str, torch.Tensor], observation_space: gym.Space,
                 action_space: gym.Space, device: torch.device | str = "cpu"):
        self.policy, self.params = policy, params
        self.observation_space, self.action_space, self.device = observation_space, action_space, device

    @torch.no_grad()
    def predict(
        self,
        observation: np.ndarray,
        state: Any = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
    ) -> tuple[np.ndarray, None]:
        """Action(s) for one observation or a batch of them, clipped to a ``Box`` action space."""
        obs = torch.as_tensor(np.asarray(observation), device=self.device)
        single = obs.shape == self.observation_space.shape
        obs = observation_features(self.observation_space, obs.reshape(-1, *self.observation_space.shape))
        action = self.policy.sample(obs, self.params, generator, deterministic).cpu().numpy()
        if isinstance(self.action_space, gym.spaces.Box):
            action = np.clip(action, self.action_space.low, self.action_space.high)
        return (action[0] if single else action), None


#: what every checkpoint of this format holds (:meth:`MetaSGD.state_dict`)
_CHECKPOINT_KEYS = ("class", "config", "iteration", "meta_loss_calls", "policy", "step_sizes", "outer")


#: what :meth:`MetaSGD.load` samples with unless the caller says otherwise: never an address from the file
LOCAL_SAMPLING: dict[str, Any] = {"sampler": "local", "ray_address": None, "ray_workers": None}


class CheckpointError(ValueError):
    """A file that is not a loadable metasgd-rl checkpoint; the message names the file and what is wrong."""


def read_checkpoint(path: str | os.PathLike) -> Any:
    """What ``torch.load(path, weights_only=True)`` reads, or a :class:`CheckpointError` that says why the file is
    not a checkpoint. Files holding arbitrary Python objects are refused, never unpickled: the error does not
    relay torch's advice to load them with ``weights_only=False``. A missing file raises ``FileNotFoundError``."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except pickle.UnpicklingError:
        raise CheckpointError(f"{path} is not a metasgd-rl checkpoint: it holds Python objects other than tensors "
                              "and plain data, and metasgd-rl never unpickles those") from None
    except Exception as err:  # torch reports a truncated or foreign file with many exception types
        size = os.path.getsize(path)
        what = "it is empty" if size == 0 else f"torch cannot read its {size} bytes ({type(err).__name__})"
        raise CheckpointError(f"{path} is not a metasgd-rl checkpoint: {what}") from None


#: the checkpoint entry holding :func:`checkpoint_digest` (files from before it existed have none and still load)
DIGEST_KEY = "digest"
#: the tensor-holding entries of a checkpoint, as messages name them
_STATE_PARTS = {"policy": "θ (the policy)", "step_sizes": "α (the step sizes)",
                "outer": "the outer optimiser's state", "alpha_optimizer": "α's optimiser's state"}


def checkpoint_digest(state: Mapping[str, Any]) -> str:
    """``"sha256:<hex>"`` over everything in a checkpoint's ``state`` but its digest: every tensor's dtype, shape and
    bytes and every plain value (the JSON config, the iteration, the optimisers' settings), mapping keys sorted.

    Stored with each checkpoint (:meth:`MetaSGD.state_dict`), it exposes bits changed on disk or in a copy, which
    torch's reader does not notice: a flipped sign or exponent bit loads as another weight.
    """
    digest = hashlib.sha256()
    _hash_value(digest, {k: v for k, v in state.items() if k != DIGEST_KEY})
    return f"sha256:{digest.hexdigest()}"


def _hash_token(digest: Any, tag: bytes, data: bytes) -> None:
    """One item for :func:`checkpoint_digest`: tag and length first, so that no two states hash the same bytes."""
    digest.update(tag + len(data).to_bytes(8, "little") + data)


def _hash_value(digest: Any, value: Any) -> None:
    """Feed ``value`` (nested mappings, sequences, tensors, plain values) to ``digest`` in a deterministic order."""
    if isinstance(value, torch.Tensor):
        _hash_token(digest, b"T", f"{value.dtype}{list(value.shape)}".encode())
        data = value.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
        _hash_token(digest, b"B", data.numpy().tobytes())
    elif isinstance(value, Mapping):
        _hash_token(digest, b"D", str(len(value)).encode())
        for key in sorted(value, key=lambda k: (type(k).__name__, str(k))):
            _hash_value(digest, key)
            _hash_value(digest, value[key])
    elif isinstance(value, (list, tuple)):
        _hash_token(digest, b"L", str(len(value)).encode())
        for item in value:
            _hash_value(digest, item)
    else:
        _hash_token(digest, b"V", f"{type(value).__name__}:{value!r}".encode())


def _first_nonfinite(value: Any, name: str = "") -> str | None:
    """The dotted name (under ``name``) of the first tensor or float in ``value`` holding a NaN or inf, or None."""
    if isinstance(value, torch.Tensor):
        floating = value.is_floating_point() or value.is_complex()
        return name if floating and not bool(torch.isfinite(value).all()) else None
    if isinstance(value, float):
        return None if np.isfinite(value) else name
    items = value.items() if isinstance(value, Mapping) else enumerate(value) if isinstance(value, (list, tuple)) \
        else ()
    for key, item in items:
        found = _first_nonfinite(item, f"{name}.{key}" if name else str(key))
        if found is not None:
            return found
    return None


def checked_checkpoint(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """The state and the saved config of the metasgd-rl checkpoint at ``path``, checked as far as no task family is
    needed: its format and entries, a JSON config, and no NaN or inf in any tensor (θ, α and the optimisers' states:
    a NaN in Adam's moments would train θ to NaN). A :class:`CheckpointError` says what is wrong; the digest is
    checked by :func:`verify_digest`."""
    state = read_checkpoint(path)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a metasgd-rl checkpoint (format {CHECKPOINT_FORMAT})")
    missing = [key for key in _CHECKPOINT_KEYS if key not in state]
    if missing:
        raise CheckpointError(f"{path} is not a complete metasgd-rl checkpoint: it has no {', '.join(missing)}")
    try:
        saved_config = json.loads(state["config"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path} is not a loadable metasgd-rl checkpoint: its config is not JSON "
                              f"({' '.join(str(err).split())})") from None
    if not isinstance(saved_config, dict):
        raise CheckpointError(f"{path} is not a loadable metasgd-rl checkpoint: its config is a "
                              f"{type(saved_config).__name__}, not a mapping")
    for part, label in _STATE_PARTS.items():
        bad = _first_nonfinite(state.get(part, {}))
        if bad is not None:
            raise CheckpointError(f"{path} holds non-finite values (NaN or inf) in {bad} of {label}: a model with "
                                  "them would evaluate and train to nan, so it is not loaded")
    return state, saved_config


def verify_digest(path: str | os.PathLike, state: Mapping[str, Any]) -> None:
    """Refuse (:class:`CheckpointError`) a checkpoint whose contents do not match the digest stored with them; one
    from before digests (no ``digest`` entry) passes."""
    stored = state.get(DIGEST_KEY)
    if stored is not None and stored != checkpoint_digest(state):
        raise CheckpointError(f"{path} is damaged: its contents do not match the sha256 digest stored with them "
                              "(bytes changed on disk or in a copy), so it is not loaded")


class EnvImportError(CheckpointError):
    """A checkpoint whose family would import a Python module the file names (a module-qualified gymnasium
    ``env_id``), refused unless the caller allows it (``allow_env_imports=True``)."""


class MissingFamilyError(CheckpointError, ImportError):
    """A checkpoint whose task family is not installed here: no package declares its id, or the family needs a
    package that is missing (an extra such as ``metasgd-rl[metaworld]``). An ``ImportError`` too, as building
    the family raised before."""


def _checkpoint_family(path: str | os.PathLike, family_id: str, family_kwargs: Any) -> TaskFamily:
    """The family a checkpoint at ``path`` names, built; a :class:`MissingFamilyError` naming the family and what
    provides it if it cannot be built here for want of a package."""
    from metasgd_rl.registry import ENTRY_POINT_GROUP, UnknownTaskFamilyError

    try:
        return make_task_family(family_id, **dict(family_kwargs or {}))
    except UnknownTaskFamilyError as err:
        raise MissingFamilyError(
            f"{path} was saved with task family {family_id!r}, which is not installed here: install the package "
            f"that provides it (it declares {family_id!r} in the entry-point group {ENTRY_POINT_GROUP!r}) or, in "
            "Python, import the module that registers it"
        ) from err
    except ImportError as err:  # the family's own message says what to install (e.g. pip install "metasgd-rl[mujoco]")
        raise MissingFamilyError(f"{path} was saved with task family {family_id!r}, which cannot be built here: "
                                 f"{err}") from err


def _check_work_limits(path: str | os.PathLike, config: Mapping[str, Any], family: TaskFamily | None = None) -> None:
    """Refuse (:class:`CheckpointError`) a checkpoint whose config asks for more work than
    :mod:`metasgd_rl.limits` allows (a 1e9-step horizon would make an evaluation run for days)."""
    from metasgd_rl.limits import WorkLimitError, check_work_limits

    try:
        check_work_limits(config, family)
    except WorkLimitError as err:
        raise CheckpointError(f"{path} asks for too much work, so it is not loaded: {err}") from None


def _check_state_shapes(path: str | os.PathLike, state: Mapping[str, Any], family: TaskFamily,
                        config: Mapping[str, Any], fixed: Mapping[str, Any]) -> None:
    """Refuse (:class:`CheckpointError`) a checkpoint whose θ and α tensors do not have the shapes its config
    implies, before the model is built: a small file whose config declares huge hidden sizes must not allocate them.

    The expected shapes come from the policy and step sizes built on the ``meta`` device (no memory). A config the
    constructor would refuse anyway is left to it.
    """
    args = constructor_defaults()
    args.update(config)
    args.update(fixed)
    policy_kwargs = {**DEFAULT_POLICY_KWARGS, **dict(args.get("policy_kwargs") or {})}
    try:
        with torch.device("meta"):
            policy = make_policy(family.observation_space, family.action_space, **policy_kwargs)
            shapes = {n: p.shape for n, p in policy.adaptable_parameters().items()}
            step_sizes = StepSizes(shapes, float(args["alpha_init"]), args["alpha_granularity"],
                                   bool(args["learn_alpha"]), bool(args["alpha_per_step"]), int(args["inner_steps"]),
                                   args["alpha_parameterization"])
    except (ValueError, TypeError, KeyError):
        return  # the constructor reports it
    hidden = policy_kwargs.get("hidden_sizes")
    for part, module in (("policy", policy), ("step_sizes", step_sizes)):
        saved = state.get(part)
        if not isinstance(saved, Mapping):
            raise CheckpointError(f"{path} is not a metasgd-rl checkpoint: its {part!r} entry is not a mapping of "
                                  "tensors")
        expected = {n: list(t.shape) for n, t in module.state_dict().items()}
        for name, shape in expected.items():
            tensor = saved.get(name)
            found = list(tensor.shape) if isinstance(tensor, torch.Tensor) else None
            if found != shape:
                in_file = "is missing from the file" if tensor is None else \
                    f"has shape {found} in the file" if found is not None else "is not a tensor in the file"
                raise CheckpointError(
                    f"{path} is inconsistent: tensor {part}.{name} {in_file} but the checkpoint's config "
                    f"(family {family.id}, policy_kwargs.hidden_sizes={hidden!r}) implies shape {shape}; it is not "
                    "loaded")
        extra = sorted(set(saved) - set(expected))
        if extra:
            raise CheckpointError(f"{path} is inconsistent: tensor {part}.{extra[0]} is in the file but not in the "
                                  f"model its config implies (family {family.id}, policy_kwargs.hidden_sizes="
                                  f"{hidden!r}); it is not loaded")


def constructor_defaults() -> dict[str, Any]:
    """:class:`MetaSGD`'s constructor arguments and their defaults, read from its signature (one source for the
    config schema and the checkpoint checks)."""
    import inspect

    params = inspect.signature(MetaSGD.__init__).parameters
    return {name: p.default for name, p in params.items()
            if name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


class MetaSGD:
    """Meta-SGD for RL: meta-learns the policy initialisation θ and per-parameter step sizes α.

    The documentation explains the arguments: the quickstart (``docs/getting-started.md``) shows them with their
    choices, ``docs/concepts/alpha.md`` α's options, ``docs/concepts/estimators-and-outer-optimisers.md`` the
    estimators and outer optimisers, ``docs/guides/configs-and-cli.md`` the sampler, Ray, ``task_chunk_size``,
    ``max_envs`` (sub-envs a rollout steps at a time: bounds its memory, never changes a batch) and
    ``num_threads``. Advantages are GAE(``gamma``, ``gae_lambda``) on ``baseline`` (``"linear"``: MAML-RL's
    linear feature baseline, ``"none"``: returns-to-go), normalised per task when ``normalize_advantages``;
    ``learn_alpha=False`` keeps α at ``alpha_init``. ``outer_kwargs`` go to the outer optimiser:
    TRPO (``max_kl``, ``cg_iters``, ``cg_damping``, ``ls_steps``, ``ls_ratio``, ``fvp``, ``fvp_subsample``),
    Adam (``lr``, ``max_grad_norm``) or PPO (``lr``, ``epochs``, ``clip``, ``inner_kl_penalty``,
    ``max_grad_norm``). ``family_kwargs`` go to :func:`make_task_family` when ``family`` is an id.

    α's training: ``alpha_optimizer="joint"`` puts α into the outer optimiser's vector with θ (one TRPO trust
    region for both); ``"adam"`` gives α its own Adam (learning rate ``alpha_lr``) on the same estimator's
    meta-gradient, while θ follows the outer optimiser. Under TRPO the joint form hardly moves the hidden layers'
    α: their curvature (∝ g², tiny) is far below the CG damping. ``alpha_parameterization="log"`` trains
    β with α = sign(α_init)·exp(β), so steps are relative (see :class:`~metasgd_rl.step_sizes.StepSizes`).

    ``num_threads`` (default 1): torch's CPU threads while the model samples, adapts and updates, whatever the
    process's setting (None keeps the process's). Multi-threaded sums round differently, so the same seed and
    the same ``num_threads`` give the same bits whatever the process's setting and the load, and another
    ``num_threads`` another run (see :mod:`metasgd_rl.threads`). Ray workers always sample with one thread.
    """

    def __init__(
        self,
        family: str | TaskFamily = "Navigation2D-v0",
        policy_kwargs: Mapping[str, Any] | None = None,
        meta_batch_size: int = 20,
        episodes_per_task: int = 20,
        inner_steps: int = 1,
        alpha_init: float = 0.1,
        alpha_granularity: str = "element",
        alpha_per_step: bool = False,
        alpha_parameterization: str = "linear",
        alpha_optimizer: str = "adam",
        alpha_lr: float = 1e-3,
        learn_alpha: bool = True,
        first_order: bool = False,
        estimator: str = "lvc",
        outer: str = "trpo",
        outer_kwargs: Mapping[str, Any] | None = None,
        baseline: str = "linear",
        gamma: float = 0.99,
        gae_lambda: float = 1.0,
        normalize_advantages: bool = True,
        seed: int = 0,
        device: str = "cpu",
        family_kwargs: Mapping[str, Any] | None = None,
        sampler: str = "local",
        ray_address: str | None = None,
        ray_workers: int | None = None,
        task_chunk_size: int | None = None,
        num_threads: int | None = 1,
        ray_startup_timeout: float = 120.0,
        max_envs: int | None = None,
    ):
        if isinstance(family, str):
            self.family = make_task_family(family, **dict(family_kwargs or {}))
        elif family_kwargs:
            raise ValueError("family_kwargs are only used when family is a registered id, not a TaskFamily")
        else:
            self.family = family
        if not isinstance(self.family, TaskFamily):
            raise TypeError(f"family must be a registered id or a TaskFamily, got {type(family).__name__}")
        unknown = set(policy_kwargs or {}) - set(DEFAULT_POLICY_KWARGS)
        if unknown:
            raise ValueError(
                f"policy_kwargs has unknown keys {sorted(unknown)}; allowed: {sorted(DEFAULT_POLICY_KWARGS)}"
            )
        self.policy_kwargs = {**DEFAULT_POLICY_KWARGS, **(policy_kwargs or {})}
        self.meta_batch_size = _positive_int("meta_batch_size", meta_batch_size)
        self.episodes_per_task = _positive_int("episodes_per_task", episodes_per_task)
        self.inner_steps = _positive_int("inner_steps", inner_steps)
        self.estimator = _choice("estimator", estimator, ESTIMATORS)
        self.outer = _choice("outer", outer, list(OUTER_OPTIMIZERS))
        self.outer_kwargs = dict(outer_kwargs or {})
        self.advantages = AdvantageConfig(float(gamma), float(gae_lambda), baseline, bool(normalize_advantages))
        self.first_order, self.learn_alpha = bool(first_order), bool(learn_alpha)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed={seed!r} is not allowed; use a non-negative integer")
        self.seed, self.device = int(seed), torch.device(device)
        self.sampler = _choice("sampler", sampler, SAMPLERS)
        self.ray_address, self.ray_workers = ray_address, ray_workers
        self.task_chunk_size = None if task_chunk_size is None else _positive_int("task_chunk_size", task_chunk_size)
        #: torch's CPU threads while this model computes (None: the process's setting); see metasgd_rl.threads
        self.num_threads = None if num_threads is None else _positive_int("num_threads", num_threads)
        self.ray_startup_timeout = ray_startup_timeout
        #: sub-envs a rollout builds and steps at a time (None: the family's max_envs); never changes a batch
        self.max_envs = None if max_envs is None else _positive_int("max_envs", max_envs)
        self._sample_fn = make_sampler(self.sampler, self.family, ray_address, ray_workers, ray_startup_timeout,
                                       self.max_envs)
        self.alpha_optimizer = _choice("alpha_optimizer", alpha_optimizer, ALPHA_OPTIMIZERS)
        if isinstance(alpha_lr, bool) or not isinstance(alpha_lr, (int, float)) or not (
                np.isfinite(alpha_lr) and alpha_lr > 0):
            raise ValueError(f"alpha_lr={alpha_lr!r} is not allowed; use a positive finite number")
        self._init_args = dict(
            alpha_init=float(alpha_init), alpha_granularity=alpha_granularity, alpha_per_step=bool(alpha_per_step),
            alpha_parameterization=alpha_parameterization, alpha_optimizer=self.alpha_optimizer,
            alpha_lr=float(alpha_lr),
        )

        init_gen = torch.Generator().manual_seed(self._stream(_POLICY_INIT))
        self.policy = make_policy(
            self.family.observation_space, self.family.action_space, generator=init_gen, **self.policy_kwargs
        ).to(self.device)
        shapes = {n: p.shape for n, p in self.policy.adaptable_parameters().items()}
        self.step_sizes = StepSizes(
            shapes, float(alpha_init), alpha_granularity, self.learn_alpha, alpha_per_step, self.inner_steps,
            alpha_parameterization,
        ).to(self.device)
        params = list(self.policy.adaptable_parameters().values())
        if self.alpha_in_outer:
            params += list(self.step_sizes.parameters())
        self.outer_optimizer = make_outer_optimizer(self.outer, params, **self.outer_kwargs)
        #: α's own optimiser (``alpha_optimizer="adam"``), None when the outer optimiser trains α or α is fixed
        # Adam's ε is far below the default 1e-8: the hidden layers' α gradients are ~1e-9 at initialisation,
        # and an ε above them would shrink their steps in proportion (the scale-free step is the point here)
        self.alpha_optim = (torch.optim.Adam(self.step_sizes.parameters(), lr=float(alpha_lr), eps=ALPHA_ADAM_EPS)
                            if self.learn_alpha and self.alpha_optimizer == "adam" else None)
        self.iteration = 0
        self._meta_loss_calls = 0

    @property
    def config(self) -> dict[str, Any]:
        """The constructor arguments, JSON-able: ``type(model)(**model.config)`` rebuilds the model."""
        return dict(
            family=self.family.id,
            family_kwargs=dict(self.family.make_kwargs),
            policy_kwargs={k: list(v) if isinstance(v, tuple) else v for k, v in self.policy_kwargs.items()},
            meta_batch_size=self.meta_batch_size,
            episodes_per_task=self.episodes_per_task,
            inner_steps=self.inner_steps,
            **self._init_args,
            learn_alpha=self.learn_alpha,
            first_order=self.first_order,
            estimator=self.estimator,
            outer=self.outer,
            outer_kwargs=dict(self.outer_kwargs),
            baseline=self.advantages.baseline,
            gamma=self.advantages.gamma,
            gae_lambda=self.advantages.gae_lambda,
            normalize_advantages=self.advantages.normalize,
            seed=self.seed,
            device=str(self.device),
            sampler=self.sampler,
            ray_address=self.ray_address,
            ray_workers=self.ray_workers,
            task_chunk_size=self.task_chunk_size,
            num_threads=self.num_threads,
            ray_startup_timeout=self.ray_startup_timeout,
            max_envs=self.max_envs,
        )

    @property
    def alpha_in_outer(self) -> bool:
        """Whether α is part of the outer optimiser's parameter vector (learned, ``alpha_optimizer="joint"``)."""
        return self.learn_alpha and self.alpha_optimizer == "joint"

    # -- display ---------------------------------------------------------------------------------
    def __repr__(self) -> str:
        """One line for notebooks and logs: the class, the task family, how far it trained, the policy and α."""
        family = repr(self.family.id or type(self.family).__name__)
        if self.family.make_kwargs:  # e.g. Meta-World's env_name: which family this is
            family += f" ({', '.join(f'{k}={v!r}' for k, v in sorted(self.family.make_kwargs.items()))})"
        return (f"{type(self).__name__}(family={family}, iteration={self.iteration}, seed={self.seed}, "
                f"policy={self._policy_summary()}, α {self._alpha_summary()})")

    def _policy_summary(self) -> str:
        """``"Gaussian MLP 2→100→100→2 relu, 10,702 θ"``: kind, layer sizes, activation and adapted entries."""
        policy = self.policy
        kind = type(policy).__name__.removesuffix("MLPPolicy") or type(policy).__name__
        sizes = "→".join(str(n) for n in (policy.obs_dim, *policy.hidden_sizes, policy.out_dim))
        entries = sum(p.numel() for p in policy.adaptable_parameters().values())
        return f"{kind} MLP {sizes} {policy.activation}, {entries:,} θ"

    def _alpha_summary(self) -> str:
        """``"= 0.1 fixed, scalar"`` or ``"learned (adam), per element: mean 0.056, range [-0.3, 0.63], 23% < 0"``."""
        sizes = self.step_sizes
        values = torch.cat([v.detach().reshape(-1) for v in sizes.values().values()]).double().cpu()
        tying = {"element": "per element", "tensor": "per tensor", "scalar": "scalar"}[sizes.granularity]
        if sizes.num_steps > 1:
            tying += f" and inner step ({sizes.num_steps})"
        how = f"learned ({self.alpha_optimizer})" if self.learn_alpha else "fixed"
        lo, hi = values.min().item(), values.max().item()
        if lo == hi:
            return f"= {lo:g} {how}, {tying}"
        negative = 100 * (values < 0).double().mean().item()
        return (f"{how}, {tying}: mean {values.mean().item():.3g}, range [{lo:.3g}, {hi:.3g}], "
                f"{negative:.0f}% < 0")

    # -- seeding ---------------------------------------------------------------------------------
    def _seed_sequence(self, stream: int, *index: int) -> np.random.SeedSequence:
        return np.random.SeedSequence(self.seed, spawn_key=(stream, *index))

    def _stream(self, stream: int, *index: int) -> int:
        return int(self._seed_sequence(stream, *index).generate_state(1, np.uint64)[0] >> 1)

    # -- rollouts --------------------------------------------------------------------------------
    @with_model_threads
    def sample_episodes(self, params: Mapping[str, torch.Tensor], tasks: Sequence[Task], episodes: int,
                        seed: int | np.random.SeedSequence) -> EpisodeBatch:
        """Episodes of ``tasks`` with per-task ``params`` ``[T, ...]``, on the model's sampler (local or Ray)."""
        return self._sample_fn(self.family, self.policy, params, tasks, episodes, seed, self.device)

    def close(self) -> None:
        """Release the sampler's resources (Ray actors); the model stays usable and recreates them."""
        close = getattr(self._sample_fn, "close", None)
        if close is not None:
            close()

    # -- meta-objective --------------------------------------------------------------------------
    @with_model_threads
    def meta_objective(self, tasks: Sequence[Task], seed: int | np.random.SeedSequence,
                       task_chunk_size: int | None = None) -> MetaBatch:
        """The estimator's surrogate on ``tasks`` plus the batches it came from.

        ``task_chunk_size``: values only; :meth:`meta_gradient` then differentiates chunks of that many tasks
        (see :func:`~metasgd_rl.estimators.meta_objective`). Training uses the model's ``task_chunk_size``.
        """
        sample = rollout_sampler(
            self.family, self.policy, tasks, self.episodes_per_task, self.inner_steps, seed, self.device,
            self._sample_fn,
        )
        return meta_objective(
            self.policy, self.step_sizes, sample, len(tasks), inner_steps=self.inner_steps,
            estimator=self.estimator, advantages=self.advantages, first_order=self.first_order,
            task_chunk_size=task_chunk_size,
        )

    def meta_gradient(self, batch: MetaBatch) -> list[torch.Tensor]:
        """The estimator's meta-gradient from ``batch``: one tensor per parameter of the outer optimiser (θ, then
        α if it trains α), chunk by chunk if ``batch`` was built with a ``task_chunk_size``."""
        return self._all_meta_gradients(batch)[: len(self.outer_optimizer.params)]

    def _all_meta_gradients(self, batch: MetaBatch) -> list[torch.Tensor]:
        """The meta-gradient w.r.t. every trained tensor (:meth:`_trainable`), computed once per batch."""
        if batch.cached_gradient is None:
            batch.cached_gradient = meta_gradient(self.policy, self.step_sizes, batch, self._trainable(),
                                                  estimator=self.estimator, first_order=self.first_order)
        return batch.cached_gradient

    @with_model_threads
    def meta_loss(self, tasks: Sequence[Task], seed: int | None = None) -> torch.Tensor:
        """Differentiable surrogate (to minimise) of the meta-objective on ``tasks``.

        ``.backward()`` leaves the estimator's meta-gradient in ``policy`` and ``step_sizes`` ``.grad``.
        Without ``seed``, successive calls use successive streams of the model's seed.
        """
        if seed is None:
            ss = self._seed_sequence(_META_LOSS, self._meta_loss_calls)
            self._meta_loss_calls += 1
        else:
            ss = np.random.SeedSequence(int(seed))
        return self.meta_objective(tasks, ss).loss

    # -- training --------------------------------------------------------------------------------
    def sample_train_tasks(self, iteration: int) -> list[Task]:
        rng = np.random.default_rng(self._seed_sequence(_TRAIN_TASKS, iteration))
        return sample_checked_tasks(self.family, self.meta_batch_size, rng, split="train")

    def _alpha_params(self) -> list[torch.nn.Parameter]:
        """The α tensors trained by α's own optimiser ([] when α is fixed or trained jointly)."""
        return list(self.step_sizes.parameters()) if self.alpha_optim is not None else []

    def _trainable(self) -> list[torch.Tensor]:
        """Every trained tensor: the outer optimiser's (θ, and α when joint), then α's own optimiser's."""
        return [*self.outer_optimizer.params, *self._alpha_params()]

    @with_model_threads
    def outer_update(self, batch: MetaBatch) -> tuple[dict[str, float], dict[str, float], bool]:
        """Let the outer optimiser update θ (and α when joint), and α's own optimiser α, from ``batch``.

        Returns the statistics, the seconds per stage (``batch``'s and the optimiser's ``time/*``, without the
        prefix) and whether θ's update was rejected: by the optimiser (e.g. no acceptable TRPO step), or
        because a gradient or a parameter came out non-finite (then θ, α and α's optimiser are left or put back
        as they were). α's own optimiser steps on α's meta-gradient at the (θ, α) the batch was sampled with,
        also when the outer optimiser finds no acceptable step for θ; ``alpha_grad_norm`` in the statistics
        says that it stepped.
        """
        before = [p.detach().clone() for p in self._trainable()]
        alpha_grads: list[torch.Tensor] = []
        alpha_seconds = 0.0
        if self.alpha_optim is not None:  # α's gradient at the current (θ, α), before θ moves
            start = time.perf_counter()
            alpha_grads = self._all_meta_gradients(batch)[len(self.outer_optimizer.params):]
            alpha_seconds = time.perf_counter() - start
        alpha_finite = all(bool(torch.isfinite(g).all()) for g in alpha_grads)
        stats = self.outer_optimizer.step(self, batch) if alpha_finite else {"rejected": 1.0}
        if alpha_grads:
            stats["time/meta_gradient"] = stats.get("time/meta_gradient", 0.0) + alpha_seconds
        timings = {**batch.timings,
                   **{k.removeprefix("time/"): stats.pop(k) for k in list(stats) if k.startswith("time/")}}
        rejected = bool(stats.pop("rejected", 0.0))
        alpha_state = None
        if alpha_grads and alpha_finite and self._all_finite():
            alpha_state = copy.deepcopy(self.alpha_optim.state_dict())
            for p, g in zip(self._alpha_params(), alpha_grads, strict=True):
                p.grad = g.detach().clone()
            self.alpha_optim.step()
            self.alpha_optim.zero_grad(set_to_none=True)
            stats["alpha_grad_norm"] = torch.linalg.vector_norm(
                torch.stack([torch.linalg.vector_norm(g) for g in alpha_grads])).item()
        if not self._all_finite():
            rejected = True
            stats.pop("alpha_grad_norm", None)
            with torch.no_grad():
                for p, old in zip(self._trainable(), before, strict=True):
                    p.copy_(old)
            if alpha_state is not None:
                self.alpha_optim.load_state_dict(alpha_state)
        if self.alpha_optim is not None:  # PPO's backward passes also reach α
            self.alpha_optim.zero_grad(set_to_none=True)
        return stats, timings, rejected

    def _all_finite(self) -> bool:
        return all(bool(torch.isfinite(p).all()) for p in self._trainable())

    @with_model_threads
    def train_step(self) -> dict[str, Any]:
        """One meta-iteration: sample tasks, build the meta-objective, let the outer optimiser update θ, α.

        An update that produces a non-finite loss, gradient or parameter is undone and reported as rejected.
        """
        start = time.perf_counter()
        tasks = self.sample_train_tasks(self.iteration)
        batch = self.meta_objective(tasks, self._seed_sequence(_TRAIN_ROLLOUTS, self.iteration),
                                    self.task_chunk_size)
        stats, timings, rejected = self.outer_update(batch)
        if rejected:
            unchanged = "θ is unchanged; α took its own step" if "alpha_grad_norm" in stats else "θ and α are unchanged"
            cause = nonfinite_report(self.family, batch)
            why = f"because {cause}" if cause else "(non-finite values or no acceptable step)"
            warnings.warn(f"iteration {self.iteration + 1}: the {self.outer} update was rejected {why}; {unchanged}",
                          RuntimeWarning, stacklevel=2)
        self.iteration += 1
        post_success = batch.post_success
        success = {} if post_success is None else {"pre_success": batch.pre_success, "post_success": post_success}
        return {
            "iteration": self.iteration,
            "loss": batch.loss.item(),
            "pre_return": batch.pre_return,
            "post_return": batch.post_return,
            **success,
            "update_rejected": rejected,
            "seconds": time.perf_counter() - start,
            "env_steps": int(sum(float(b.mask.sum()) for b in (*batch.pre_batches, batch.post_batch))),
            **{f"time/{k}": v for k, v in timings.items()},
            **{f"outer/{k}": v for k, v in stats.items()},
            **{f"alpha/{k}": v for k, v in self.step_sizes.summary().items()},
            "tasks": tasks,
        }

    @with_model_threads
    def learn(self, iterations: int, callback: CallbackLike = None, progress_bar: bool = True,
              summary: bool | None = None) -> MetaSGD:
        """Run ``iterations`` more meta-iterations.

        ``callback``: a :class:`~metasgd_rl.callbacks.BaseCallback`, a function of the iteration's info dict,
        or a list of them; returning ``False`` stops training. ``progress_bar``: a live bar (on stderr) with the
        pre- and post-adaptation returns and seconds per iteration; it counts the model's iterations, so a
        model at iteration 6 that learns 2 more goes from 6/8 to 8/8. ``summary``: print a one-line summary
        (iterations, s/iteration, the last returns, rejected updates) on stdout at the end; by default
        (None) only with the progress bar, so ``learn(n, progress_bar=False)`` prints nothing unless
        ``summary=True``. The ``metasgd-rl train`` command always prints it.
        """
        from tqdm.auto import tqdm

        iterations = _positive_int("iterations", iterations)
        summary = progress_bar if summary is None else summary
        cb = as_callback(callback)
        cb.on_training_start(self)
        bar = tqdm(total=self.iteration + iterations, initial=self.iteration, disable=not progress_bar,
                   desc=type(self).__name__, dynamic_ncols=True)
        history: list[dict[str, Any]] = []
        try:
            for _ in range(iterations):
                info = self.train_step()
                history.append(info)
                success = {} if "post_success" not in info else {"success": f"{info['post_success']:.2f}"}
                bar.set_postfix(pre=f"{info['pre_return']:.2f}", post=f"{info['post_return']:.2f}", **success,
                                s_it=f"{info['seconds']:.2f}")
                bar.update()
                if not cb.on_iteration_end(self, info):
                    break
        finally:
            bar.close()
            cb.on_training_end(self)
        if summary and history:
            last = history[-min(10, len(history)):]
            print(f"{type(self).__name__}: {len(history)} iterations to {self.iteration}, "
                  f"{sum(h['seconds'] for h in history) / len(history):.2f} s/iteration, last {len(last)}: "
                  f"pre-adaptation return {np.mean([h['pre_return'] for h in last]):.2f}, "
                  f"post-adaptation {np.mean([h['post_return'] for h in last]):.2f}, "
                  + (f"post-adaptation success {np.mean([h['post_success'] for h in last]):.2f}, "
                     if "post_success" in last[-1] else "")
                  + f"{sum(h['update_rejected'] for h in history)} updates rejected")
        return self

    # -- saving ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Tensors and plain values only (loadable with ``torch.load(..., weights_only=True)``), with their
        :func:`checkpoint_digest` (``"digest"``), which :meth:`load` verifies."""
        state = {
            "format": CHECKPOINT_FORMAT,
            "class": type(self).__name__,
            "config": json.dumps(self.config),
            "iteration": self.iteration,
            "meta_loss_calls": self._meta_loss_calls,
            "policy": self.policy.state_dict(),
            "step_sizes": self.step_sizes.state_dict(),
            "outer": self.outer_optimizer.state_dict(),
            **({"alpha_optimizer": self.alpha_optim.state_dict()} if self.alpha_optim is not None else {}),
        }
        state[DIGEST_KEY] = checkpoint_digest(state)
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        self.step_sizes.load_state_dict(state["step_sizes"])
        self.outer_optimizer.load_state_dict(state["outer"])
        if self.alpha_optim is not None:
            if "alpha_optimizer" not in state:
                raise ValueError("the checkpoint has no state of α's optimiser: it was trained with "
                                 "alpha_optimizer='joint'")
            self.alpha_optim.load_state_dict(state["alpha_optimizer"])
        self.iteration = int(state["iteration"])
        self._meta_loss_calls = int(state["meta_loss_calls"])

    def save(self, path: str | os.PathLike) -> Path:
        """Write θ, α, the outer optimiser's state, the iteration and the JSON config, atomically."""
        if self.family.id is None:
            warnings.warn("the family has no registry id: MetaSGD.load will need family=...", stacklevel=2)
        return atomic_torch_save(self.state_dict(), path)

    @classmethod
    def load(cls, path: str | os.PathLike, family: TaskFamily | None = None, *, allow_env_imports: bool = False,
             **overrides: Any) -> MetaSGD:
        """Rebuild a saved model (``weights_only=True``: nothing is unpickled).

        ``family`` supplies the family of a model saved with an unregistered one; ``overrides`` replace
        config entries that do not change the parameters' shapes (e.g. ``device``, ``outer_kwargs``).

        The loaded model samples locally whatever sampler the file was trained with: a file never chooses a
        network address. Pass ``sampler="ray"`` (and ``ray_address``, ``ray_workers``) to roll out on Ray.

        ``allow_env_imports``: a checkpoint whose ``family_kwargs`` give a module-qualified gymnasium id
        (``env_id="some.module:Env-v0"``, which ``gymnasium.make`` imports) is refused with an
        :class:`EnvImportError`, since loading it would run code the file chooses; pass ``True`` (CLI:
        ``--allow-env-imports``) only for a file you trust. The θ and α tensors are checked against the shapes
        the checkpoint's config implies before the model is built (:class:`CheckpointError` on a mismatch).
        """
        state, saved_config = checked_checkpoint(path)
        config = {**with_legacy_defaults(saved_config), **LOCAL_SAMPLING, **overrides}
        saved_class = {"MetaSGD": MetaSGD, "MAML": MAML}.get(state["class"], cls)
        if family is not None:
            config["family"] = family
            config.pop("family_kwargs", None)
        elif config["family"] is None:
            raise ValueError(f"{path} was saved with an unregistered family: pass family=... to load it")
        elif not allow_env_imports and "family_kwargs" not in overrides:
            from metasgd_rl.gym_family import env_import_message, module_env_ids

            imports = module_env_ids(config.get("family_kwargs"))
            if imports:
                raise EnvImportError(env_import_message(imports[0], str(path), "allow_env_imports=True"))
        if saved_class is MAML:
            for key in MAML.FIXED:
                config.pop(key, None)
        _check_work_limits(path, config)  # before the family is built with the horizon the file asks for
        if isinstance(config["family"], str):  # built once, here: its spaces give the tensors' shapes
            config["family"] = _checkpoint_family(path, config["family"], config.pop("family_kwargs", None))
            _check_work_limits(path, {}, config["family"])
        if isinstance(config["family"], TaskFamily):
            _check_state_shapes(path, state, config["family"], config, MAML.FIXED if saved_class is MAML else {})
        verify_digest(path, state)  # last: a hand-edited file gets the more specific messages above
        model = saved_class(**config)
        model.load_state_dict(state)
        return model

    # -- adaptation ------------------------------------------------------------------------------
    @with_model_threads
    def adapt_tasks(self, tasks: Sequence[Task], episodes: int,
                    seeds: Sequence[np.random.SeedSequence]) -> tuple[dict[str, torch.Tensor], list[EpisodeBatch]]:
        """Adapt all ``tasks`` at once with one inner step per seed, each on freshly sampled episodes.

        First order (only the adapted parameters are wanted, not their derivatives); α of later steps than
        trained reuses the last one. Returns the adapted per-task parameters ``[T, ...]`` and the batches the
        steps were taken on (batch k was sampled with the parameters after k steps).
        """
        batches: list[EpisodeBatch] = []

        def next_batch(k: int, params: dict[str, torch.Tensor]) -> tuple[EpisodeBatch, torch.Tensor]:
            batches.append(self.sample_episodes(params, tasks, episodes, seeds[k]))
            return batches[-1], self.advantages(batches[-1])

        adaptation = adapt_tasks(self.policy, self.step_sizes, len(tasks), next_batch, inner_steps=len(seeds),
                                 estimator=self.estimator, create_graph=False)
        return {n: p.detach() for n, p in adaptation.params.items()}, batches

    def adapt(self, task: Task, steps: int | None = None, episodes: int | None = None,
              seed: int | None = None) -> AdaptedPolicy:
        """Adapt to ``task`` with ``steps`` inner steps of ``episodes`` episodes each (default: training's)."""
        steps = self.inner_steps if steps is None else int(steps)
        if steps < 0:
            raise ValueError(f"steps={steps} is not allowed; use an integer >= 0")
        episodes = _positive_int("episodes", self.episodes_per_task if episodes is None else episodes)
        ss = self._seed_sequence(_ADAPT) if seed is None else np.random.SeedSequence(int(seed))
        params, _ = self.adapt_tasks([task], episodes, ss.spawn(steps))
        return AdaptedPolicy(self.policy, {n: p[0] for n, p in params.items()},
                             self.family.observation_space, self.family.action_space, self.device)


class MAML(MetaSGD):
    """MAML (Finn et al. 2017): the same model with one fixed scalar step size α."""

    #: the constructor arguments MAML fixes (one untrained scalar α, stored as itself)
    FIXED: dict[str, Any] = dict(alpha_granularity="scalar", learn_alpha=False, alpha_parameterization="linear",
                                 alpha_optimizer="joint", alpha_lr=1e-3)

    def __init__(self, family: str | TaskFamily = "Navigation2D-v0", **kwargs: Any):
        for key, fixed in self.FIXED.items():
            if key in kwargs and kwargs[key] != fixed:
                raise ValueError(f"MAML uses a fixed scalar α: {key}={kwargs[key]!r} is not allowed; use MetaSGD")
        kwargs.update(self.FIXED)
        super().__init__(family, **kwargs)
