"""Advantages against straightforward per-task, per-episode numpy implementations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metasgd_rl.advantages import compute_advantages, discounted_sum, solve_least_squares
from metasgd_rl.sampler import EpisodeBatch

H, T, E, OBS_DIM = 12, 3, 4, 2
LENGTHS = np.array([[12, 5, 1, 8], [3, 12, 12, 7], [9, 2, 6, 4]])  # [T, E]: episodes of different lengths


def make_batch(seed: int = 0) -> EpisodeBatch:
    rng = np.random.default_rng(seed)
    mask = (np.arange(H)[:, None, None] < LENGTHS[None]).astype(np.float32)
    obs = rng.normal(size=(H, T, E, OBS_DIM)).astype(np.float32)  # garbage off-mask: must be ignored
    rewards = (rng.normal(size=(H, T, E)) * mask).astype(np.float32)
    rewards += np.arange(T, dtype=np.float32)[None, :, None] * mask  # tasks differ in scale
    return EpisodeBatch(
        torch.from_numpy(obs), torch.zeros(H, T, E, 2), torch.from_numpy(rewards), torch.from_numpy(mask)
    )


def returns_to_go(rewards: np.ndarray, gamma: float) -> np.ndarray:
    out, running = np.zeros(len(rewards)), 0.0
    for h in reversed(range(len(rewards))):
        running = rewards[h] + gamma * running
        out[h] = running
    return out


def features(o: np.ndarray, h: int) -> np.ndarray:
    s = h / 100.0
    return np.concatenate([o, o**2, [s, s**2, s**3, 1.0]])


def reference_advantages(batch: EpisodeBatch, gamma: float, lam: float, baseline: str) -> np.ndarray:
    obs = batch.observations.numpy().astype(np.float64)
    rewards = batch.rewards.numpy().astype(np.float64)
    mask = batch.mask.numpy()
    adv = np.zeros(rewards.shape)
    for t in range(T):
        lengths = [int(mask[:, t, e].sum()) for e in range(E)]
        if baseline == "none":
            for e, n in enumerate(lengths):
                adv[:n, t, e] = returns_to_go(rewards[:n, t, e], gamma)
            continue
        x = np.array([features(obs[h, t, e], h) for e, n in enumerate(lengths) for h in range(n)])
        y = np.concatenate([returns_to_go(rewards[:n, t, e], gamma) for e, n in enumerate(lengths)])
        coef = np.linalg.solve(x.T @ x + 1e-5 * np.eye(x.shape[1]), x.T @ y)
        for e, n in enumerate(lengths):
            values = [features(obs[h, t, e], h) @ coef for h in range(n)] + [0.0]  # V after the end = 0
            running = 0.0
            for h in reversed(range(n)):
                delta = rewards[h, t, e] + gamma * values[h + 1] - values[h]
                running = delta + gamma * lam * running
                adv[h, t, e] = running
    return adv


@pytest.mark.parametrize("factor", [0.0, 0.5, 0.99, 1.0])
@pytest.mark.parametrize("shape", [(7,), (7, 3, 2)])
def test_discounted_sum_matches_reversed_loop(factor, shape):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    expected = torch.zeros_like(x)
    running = torch.zeros_like(x[0])
    for h in reversed(range(shape[0])):
        running = x[h] + factor * running
        expected[h] = running
    torch.testing.assert_close(discounted_sum(x, factor), expected)


@pytest.mark.parametrize("lam", [1.0, 0.95])
@pytest.mark.parametrize("gamma", [0.99, 0.9])
def test_gae_with_linear_baseline_matches_numpy(gamma, lam):
    batch = make_batch()
    adv = compute_advantages(batch, gamma=gamma, gae_lambda=lam, baseline="linear", normalize=False)
    assert adv.shape == (H, T, E)
    assert not adv.requires_grad
    expected = reference_advantages(batch, gamma, lam, "linear")
    np.testing.assert_allclose(adv.numpy(), expected, rtol=1e-4, atol=1e-4)


def test_linear_baseline_changes_the_advantages():
    """The reference is sensitive to the baseline: with it, advantages differ from returns-to-go."""
    batch = make_batch()
    with_baseline = reference_advantages(batch, 0.99, 1.0, "linear")
    without = reference_advantages(batch, 0.99, 1.0, "none")
    assert np.abs(with_baseline - without).max() > 0.1


@pytest.mark.parametrize("gamma", [1.0, 0.9])
def test_no_baseline_gives_discounted_returns_to_go(gamma):
    batch = make_batch(1)
    for lam in (1.0, 0.5):  # λ plays no part without a baseline
        adv = compute_advantages(batch, gamma=gamma, gae_lambda=lam, baseline="none", normalize=False)
        np.testing.assert_allclose(adv.numpy(), reference_advantages(batch, gamma, lam, "none"), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("baseline", ["linear", "none"])
def test_normalisation_is_per_task_over_valid_steps(baseline):
    batch = make_batch(2)
    mask = batch.mask.numpy().astype(bool)
    raw = reference_advantages(batch, 0.99, 0.95, baseline)
    adv = compute_advantages(batch, gamma=0.99, gae_lambda=0.95, baseline=baseline, normalize=True).numpy()
    assert np.all(adv[~mask] == 0)
    for t in range(T):
        valid = adv[:, t][mask[:, t]]
        assert abs(valid.mean()) < 1e-5
        assert valid.std() == pytest.approx(1.0, abs=1e-4)
        ref = raw[:, t][mask[:, t]]
        np.testing.assert_allclose(valid, (ref - ref.mean()) / ref.std(), rtol=1e-3, atol=1e-3)


def test_unknown_baseline_is_rejected():
    with pytest.raises(ValueError, match="'critic'"):
        compute_advantages(make_batch(), baseline="critic")


def leave_integers_behind(fill: int, size: int) -> None:
    """Free an int32 buffer holding ``fill``: the allocator may hand its memory to the next solver workspace."""
    junk = torch.full((size,), fill, dtype=torch.int32)
    del junk


def test_least_squares_does_not_depend_on_leftover_memory():
    """torch's default CPU lstsq driver read a pivot array it never initialised (pytorch#187411): the first
    system's solution followed whatever integers were left in memory, so evaluations differed between processes."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 40, 12, dtype=torch.float64, generator=g)
    a = x.transpose(1, 2) @ x + 1e-5 * torch.eye(12, dtype=torch.float64)
    b = torch.randn(3, 12, 1, dtype=torch.float64, generator=g)
    reference = solve_least_squares(a, b)
    torch.testing.assert_close(reference, torch.linalg.solve(a, b))
    for fill in (1, 2, 3, 7, 11, -1):
        leave_integers_behind(fill, 12)
        assert torch.equal(solve_least_squares(a, b), reference)
        leave_integers_behind(fill, 12)
        assert torch.equal(solve_least_squares(a[0], b[0]), reference[0])


def test_linear_baseline_does_not_depend_on_leftover_memory():
    """The same at the advantages' level, on Meta-World-like features: always-zero observation dimensions and
    scales from 1e-3 to 30 (a Gram matrix with condition ~1e9, where solvers' rounding shows in float32)."""
    rng = np.random.default_rng(3)
    scales = np.array([30, 1, 1e-3, 0, 0, 5, 0, 2], np.float32)
    obs = rng.normal(size=(150, 3, 10, 8)).astype(np.float32) * scales
    rewards = rng.normal(size=(150, 3, 10)).astype(np.float32)
    batch = EpisodeBatch(torch.from_numpy(obs), torch.zeros(150, 3, 10, 2), torch.from_numpy(rewards),
                         torch.ones(150, 3, 10))
    reference = compute_advantages(batch)
    for fill in (1, 2, 3, 7, 11, -1):
        leave_integers_behind(fill, 2 * 8 + 4)
        assert torch.equal(compute_advantages(batch), reference)
