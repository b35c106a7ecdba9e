"""Baselines for fast adaptation, evaluated in the same harness, on the same held-out tasks, as the meta-learners.

- :func:`pretrain_multitask`: the MAML paper's "pretrained" baseline. θ is trained to maximise the average
  *pre-update* return over training tasks (a policy-gradient objective with no adaptation in it), then
  fine-tuned on each held-out task with vanilla policy gradient, exactly like MAML's inner loop.
- :func:`random_init`: an untrained θ, fine-tuned the same way.
- :func:`ppo_from_scratch`: Stable-Baselines3 PPO trained from scratch on each held-out task with given
  numbers of environment steps (e.g. 1×, 10×, 100× the transitions that adaptation used,
  :func:`adaptation_samples`); :func:`budget_to_match` reads off the budget at which PPO reaches a return.

The first two return :class:`~metasgd_rl.model.MAML` models (fixed scalar α = ``step_size``, estimator
``"maml"`` so that the inner step is REINFORCE with the model's advantages, i.e. vanilla policy gradient with
the linear feature baseline), so that :func:`~metasgd_rl.evaluation.evaluate_adaptation` evaluates them with
0..K fine-tuning steps like any meta-learned model.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from metasgd_rl.callbacks import CallbackLike, as_callback
from metasgd_rl.estimators import meta_objective, rollout_sampler
from metasgd_rl.family import Task, TaskFamily
from metasgd_rl.model import _TRAIN_ROLLOUTS, MAML, MetaSGD, _int_at_least, _positive_int
from metasgd_rl.sampler import EpisodeBatch
from metasgd_rl.stats import t_ci95

PRETRAIN_OUTERS = ("trpo", "adam")
#: the settings a fine-tuning baseline copies from the model it is compared with, so that its inner step is the same
FINE_TUNE_KEYS = ("policy_kwargs", "episodes_per_task", "baseline", "gamma", "gae_lambda", "normalize_advantages")
PPO_MAX_N_STEPS = 2048  # SB3's default rollout length
PPO_TARGET_BATCH = 64  # SB3's default minibatch size
DEFAULT_PPO_POLICY_KWARGS: dict[str, Any] = dict(net_arch=dict(pi=[100, 100], vf=[100, 100]), activation_fn="relu")
_ACTIVATIONS = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "elu": torch.nn.ELU, "gelu": torch.nn.GELU,
                "silu": torch.nn.SiLU, "leaky_relu": torch.nn.LeakyReLU}


# -- fine-tuned initialisations ------------------------------------------------------------------------------
def random_init(
    family: str | TaskFamily,
    *,
    policy_kwargs: Mapping[str, Any] | None = None,
    step_size: float = 0.1,
    seed: int = 0,
    **model_kwargs: Any,
) -> MAML:
    """An untrained policy (initialised from ``seed``) fine-tuned by vanilla policy gradient with step ``step_size``.

    ``model_kwargs`` go to :class:`~metasgd_rl.model.MAML` (e.g. ``episodes_per_task``, ``gamma``, ``baseline``,
    ``normalize_advantages``, ``device``, ``family_kwargs``); keep them equal to the compared model's so that the
    fine-tuning step is the same. The estimator is always ``"maml"`` (REINFORCE inner step).
    """
    if model_kwargs.get("estimator", "maml") != "maml":
        raise ValueError(f"estimator={model_kwargs['estimator']!r} is not allowed for a fine-tuning baseline; "
                         "its inner step is vanilla policy gradient (estimator 'maml')")
    model_kwargs.pop("estimator", None)
    return MAML(family, policy_kwargs=policy_kwargs, alpha_init=float(step_size), estimator="maml", seed=seed,
                **model_kwargs)


def pretrain_objective(model: MetaSGD, tasks: Sequence[Task], seed: int | np.random.SeedSequence):
    """The multi-task policy-gradient objective of θ on ``tasks``, as a :class:`~metasgd_rl.estimators.MetaBatch`.

    It is the meta-objective with zero inner steps: one batched rollout of θ on every task
    (``model.episodes_per_task`` episodes each), the model's advantages (linear baseline), and the REINFORCE
    surrogate; its ``loss`` is minus the mean surrogate over tasks, its ``post_return`` the mean pre-update
    return. The outer optimisers accept it unchanged (TRPO's trust region is then on the un-adapted policy).
    """
    sample = rollout_sampler(model.family, model.policy, tasks, model.episodes_per_task, 0, seed, model.device,
                             model._sample_fn)
    return meta_objective(model.policy, model.step_sizes, sample, len(tasks), inner_steps=0, estimator="maml",
                          advantages=model.advantages, first_order=True)


def pretrain_multitask(
    family: str | TaskFamily,
    *,
    iterations: int,
    meta_batch_size: int = 20,
    episodes_per_task: int = 20,
    policy_kwargs: Mapping[str, Any] | None = None,
    outer: str = "trpo",
    outer_kwargs: Mapping[str, Any] | None = None,
    step_size: float = 0.1,
    seed: int = 0,
    progress_bar: bool = True,
    callback: CallbackLike = None,
    **model_kwargs: Any,
) -> MAML:
    """Train θ to maximise the average pre-update return over training tasks; return it as a MAML model.

    Each iteration samples ``meta_batch_size`` training tasks, rolls θ out on all of them at once
    (``episodes_per_task`` episodes each), computes advantages with the model's linear baseline and takes one
    step of the outer optimiser (``"trpo"``: the same :class:`~metasgd_rl.outer.TRPOOuter` as meta-training,
    with the KL of the un-adapted policy; or ``"adam"``) on the policy-gradient surrogate. Tasks and rollouts of
    iteration i use the same seed streams as meta-iteration i of a model with the same ``seed``, and θ starts
    from :func:`random_init` with that seed.

    The returned model has a fixed scalar α = ``step_size`` and estimator ``"maml"``: its inner step is vanilla
    policy gradient, so ``evaluate_adaptation(model, ...)`` fine-tunes the pretrained policy with 0..K steps.
    ``model.iteration`` counts the pretraining iterations. ``callback`` gets each iteration's info dict
    (``pre_return``: mean return of θ on that iteration's tasks, before its update); returning ``False`` stops.
    ``model_kwargs`` go to :class:`~metasgd_rl.model.MAML` (``gamma``, ``baseline``, ``device``, ...).
    ``progress_bar``: a live bar on stderr (iterations, the last pre-update return, seconds per iteration), as
    ``MetaSGD.learn`` shows; ``False`` for none.
    """
    iterations = _positive_int("iterations", iterations)
    if outer not in PRETRAIN_OUTERS:
        raise ValueError(f"outer={outer!r} is not allowed for pretraining; use one of {list(PRETRAIN_OUTERS)}")
    model = random_init(family, policy_kwargs=policy_kwargs, step_size=step_size, seed=seed,
                        meta_batch_size=meta_batch_size, episodes_per_task=episodes_per_task, outer=outer,
                        outer_kwargs=outer_kwargs, **model_kwargs)
    from tqdm.auto import tqdm

    cb = as_callback(callback)
    cb.on_training_start(model)
    bar = tqdm(total=iterations, disable=not progress_bar, desc="pretrain", dynamic_ncols=True)
    try:
        for _ in range(iterations):
            info = pretrain_step(model)
            bar.set_postfix(ret=f"{info['pre_return']:.2f}", s_it=f"{info['seconds']:.2f}")
            bar.update()
            if not cb.on_iteration_end(model, info):
                break
    finally:
        bar.close()
        cb.on_training_end(model)
    return model


def pretrain_step(model: MetaSGD) -> dict[str, Any]:
    """One multi-task pretraining iteration of ``model``'s θ (see :func:`pretrain_multitask`).

    A non-finite update is undone and reported as rejected, as in meta-training.
    """
    start = time.perf_counter()
    tasks = model.sample_train_tasks(model.iteration)
    batch = pretrain_objective(model, tasks, model._seed_sequence(_TRAIN_ROLLOUTS, model.iteration))
    stats, timings, rejected = model.outer_update(batch)
    if rejected:
        warnings.warn(f"pretraining iteration {model.iteration + 1}: the {model.outer} update was rejected; "
                      "θ is unchanged", RuntimeWarning, stacklevel=2)
    model.iteration += 1
    return {
        "iteration": model.iteration,
        "loss": batch.loss.item(),
        "pre_return": batch.post_return,  # zero inner steps: the rollout of θ itself
        "update_rejected": rejected,
        "seconds": time.perf_counter() - start,
        **{f"time/{k}": v for k, v in timings.items()},
        **{f"outer/{k}": v for k, v in stats.items()},
        "tasks": tasks,
    }


# -- data used by adaptation ----------------------------------------------------------------------------------
def adaptation_samples(
    model_or_episodes: MetaSGD | int | Sequence[EpisodeBatch],
    steps: int,
    family: TaskFamily | None = None,
) -> int:
    """Environment transitions per task that ``steps`` adaptation steps use.

    - an int (episodes per step): ``episodes × horizon × steps``, the most the steps can use (an upper bound
      when episodes can terminate early); ``family`` gives the horizon;
    - a model: the same with its ``episodes_per_task`` (``family`` defaults to the model's);
    - a list of :class:`~metasgd_rl.sampler.EpisodeBatch` (e.g. from ``model.adapt_tasks``): the actual count
      in the first ``steps`` batches, averaged over tasks and rounded up.
    """
    steps = _int_at_least("steps", steps, 0)
    if isinstance(model_or_episodes, MetaSGD):
        family = model_or_episodes.family if family is None else family
        model_or_episodes = model_or_episodes.episodes_per_task
    if isinstance(model_or_episodes, (int, np.integer)) and not isinstance(model_or_episodes, bool):
        episodes = _positive_int("episodes", model_or_episodes)
        if family is None:
            raise ValueError("adaptation_samples needs family= (for its horizon) when given a number of episodes")
        return episodes * int(family.max_episode_steps) * steps
    batches = list(model_or_episodes)
    if steps > len(batches):
        raise ValueError(f"steps={steps} is more than the {len(batches)} batches given")
    if steps == 0:
        return 0
    per_task = sum(b.mask.sum(dim=(0, 2)).double() for b in batches[:steps])
    return int(math.ceil(float(per_task.mean()) - 1e-9))


def budget_to_match(budgets: Sequence[float], ppo_means: Sequence[float], target: float) -> float | None:
    """The budget at which PPO's mean return first reaches ``target``, log-linearly interpolated.

    ``budgets`` must increase. Returns ``budgets[0]`` when the first budget already reaches it (the match is at
    most that), and None when no budget does (the match is beyond the largest budget). Between budgets b0 < b1
    with returns m0 < target <= m1, ``log b = log b0 + (target - m0) / (m1 - m0) · (log b1 - log b0)``.
    """
    budgets = np.asarray(budgets, dtype=np.float64)
    means = np.asarray(ppo_means, dtype=np.float64)
    if budgets.ndim != 1 or budgets.shape != means.shape or len(budgets) == 0:
        raise ValueError(f"budgets and ppo_means must be 1-D of the same non-zero length, got {budgets.shape} "
                         f"and {means.shape}")
    if not (np.all(budgets > 0) and np.all(np.diff(budgets) > 0)):
        raise ValueError(f"budgets={budgets.tolist()} must be positive and increasing")
    reached = np.flatnonzero(means >= target)
    if len(reached) == 0:
        return None
    i = int(reached[0])
    if i == 0:
        return float(budgets[0])
    b0, b1, m0, m1 = budgets[i - 1], budgets[i], means[i - 1], means[i]
    fraction = (target - m0) / (m1 - m0)
    return float(math.exp(math.log(b0) + fraction * (math.log(b1) - math.log(b0))))


# -- PPO from scratch ------------------------------------------------------------------------------------------
@dataclass
class PPOResult:
    """``returns[i, j]``: mean return of ``eval_episodes`` episodes on task i after PPO with ``budgets[j]`` steps."""

    tasks: list[Task]
    budgets: list[int]
    returns: np.ndarray  # [n_tasks, n_budgets]
    timesteps: list[int]  # env steps PPO actually took per budget (whole rollouts: >= budget, < budget + rollouts)
    eval_episodes: int
    deterministic: bool
    seconds: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # [n_tasks, n_budgets] training time
    config: dict[str, Any] = field(default_factory=dict)

    def mean(self) -> np.ndarray:
        """Mean return over tasks per budget, ``[n_budgets]``."""
        return self.returns.mean(axis=0)

    def ci95(self) -> np.ndarray:
        """Half-width of a 95% Student-t confidence interval of :meth:`mean` over tasks (NaN with one task)."""
        return t_ci95(self.returns)

    def steps_per_second(self) -> float:
        """PPO training throughput (env steps, including its updates, per second of wall time)."""
        total = sum(self.timesteps) * len(self.tasks)
        return float(total / self.seconds.sum()) if self.seconds.size and self.seconds.sum() > 0 else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return dict(
            tasks=self.tasks, budgets=list(self.budgets), timesteps=list(self.timesteps),
            returns=self.returns.tolist(), mean=self.mean().tolist(), ci95=self.ci95().tolist(),
            eval_episodes=self.eval_episodes, deterministic=self.deterministic,
            seconds=self.seconds.tolist(), steps_per_second=self.steps_per_second(), config=self.config,
        )


def _minibatch(n_steps: int) -> int | None:
    """The divisor of ``n_steps`` in [32, 128] nearest SB3's 64 (the larger on a tie), or None."""
    divisors = [d for d in range(32, 129) if n_steps % d == 0]
    return min(divisors, key=lambda d: (abs(d - PPO_TARGET_BATCH), -d)) if divisors else None


def ppo_schedule(budget: int) -> tuple[int, int, int]:
    """``(n_steps, batch_size, timesteps)`` of a PPO run with ``budget`` env steps (one env).

    SB3 collects whole rollouts of ``n_steps`` until it has ``total_timesteps``, so ``n_steps`` should divide
    the budget: it is the budget itself up to SB3's 2048, else the largest divisor of the budget in [1024, 2048]
    that has a minibatch size (below); failing that, ``ceil(budget / 2048)`` rollouts of ``ceil(budget /
    rollouts)`` steps, which overshoot the budget by fewer steps than there are rollouts (``timesteps``: the
    steps PPO will take). Every budget >= 2 gets at least one update. ``batch_size`` is the divisor of
    ``n_steps`` in [32, 128] nearest SB3's 64; 64 with a shorter last minibatch when there is none; ``n_steps``
    itself below 32.
    """
    budget = _positive_int("budget", budget)
    if budget < 2:
        raise ValueError(f"budget={budget} is not allowed; PPO needs at least 2 env steps per rollout")
    if budget <= PPO_MAX_N_STEPS:
        n_steps = budget
    else:
        exact = [n for n in range(PPO_MAX_N_STEPS, PPO_MAX_N_STEPS // 2 - 1, -1)
                 if budget % n == 0 and _minibatch(n) is not None]
        n_steps = exact[0] if exact else math.ceil(budget / math.ceil(budget / PPO_MAX_N_STEPS))
    if n_steps < 32:
        batch = n_steps
    else:
        batch = _minibatch(n_steps) or PPO_TARGET_BATCH
    return n_steps, batch, math.ceil(budget / n_steps) * n_steps


@contextlib.contextmanager
def _isolated_global_rng() -> Iterator[None]:
    """SB3 seeds and draws from the global ``random``, NumPy and torch RNGs: restore them afterwards."""
    py_state, np_state = random.getstate(), np.random.get_state()  # noqa: NPY002 (saved, not used)
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)  # noqa: NPY002


def _sb3_policy_kwargs(policy_kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    kwargs = {**DEFAULT_PPO_POLICY_KWARGS, **(policy_kwargs or {})}
    if isinstance(kwargs.get("activation_fn"), str):
        name = kwargs["activation_fn"]
        if name not in _ACTIVATIONS:
            raise ValueError(f"policy_kwargs activation_fn={name!r} is not allowed; use one of {sorted(_ACTIVATIONS)}"
                             " or a torch.nn.Module class")
        kwargs["activation_fn"] = _ACTIVATIONS[name]
    return kwargs


def _seed_int(ss: np.random.SeedSequence) -> int:
    return int(ss.generate_state(1)[0] >> 1)


def _ppo_bar(total_steps: int, enabled: bool) -> Any:
    """The tqdm bar of :func:`ppo_from_scratch`: PPO's env steps over every task and budget (disabled: a no-op)."""
    from tqdm.auto import tqdm

    return tqdm(total=total_steps, disable=not enabled, desc="PPO from scratch", unit="step", unit_scale=True,
                dynamic_ncols=True)


def _bar_callback(bar: Any) -> Any:
    """An SB3 callback that advances ``bar`` by the env steps of each PPO step (SB3 imported on use, as above)."""
    from stable_baselines3.common.callbacks import BaseCallback

    class BarCallback(BaseCallback):
        def _on_step(self) -> bool:
            bar.update(self.training_env.num_envs)
            return True

    return BarCallback()


def ppo_from_scratch(
    family: str | TaskFamily,
    tasks: Sequence[Task],
    budgets: Sequence[int],
    *,
    eval_episodes: int = 20,
    seed: int = 0,
    policy_kwargs: Mapping[str, Any] | None = None,
    ppo_kwargs: Mapping[str, Any] | None = None,
    deterministic: bool = False,
    device: str = "cpu",
    progress_bar: bool = True,
) -> PPOResult:
    """Train SB3 PPO from scratch on each task with each budget of env steps; evaluate the trained policy.

    For task i and budget j: ``PPO("MlpPolicy", family.make_env(tasks[i]), seed=s_i, ...)`` learns for
    ``budgets[j]`` steps (rollout length and minibatch size from :func:`ppo_schedule`, so that small budgets
    still update; the other hyper-parameters are SB3's defaults unless ``ppo_kwargs`` set them), then
    ``returns[i, j]`` is the mean undiscounted return of ``eval_episodes`` episodes of it on the same task
    (SB3's ``evaluate_policy``), with sampled actions by default as the meta-learners' returns are
    (``deterministic=True``: the mean action).

    The default network is 2×100 ReLU for the policy and, separately, the value function
    (:data:`DEFAULT_PPO_POLICY_KWARGS`), the size of the meta-learners' policies; SB3's own default is 2×64
    tanh (``policy_kwargs=dict(net_arch=[64, 64], activation_fn="tanh")``). Its initial action std is 1
    (SB3's ``log_std_init=0``) like theirs. Seeds: task i's PPO seed and evaluation seed derive from ``seed``
    and i only, so every budget of a task starts from the same network and the same evaluation episodes.
    SB3 seeds the global RNGs; their state is restored afterwards.

    ``progress_bar``: a live bar on stderr counting PPO's env steps over all tasks and budgets (this is long work:
    10 tasks × budgets [2000, 20000] take minutes), with the current task and budget and the last return;
    ``False`` for none.
    """
    from stable_baselines3 import PPO
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv

    if isinstance(family, str):
        from metasgd_rl.registry import make_task_family

        family = make_task_family(family)
    tasks = list(tasks)
    if not tasks:
        raise ValueError("tasks must not be empty")
    budgets = [_positive_int("budgets[]", b) for b in budgets]
    if not budgets:
        raise ValueError("budgets must not be empty")
    eval_episodes = _positive_int("eval_episodes", eval_episodes)
    sb3_policy_kwargs = _sb3_policy_kwargs(policy_kwargs)
    ppo_kwargs = dict(ppo_kwargs or {})
    reserved = {"n_steps", "batch_size", "seed", "device", "policy_kwargs", "env", "policy"} & set(ppo_kwargs)
    if reserved:
        raise ValueError(f"ppo_kwargs may not set {sorted(reserved)}: they are chosen per budget or are arguments")
    schedules = [ppo_schedule(b) for b in budgets]
    returns = np.zeros((len(tasks), len(budgets)))
    seconds = np.zeros_like(returns)
    task_seeds = np.random.SeedSequence(int(seed)).spawn(len(tasks))
    bar = _ppo_bar(len(tasks) * sum(t for _, _, t in schedules), progress_bar)
    last = ""
    with _isolated_global_rng(), bar:
        for i, task in enumerate(tasks):
            train_ss, eval_ss = task_seeds[i].spawn(2)
            for j, (n_steps, batch_size, _) in enumerate(schedules):
                start = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message=".*mini-batch.*")  # a shorter last minibatch is fine
                    agent = PPO("MlpPolicy", family.make_env(task), n_steps=n_steps, batch_size=batch_size,
                                seed=_seed_int(train_ss), device=device, policy_kwargs=sb3_policy_kwargs,
                                verbose=0, **ppo_kwargs)
                bar.set_postfix_str(f"task {i + 1}/{len(tasks)}, budget {budgets[j]:,}{last}")
                agent.learn(total_timesteps=budgets[j], callback=_bar_callback(bar) if progress_bar else None)
                seconds[i, j] = time.perf_counter() - start
                eval_env = DummyVecEnv([lambda task=task: Monitor(family.make_env(task))])
                eval_seed = _seed_int(eval_ss)
                eval_env.seed(eval_seed)
                agent.set_random_seed(eval_seed)  # the evaluation's action noise (global torch RNG)
                episode_returns, _ = evaluate_policy(agent, eval_env, n_eval_episodes=eval_episodes,
                                                     deterministic=deterministic, return_episode_rewards=True)
                eval_env.close()
                returns[i, j] = float(np.mean(episode_returns))
                last = f", last return {returns[i, j]:.2f}"
    config = dict(policy_kwargs={k: (v.__name__ if isinstance(v, type) else v) for k, v in sb3_policy_kwargs.items()},
                  ppo_kwargs=ppo_kwargs, schedules=[dict(n_steps=n, batch_size=b) for n, b, _ in schedules],
                  seed=int(seed), device=device)
    return PPOResult(tasks=tasks, budgets=budgets, returns=returns, timesteps=[t for _, _, t in schedules],
                     eval_episodes=eval_episodes, deterministic=bool(deterministic), seconds=seconds, config=config)
