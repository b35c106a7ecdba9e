"""Returns, value baselines and advantages for a batch of episodes, per task and without gradients.

The linear feature baseline is MAML-RL's (Duan et al. 2016): per task, a ridge regression of the
discounted return-to-go on ``[obs, obs^2, t, t^2, t^3, 1]`` (t = step / 100), refit on every batch. All
tasks are fitted at once with one batched least-squares solve.

The solve uses LAPACK's SVD driver ``gelsd`` on CPU (as numpy's ``lstsq`` in MAML-RL's baseline does), not
torch's default ``gelsy``: torch 2.13's ``gelsy`` leaves its column-pivot array uninitialised (pytorch#187411),
so the first task's fit depended on whatever memory the allocator handed back. Evaluations then differed
between processes and between calls of one process. ``gelsd`` gives the same fit for the same batch, always.
"""

from __future__ import annotations

import torch

from metasgd_rl.sampler import EpisodeBatch

BASELINES = ("linear", "none")


def discount_matrix(horizon: int, factor: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``D[h, k] = factor^(k-h)`` for ``k >= h`` else 0, so that ``D @ x`` sums discounted futures."""
    steps = torch.arange(horizon, device=device, dtype=dtype)
    power = steps.unsqueeze(0) - steps.unsqueeze(1)
    return torch.where(power >= 0, torch.as_tensor(factor, dtype=dtype, device=device) ** power.clamp(min=0), 0.0)


def discounted_sum(x: torch.Tensor, factor: float) -> torch.Tensor:
    """``y[h] = sum_{k >= h} factor^(k-h) x[k]`` along the leading (time) axis."""
    d = discount_matrix(x.shape[0], factor, x.dtype, x.device)
    return torch.tensordot(d, x, dims=1)


def linear_features(batch: EpisodeBatch) -> torch.Tensor:
    """MAML-RL's baseline features, ``[H, T, E, 2 * obs_dim + 4]``, zero where the mask is 0."""
    obs = batch.observations
    mask = batch.mask.unsqueeze(-1)
    t = torch.arange(batch.horizon, dtype=obs.dtype, device=obs.device).reshape(-1, 1, 1, 1) / 100.0
    t = t.expand(*obs.shape[:-1], 1)
    feats = torch.cat([obs, obs.pow(2), t, t.pow(2), t.pow(3), torch.ones_like(t)], dim=-1)
    return feats * mask


def solve_least_squares(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Batched least-squares solution of ``a x = b``, deterministic for the same inputs (see the module doc).

    CUDA offers only the QR driver ``gels``, which needs full rank: the ridge term of the baseline gives it.
    """
    driver = "gelsd" if a.device.type == "cpu" else "gels"
    return torch.linalg.lstsq(a, b, driver=driver).solution


def fit_linear_baseline(batch: EpisodeBatch, returns: torch.Tensor, reg: float = 1e-5) -> torch.Tensor:
    """Per-task ridge fit of ``returns [H, T, E]``; returns the fitted values ``[H, T, E]`` (0 off-mask)."""
    feats = linear_features(batch).double()
    x = feats.transpose(0, 1).reshape(batch.num_tasks, -1, feats.shape[-1])  # [T, H*E, F]
    y = returns.double().transpose(0, 1).reshape(batch.num_tasks, -1, 1)
    if not (torch.isfinite(x).all() and torch.isfinite(y).all()):  # LAPACK rejects NaNs: propagate them instead
        return torch.full_like(returns, float("nan")) * batch.mask
    gram = x.transpose(1, 2) @ x
    eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
    coef = solve_least_squares(gram + reg * eye, x.transpose(1, 2) @ y)  # [T, F, 1]
    values = torch.einsum("htef,tfo->hte", feats, coef)
    return values.to(returns.dtype) * batch.mask


def normalize_per_task(adv: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Zero mean, unit variance over each task's valid steps (``[H, T, E]``)."""
    count = mask.sum(dim=(0, 2), keepdim=True).clamp(min=1.0)
    mean = (adv * mask).sum(dim=(0, 2), keepdim=True) / count
    var = ((adv - mean).pow(2) * mask).sum(dim=(0, 2), keepdim=True) / count
    return (adv - mean) / (var.sqrt() + eps) * mask


@torch.no_grad()
def compute_advantages(
    batch: EpisodeBatch,
    gamma: float = 0.99,
    gae_lambda: float = 1.0,
    baseline: str = "linear",
    normalize: bool = True,
) -> torch.Tensor:
    """Detached advantages ``[H, T, E]``: GAE(γ, λ) on the baseline's values (returns-to-go if none)."""
    if baseline not in BASELINES:
        raise ValueError(f"baseline={baseline!r} is not allowed; use one of {list(BASELINES)}")
    rewards, mask = batch.rewards, batch.mask
    if baseline == "none":
        adv = discounted_sum(rewards, gamma)
    else:
        values = fit_linear_baseline(batch, discounted_sum(rewards, gamma))
        next_values = torch.cat([values[1:], torch.zeros_like(values[:1])])
        deltas = (rewards + gamma * next_values - values) * mask
        adv = discounted_sum(deltas, gamma * gae_lambda)
    adv = adv * mask
    return normalize_per_task(adv, mask) if normalize else adv
