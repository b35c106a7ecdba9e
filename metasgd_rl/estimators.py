"""Outer-gradient estimators: surrogates whose gradient w.r.t. θ and α is the meta-gradient.

The meta-objective of a task is F(θ, α) = E_τ[ J(θ'(τ; θ, α)) ]: τ are the pre-update episodes sampled
with θ, θ' is computed from them by the inner step, and J is the adapted policy's expected return. Its
gradient has a *pathwise* part, E_τ[∇_θ' J · ∂θ'/∂θ] with τ held fixed, and a *sampling* part,
E_τ[J(θ') ∇_θ log p(τ | θ)], because θ also chooses which pre-update episodes are seen.

- ``"maml"`` (Finn et al. 2017): REINFORCE inner step, autodiff through it. Pathwise part only: biased
  (ProMP, Rothfuss et al. 2018, §4).
- ``"lvc"`` (ProMP's low-variance curvature): the inner step uses π/⊥π · A, whose autodiff Hessian adds
  the ∇log π ∇log πᵀ A term per step. Biased, low variance; the default.
- ``"dice"`` (Foerster et al. 2018): the pathwise part plus the sampling part, written with DiCE's magic box
  of the pre-update episodes' summed log-probabilities (under the parameters that sampled them, so with
  K inner steps later batches count through θ_1..θ_{K-1}). Unbiased, higher variance. The score term is
  centred with the leave-one-out mean over the meta-batch's other tasks, which keeps it unbiased.

The post-update surrogate is the same first-order policy-gradient surrogate for all three: only its
gradient w.r.t. θ' enters the meta-gradient. For α the pathwise part alone is already unbiased when K = 1
(∂θ'/∂α = -∇L does not involve the sampling distribution), so every estimator learns α correctly there.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from metasgd_rl.adaptation import (
    batch_distribution,
    batch_log_probs,
    inner_gradients,
    magic_box,
    masked_task_mean,
    pg_surrogate,
)
from metasgd_rl.advantages import BASELINES, compute_advantages
from metasgd_rl.family import Task, TaskFamily
from metasgd_rl.policies import Params, Policy
from metasgd_rl.sampler import EpisodeBatch, sample_episodes
from metasgd_rl.step_sizes import StepSizes

ESTIMATORS = ("maml", "lvc", "dice")
INNER_FORM = {"maml": "score", "lvc": "ratio", "dice": "score"}


@dataclass(frozen=True)
class AdvantageConfig:
    """How episodes become advantages (see :func:`metasgd_rl.advantages.compute_advantages`)."""

    gamma: float = 0.99
    gae_lambda: float = 1.0
    baseline: str = "linear"
    normalize: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma={self.gamma} is not allowed; use a number in [0, 1]")
        if not 0.0 <= self.gae_lambda <= 1.0:
            raise ValueError(f"gae_lambda={self.gae_lambda} is not allowed; use a number in [0, 1]")
        if self.baseline not in BASELINES:
            raise ValueError(f"baseline={self.baseline!r} is not allowed; use one of {list(BASELINES)}")

    def __call__(self, batch: EpisodeBatch) -> torch.Tensor:
        return compute_advantages(batch, self.gamma, self.gae_lambda, self.baseline, self.normalize)


@dataclass
class MetaBatch:
    """Everything one evaluation of the meta-objective produced.

    The episodes and their (detached) advantages are kept so that outer optimisers can re-evaluate the
    surrogate on the same data at other (θ, α): :func:`replay_adaptation`.
    """

    loss: torch.Tensor  # scalar surrogate to minimise
    task_losses: torch.Tensor  # [T], loss = task_losses.mean()
    pre_batches: list[EpisodeBatch]
    pre_advantages: list[torch.Tensor]
    post_batch: EpisodeBatch
    post_advantages: torch.Tensor
    post_log_probs: torch.Tensor  # log π_θ'(a|s) of the post-update episodes at sampling time, detached
    adapted_params: Params  # [T, ...], still attached to the graph
    trajectory: list[tuple[Params, Params]]  # (θ_k, g_k) of every inner step, detached
    #: seconds spent building it: ``sampling`` (all rollouts, advantages included), ``adaptation`` (the inner
    #: steps), ``objective`` (the post-update surrogate)
    timings: dict[str, float] = field(default_factory=dict)
    #: DiCE's centred post-update values per task ([T], detached; None for other estimators): stored so that a
    #: chunk of tasks is centred with the whole meta-batch's leave-one-out means
    dice_centred: torch.Tensor | None = None
    #: None: ``loss`` carries the whole second-order graph. An int: ``loss`` is a value only, and
    #: :func:`meta_gradient` differentiates chunks of that many tasks one after another (bounded memory)
    task_chunk_size: int | None = None
    #: the meta-gradient w.r.t. the model's trained tensors once computed (θ, then α): the outer optimiser and
    #: α's own optimiser share it instead of differentiating the batch twice. Not carried by :meth:`select`.
    cached_gradient: list[torch.Tensor] | None = None

    @property
    def pre_return(self) -> float:
        return float(self.pre_batches[0].mean_returns().mean())

    @property
    def post_return(self) -> float:
        return float(self.post_batch.mean_returns().mean())

    @property
    def pre_success(self) -> float | None:
        """Success rate of the pre-update episodes (None for a family without a success flag)."""
        rates = self.pre_batches[0].success_rates()
        return None if rates is None else float(rates.mean())

    @property
    def post_success(self) -> float | None:
        """Success rate of the post-update episodes (None for a family without a success flag)."""
        rates = self.post_batch.success_rates()
        return None if rates is None else float(rates.mean())

    @property
    def num_tasks(self) -> int:
        return self.post_batch.num_tasks

    def select(self, tasks: slice) -> MetaBatch:
        """The part of this meta-batch that belongs to a contiguous range of tasks (its values, views)."""
        if tasks.indices(self.num_tasks) == (0, self.num_tasks, 1):
            return self

        def part(params: Params) -> Params:
            return {n: p[tasks] for n, p in params.items()}

        task_losses = self.task_losses[tasks]
        return MetaBatch(
            loss=task_losses.mean(),
            task_losses=task_losses,
            pre_batches=[b.select_tasks(tasks) for b in self.pre_batches],
            pre_advantages=[a[:, tasks] for a in self.pre_advantages],
            post_batch=self.post_batch.select_tasks(tasks),
            post_advantages=self.post_advantages[:, tasks],
            post_log_probs=self.post_log_probs[:, tasks],
            adapted_params=part(self.adapted_params),
            trajectory=[(part(start), part(grads)) for start, grads in self.trajectory],
            dice_centred=None if self.dice_centred is None else self.dice_centred[tasks],
            task_chunk_size=self.task_chunk_size,
        )

    def parts(self, chunk_size: int | None) -> list[MetaBatch]:
        """This meta-batch as consecutive parts of at most ``chunk_size`` tasks (itself if None)."""
        return [self.select(sl) for sl in task_slices(self.num_tasks, chunk_size)]


def task_slices(num_tasks: int, chunk_size: int | None) -> list[slice]:
    """Consecutive ranges of at most ``chunk_size`` tasks covering ``num_tasks`` (one range if None)."""
    if chunk_size is None or chunk_size >= num_tasks:
        return [slice(0, num_tasks)]
    return [slice(start, min(start + chunk_size, num_tasks)) for start in range(0, num_tasks, chunk_size)]


def leave_one_out_mean(x: torch.Tensor) -> torch.Tensor:
    """For each entry, the mean of the others (0 when there is only one)."""
    n = x.shape[0]
    if n == 1:
        return torch.zeros_like(x)
    return (x.sum() - x) / (n - 1)


Sampler = Callable[[Params, int], EpisodeBatch]
"""``sample(params, k)``: episodes of every task with per-task ``params``; k = 0..K (K: post-update)."""


@dataclass
class Adaptation:
    """Adapted parameters; for DiCE the summed log-probabilities of the episodes that produced them; and,
    detached, each step's starting parameters θ_k and inner gradients g_k (for TRPO's Jacobian products)."""

    params: Params
    sampling_log_prob: torch.Tensor | None
    trajectory: list[tuple[Params, Params]]
    #: the pre-update policy's distribution on the first batch's states (attached; None in a chunked first pass):
    #: what a penalty on the pre-update policy's change (PPO's inner KL) reuses instead of another forward pass
    first_distribution: Any = None


def adapt_tasks(
    policy: Policy,
    step_sizes: StepSizes,
    num_tasks: int,
    next_batch: Callable[[int, Params], tuple[EpisodeBatch, torch.Tensor]],
    *,
    inner_steps: int,
    estimator: str,
    create_graph: bool,
    task_chunk_size: int | None = None,
    keep_first_distribution: bool = False,
) -> Adaptation:
    """K inner steps for all tasks; ``next_batch(k, params)`` gives step k's episodes and advantages.

    ``keep_first_distribution``: return the pre-update policy's distribution on the first batch, attached
    (:attr:`Adaptation.first_distribution`).

    With ``task_chunk_size`` the adapted values are computed without any graph through the inner gradients
    (``create_graph`` must be False), chunk by chunk, and DiCE's sampling log-probabilities are left out:
    the values that rollouts and logs need, in memory that does not grow with the number of tasks.
    """
    if task_chunk_size is not None and create_graph:
        raise ValueError("a chunked adaptation computes values only: it needs create_graph=False")
    params = policy.task_parameters(num_tasks)
    sampling_log_prob = first_distribution = None
    trajectory = []
    for k in range(inner_steps):
        batch, adv = next_batch(k, params)
        form = INNER_FORM[estimator]
        if task_chunk_size is None:
            distribution = batch_distribution(policy, params, batch)
            log_probs = batch_log_probs(policy, params, batch, distribution)
            keep_distribution = k == 0 and keep_first_distribution
            if keep_distribution:
                first_distribution = distribution
            if estimator == "dice":
                step_log_prob = log_probs.sum(dim=(0, 2))
                sampling_log_prob = step_log_prob if sampling_log_prob is None else sampling_log_prob + step_log_prob
            grads = inner_gradients(policy, params, batch, adv, form=form, create_graph=create_graph,
                                    log_probs=log_probs,
                                    # the forward graph is differentiated again later by these
                                    retain_graph=create_graph or keep_distribution or estimator == "dice")
        else:
            parts = [inner_gradients(policy, {n: p[sl] for n, p in params.items()}, batch.select_tasks(sl),
                                     adv[:, sl], form=form, create_graph=False)
                     for sl in task_slices(num_tasks, task_chunk_size)]
            grads = {n: torch.cat([part[n] for part in parts]) for n in params}
        trajectory.append(({n: p.detach() for n, p in params.items()}, {n: g.detach() for n, g in grads.items()}))
        alphas = step_sizes.for_step(k)
        params = {n: p - alphas[n] * grads[n] for n, p in params.items()}
    return Adaptation(params, sampling_log_prob, trajectory, first_distribution)


def post_update_surrogate(
    policy: Policy,
    adaptation: Adaptation,
    post: EpisodeBatch,
    post_advantages: torch.Tensor,
    estimator: str,
    dice_centred: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-task surrogate to *maximise*, ``[T]``, from the post-update episodes, and the adapted policies'
    log-probabilities of them (``[H, T, E]``, attached). ``dice_centred``: see :func:`sampling_term`."""
    log_probs = batch_log_probs(policy, adaptation.params, post)
    form = "score" if estimator == "maml" else "ratio"
    surrogate = pg_surrogate(log_probs, post_advantages, post.mask, form)
    return surrogate + sampling_term(adaptation, post, dice_centred), log_probs


def dice_centring(post: EpisodeBatch) -> torch.Tensor:
    """Each task's post-update value (per-step mean reward) minus the leave-one-out mean of the others'."""
    post_value = masked_task_mean(post.rewards, post.mask)
    return (post_value - leave_one_out_mean(post_value)).detach()


def sampling_term(adaptation: Adaptation, post: EpisodeBatch,
                  centred: torch.Tensor | None = None) -> torch.Tensor | float:
    """DiCE's term for θ choosing the pre-update episodes, per task (value 0; 0 for other estimators).

    Its gradient is ∇ log p(τ) times the post-update return (on the post surrogate's per-step scale),
    centred with the leave-one-out mean over the other tasks (``centred``, by default from ``post``), which
    keeps it unbiased.
    """
    if adaptation.sampling_log_prob is None:
        return 0.0
    centred = dice_centring(post) if centred is None else centred
    return (magic_box(adaptation.sampling_log_prob) - 1.0) * centred


def meta_objective(
    policy: Policy,
    step_sizes: StepSizes,
    sample: Sampler,
    num_tasks: int,
    *,
    inner_steps: int,
    estimator: str,
    advantages: AdvantageConfig,
    first_order: bool,
    task_chunk_size: int | None = None,
) -> MetaBatch:
    """Sample, adapt every task, sample again, and build the estimator's surrogate (differentiable).

    ``sample`` gets the current per-task parameters (it must not differentiate through them); tests pass
    a replay of fixed batches to make the surrogate a deterministic function of θ and α.

    ``task_chunk_size``: build no graph here, only the values (loss, adapted parameters, log-probabilities),
    and let :func:`meta_gradient` differentiate that many tasks at a time: the second-order graph of the
    whole meta-batch is never held at once, at the price of one more (first-order) adaptation.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator={estimator!r} is not allowed; use one of {list(ESTIMATORS)}")
    pre_batches, pre_advantages = [], []
    sampling = 0.0

    def next_batch(k: int, params: Params) -> tuple[EpisodeBatch, torch.Tensor]:
        nonlocal sampling
        start = time.perf_counter()
        pre_batches.append(sample(params, k))
        pre_advantages.append(advantages(pre_batches[-1]))
        sampling += time.perf_counter() - start
        return pre_batches[-1], pre_advantages[-1]

    start = time.perf_counter()
    chunked = task_chunk_size is not None
    adaptation = adapt_tasks(policy, step_sizes, num_tasks, next_batch, inner_steps=inner_steps,
                             estimator=estimator, create_graph=not (first_order or chunked),
                             task_chunk_size=task_chunk_size)
    adapted = time.perf_counter()
    post = sample(adaptation.params, inner_steps)
    post_adv = advantages(post)
    sampled = time.perf_counter()
    centred = dice_centring(post) if estimator == "dice" else None
    if not chunked:
        surrogate, post_log_probs = post_update_surrogate(policy, adaptation, post, post_adv, estimator, centred)
        adapted_params = adaptation.params
    else:
        adapted_params = {n: p.detach() for n, p in adaptation.params.items()}
        with torch.no_grad():
            parts = [post_update_surrogate(policy, Adaptation({n: p[sl] for n, p in adapted_params.items()}, None, []),
                                           post.select_tasks(sl), post_adv[:, sl], estimator)
                     for sl in task_slices(num_tasks, task_chunk_size)]
        surrogate = torch.cat([part[0] for part in parts])
        post_log_probs = torch.cat([part[1] for part in parts], dim=1)
    task_losses = -surrogate
    timings = {"sampling": sampling + sampled - adapted, "adaptation": adapted - start - sampling,
               "objective": time.perf_counter() - sampled}
    return MetaBatch(
        loss=task_losses.mean(),
        task_losses=task_losses,
        pre_batches=pre_batches,
        pre_advantages=pre_advantages,
        post_batch=post,
        post_advantages=post_adv,
        post_log_probs=post_log_probs.detach(),
        adapted_params=adapted_params,
        trajectory=adaptation.trajectory,
        timings=timings,
        dice_centred=centred,
        task_chunk_size=task_chunk_size,
    )


def meta_gradient(policy: Policy, step_sizes: StepSizes, batch: MetaBatch, params: Sequence[torch.Tensor], *,
                  estimator: str, first_order: bool) -> list[torch.Tensor]:
    """The gradient of ``batch.loss`` w.r.t. ``params`` (zeros for those it does not depend on).

    For a batch built with a ``task_chunk_size``, each chunk of tasks is re-adapted from its recorded
    episodes with the full graph, differentiated and freed before the next: the sum over chunks is the
    gradient of the mean over tasks, with the memory of one chunk.
    """
    params = list(params)
    if batch.task_chunk_size is None:
        return list(torch.autograd.grad(batch.loss, params, retain_graph=True, allow_unused=True,
                                        materialize_grads=True))
    total: list[torch.Tensor] | None = None
    for part in batch.parts(batch.task_chunk_size):
        adaptation = replay_adaptation(policy, step_sizes, part, estimator=estimator, create_graph=not first_order)
        surrogate, _ = post_update_surrogate(policy, adaptation, part.post_batch, part.post_advantages, estimator,
                                             part.dice_centred)
        loss = -surrogate.sum() / batch.num_tasks
        grads = torch.autograd.grad(loss, params, allow_unused=True, materialize_grads=True)
        total = list(grads) if total is None else [t + g for t, g in zip(total, grads, strict=True)]
    assert total is not None
    return total


def replay_adaptation(
    policy: Policy, step_sizes: StepSizes, batch: MetaBatch, *, estimator: str, create_graph: bool,
    keep_first_distribution: bool = False,
) -> Adaptation:
    """Adapt again, at the current (θ, α), from the pre-update episodes recorded in ``batch``."""
    return adapt_tasks(
        policy, step_sizes, batch.num_tasks, lambda k, _: (batch.pre_batches[k], batch.pre_advantages[k]),
        inner_steps=len(batch.pre_batches), estimator=estimator, create_graph=create_graph,
        keep_first_distribution=keep_first_distribution,
    )


def rollout_sampler(
    family: TaskFamily,
    policy: Policy,
    tasks: Sequence[Task],
    episodes_per_task: int,
    inner_steps: int,
    seed: int | np.random.SeedSequence,
    device: torch.device | str = "cpu",
    sample_fn: Callable[..., EpisodeBatch] = sample_episodes,
) -> Sampler:
    """The real sampler: rollouts in the family's vector env, one seed stream per inner step.

    ``sample_fn`` has the signature of :func:`~metasgd_rl.sampler.sample_episodes` (e.g. a
    :class:`~metasgd_rl.ray_sampler.RaySampler`).
    """
    ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(int(seed))
    seeds = ss.spawn(inner_steps + 1)
    tasks = list(tasks)

    def sample(params: Params, k: int) -> EpisodeBatch:
        return sample_fn(family, policy, params, tasks, episodes_per_task, seeds[k], device)

    return sample
