"""The inner loop: policy-gradient steps that adapt θ to every task of a meta-batch at once.

θ is broadcast to ``[T, ...]``; the per-task inner losses are summed and differentiated with a single
``torch.autograd.grad`` call w.r.t. the broadcast tensors, which yields each task's own gradient (task t's
loss only touches slice t). The step is Meta-SGD's ``θ'_t = θ_t - α ⊙ g_t``. With ``create_graph=True`` the
result stays differentiable w.r.t. θ and α through g_t (second order); without it g_t is a constant, and
θ' still depends on θ (identity) and on α (linearly), which is all α's meta-gradient needs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from metasgd_rl.policies import Params, Policy
from metasgd_rl.sampler import EpisodeBatch


def magic_box(x: torch.Tensor) -> torch.Tensor:
    """DiCE's operator: evaluates to 1, its gradient is ``∇x`` times the value."""
    return torch.exp(x - x.detach())


def masked_task_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x [H, T, E]`` over each task's valid steps, ``[T]``."""
    return (x * mask).sum(dim=(0, 2)) / mask.sum(dim=(0, 2)).clamp(min=1.0)


def batch_distribution(policy: Policy, params: Mapping[str, torch.Tensor], batch: EpisodeBatch) -> Any:
    """The policy's :meth:`distribution_params` at every state of the batch (task-major, per-task parameters)."""
    return policy.distribution_params(batch.task_major(batch.observations), params)


def batch_log_probs(policy: Policy, params: Mapping[str, torch.Tensor], batch: EpisodeBatch,
                    distribution: Any = None) -> torch.Tensor:
    """``log π_{params_t}(a | s)`` for every step of the batch, ``[H, T, E]`` (per-task parameters);
    ``distribution``: the batch's :func:`batch_distribution` if already computed."""
    if distribution is None:
        distribution = batch_distribution(policy, params, batch)
    actions = batch.task_major(batch.actions)
    return policy.dist_log_prob(distribution, actions).transpose(0, 1) * batch.mask


def pg_surrogate(log_probs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, form: str) -> torch.Tensor:
    """Per-task policy-gradient surrogate to *maximise*, ``[T]``.

    ``form="score"``: ``log π · A`` (REINFORCE; its autodiff Hessian holds only the ∇²log π term).
    ``form="ratio"``: ``π / ⊥π · A`` (ProMP's LVC; same gradient, Hessian adds ∇log π ∇log πᵀ A).
    """
    if form == "score":
        weights = log_probs
    elif form == "ratio":
        weights = magic_box(log_probs)
    else:
        raise ValueError(f"unknown surrogate form {form!r}")
    return masked_task_mean(weights * advantages, mask)


def inner_gradients(
    policy: Policy,
    params: Params,
    batch: EpisodeBatch,
    advantages: torch.Tensor,
    form: str = "score",
    create_graph: bool = True,
    log_probs: torch.Tensor | None = None,
    retain_graph: bool | None = None,
) -> Params:
    """Every task's gradient of its inner loss (minus the surrogate) w.r.t. its own slice of ``params``
    (``log_probs``: the batch's :func:`batch_log_probs` under ``params``, if already computed; keep the
    forward graph with ``retain_graph`` if they are differentiated again later)."""
    names = list(params)
    if log_probs is None:
        log_probs = batch_log_probs(policy, params, batch)
    loss = -pg_surrogate(log_probs, advantages, batch.mask, form).sum()
    grads = torch.autograd.grad(
        loss, [params[n] for n in names], create_graph=create_graph, retain_graph=retain_graph, allow_unused=True,
        materialize_grads=True,
    )
    return dict(zip(names, grads, strict=True))


def inner_step(
    policy: Policy,
    params: Params,
    alphas: Mapping[str, torch.Tensor],
    batch: EpisodeBatch,
    advantages: torch.Tensor,
    form: str = "score",
    create_graph: bool = True,
) -> Params:
    """One Meta-SGD step for all tasks: ``θ'_t = θ_t - α ⊙ ∇ L_t(θ_t)`` with ``L_t`` = minus the surrogate."""
    grads = inner_gradients(policy, params, batch, advantages, form, create_graph)
    return {n: p - alphas[n] * grads[n] for n, p in params.items()}
