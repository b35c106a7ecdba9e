"""The meta-gradient: estimators against a closed form, every path of θ and α against finite differences."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metasgd_rl import MetaSGD
from metasgd_rl.estimators import meta_objective, rollout_sampler
from metasgd_rl.sampler import EpisodeBatch
from tests.bandit import BanditFamily, closed_form_gradient, closed_form_objective

SIGMA, ALPHA, EPISODES, GOAL = 0.5, 0.05, 4, 1.0
TASKS, REPEATS = 1000, 30


def bandit_model(estimator: str, **kwargs) -> MetaSGD:
    """Linear Gaussian policy whose mean is its bias (the observation is 0), fixed std: μ = 0 at init."""
    return MetaSGD(
        BanditFamily(GOAL, GOAL),
        policy_kwargs=dict(hidden_sizes=(), init_std=SIGMA, learn_std=False),
        meta_batch_size=TASKS, episodes_per_task=EPISODES, alpha_init=ALPHA, estimator=estimator,
        baseline="none", gamma=1.0, normalize_advantages=False, seed=0, **kwargs,
    )


def sampled_meta_gradients(estimator: str) -> tuple[np.ndarray, np.ndarray]:
    """``REPEATS`` meta-gradient estimates (each averaged over ``TASKS`` tasks) of F w.r.t. μ and α."""
    model = bandit_model(estimator)
    tasks = model.family.sample_tasks(TASKS, np.random.default_rng(0))
    d_mu, d_alpha = [], []
    for r in range(REPEATS):
        model.policy.zero_grad()
        model.step_sizes.zero_grad()
        model.meta_loss(tasks, seed=r).backward()  # loss = -F: flip the sign
        d_mu.append(-model.policy.layers[0].bias.grad.item())
        d_alpha.append(-model.step_sizes.alphas["layers__0__bias"].grad.item())
    return np.array(d_mu), np.array(d_alpha)


def z_score(samples: np.ndarray, target: float) -> float:
    return abs(samples.mean() - target) / (samples.std(ddof=1) / np.sqrt(len(samples)))


@pytest.fixture(scope="module")
def estimates() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {est: sampled_meta_gradients(est) for est in ("maml", "lvc", "dice")}


def test_closed_form_matches_monte_carlo():
    """The closed form itself: F by simulation of the sampled inner step."""
    rng = np.random.default_rng(1)
    a = SIGMA * rng.standard_normal((200_000, EPISODES))
    r = -((a - GOAL) ** 2)
    theta = ALPHA * (a / SIGMA**2 * r).mean(1)
    mc = -((theta - GOAL) ** 2 + SIGMA**2)
    expected = closed_form_objective(0.0, ALPHA, SIGMA, EPISODES, GOAL)
    assert abs(mc.mean() - expected) < 4 * mc.std() / np.sqrt(len(mc))


def test_dice_is_unbiased_for_theta(estimates):
    true_mu, _ = closed_form_gradient(0.0, ALPHA, SIGMA, EPISODES, GOAL)
    assert z_score(estimates["dice"][0], true_mu) < 4


def test_maml_misses_the_sampling_term_for_theta(estimates):
    true_mu, _ = closed_form_gradient(0.0, ALPHA, SIGMA, EPISODES, GOAL)
    d_mu = estimates["maml"][0]
    assert z_score(d_mu, true_mu) > 10
    assert d_mu.mean() - true_mu > 0.3  # the missing term: ≈ -0.58 at this point


def test_lvc_is_closer_than_maml_for_theta(estimates):
    true_mu, _ = closed_form_gradient(0.0, ALPHA, SIGMA, EPISODES, GOAL)
    assert abs(estimates["lvc"][0].mean() - true_mu) < 0.5 * abs(estimates["maml"][0].mean() - true_mu)


@pytest.mark.parametrize("estimator", ["maml", "lvc", "dice"])
def test_alpha_gradient_is_unbiased(estimates, estimator):
    _, true_alpha = closed_form_gradient(0.0, ALPHA, SIGMA, EPISODES, GOAL)
    d_alpha = estimates[estimator][1]
    assert z_score(d_alpha, true_alpha) < 4
    assert abs(d_alpha.mean()) > 10 * d_alpha.std(ddof=1) / np.sqrt(len(d_alpha))  # clearly non-zero


# -- deterministic checks on replayed batches ------------------------------------------------------------


def small_nav_model(**kwargs) -> MetaSGD:
    defaults = dict(
        policy_kwargs=dict(hidden_sizes=(8,), activation="tanh"), meta_batch_size=3, episodes_per_task=4,
        estimator="maml", seed=3,
    )
    model = MetaSGD("Navigation2D-v0", **{**defaults, **kwargs})
    model.family.max_episode_steps = 12  # short episodes keep finite differences cheap
    model.policy.double()
    model.step_sizes.double()
    with torch.no_grad():  # non-uniform α so that a wrong α-to-parameter mapping shows
        for a in model.step_sizes.alphas.values():
            a.add_(0.05 * torch.randn(a.shape, generator=torch.Generator().manual_seed(7), dtype=a.dtype))
    return model


def double(batch: EpisodeBatch) -> EpisodeBatch:
    return EpisodeBatch(batch.observations.double(), batch.actions.double(), batch.rewards.double(),
                        batch.mask.double(), batch.tasks)


def record(model: MetaSGD, tasks) -> list[EpisodeBatch]:
    """Episodes of one real meta-objective evaluation, to be replayed."""
    sample = rollout_sampler(model.family, model.policy, tasks, model.episodes_per_task, model.inner_steps, 11)
    batches = []

    def recording(params, k):
        batch = sample(params, k)
        batches.append(double(batch))
        return batch

    model.policy.float()
    try:
        meta_objective(model.policy, model.step_sizes.float(), recording, len(tasks),
                       inner_steps=model.inner_steps, estimator="maml", advantages=model.advantages,
                       first_order=True)
    finally:
        model.policy.double()
        model.step_sizes.double()
    return batches


def replayed_loss(model: MetaSGD, batches: list[EpisodeBatch], task_slice=slice(None), estimator=None,
                  first_order=None):
    def replay(params, k):
        b = batches[k]
        return EpisodeBatch(*(t[:, task_slice] for t in (b.observations, b.actions, b.rewards, b.mask)))

    num_tasks = batches[0].rewards[:, task_slice].shape[1]
    return meta_objective(
        model.policy, model.step_sizes, replay, num_tasks, inner_steps=model.inner_steps,
        estimator=estimator or model.estimator, advantages=model.advantages,
        first_order=model.first_order if first_order is None else first_order,
    )


def all_tensors(model: MetaSGD) -> dict[str, torch.Tensor]:
    return {**{f"theta:{n}": p for n, p in model.policy.adaptable_parameters().items()},
            **{f"alpha:{n}": a for n, a in model.step_sizes.alphas.items() if a.requires_grad}}


def finite_difference_check(model: MetaSGD, batches, names, first_order: bool, eps: float = 1e-6):
    """Compare autograd with central differences on 3 random elements of each named tensor."""
    tensors = all_tensors(model)
    loss = replayed_loss(model, batches, first_order=first_order).loss
    grads = dict(zip(names, torch.autograd.grad(loss, [tensors[n] for n in names]), strict=True))
    rng = np.random.default_rng(0)
    mismatches = []
    for name in names:
        t = tensors[name]
        for flat in rng.choice(t.numel(), size=min(3, t.numel()), replace=False):
            idx = np.unravel_index(flat, t.shape)
            values = []
            for shift in (eps, -2 * eps):
                with torch.no_grad():
                    t[idx] += shift
                values.append(replayed_loss(model, batches, first_order=first_order).loss.item())
            with torch.no_grad():
                t[idx] += eps
            up, down = values
            fd, ad = (up - down) / (2 * eps), grads[name][idx].item()
            if not np.isclose(ad, fd, rtol=1e-4, atol=1e-8):
                mismatches.append((name, idx, ad, fd))
    return grads, mismatches


def test_second_order_gradient_matches_finite_differences():
    model = small_nav_model()
    batches = record(model, model.sample_train_tasks(0))
    names = list(all_tensors(model))
    grads, mismatches = finite_difference_check(model, batches, names, first_order=False)
    assert not mismatches, mismatches
    assert all(g.abs().sum() > 0 for g in grads.values())


def test_first_order_keeps_alpha_exact_and_drops_the_theta_curvature():
    model = small_nav_model(first_order=True)
    batches = record(model, model.sample_train_tasks(0))
    alpha_names = [n for n in all_tensors(model) if n.startswith("alpha:")]
    grads, mismatches = finite_difference_check(model, batches, alpha_names, first_order=True)
    assert not mismatches, mismatches
    assert all(g.abs().sum() > 0 for g in grads.values())
    theta_names = [n for n in all_tensors(model) if n.startswith("theta:")]
    _, theta_mismatches = finite_difference_check(model, batches, theta_names, first_order=True)
    assert theta_mismatches  # first order ignores ∂g/∂θ: it must not agree with the full derivative


def test_two_inner_steps_with_per_step_alpha_match_finite_differences():
    model = small_nav_model(inner_steps=2, alpha_per_step=True)
    batches = record(model, model.sample_train_tasks(0))
    assert len(batches) == 3
    names = list(all_tensors(model))
    grads, mismatches = finite_difference_check(model, batches, names, first_order=False)
    assert not mismatches, mismatches
    for name, g in grads.items():
        if name.startswith("alpha:"):
            assert g.shape[0] == 2 and (g[0].abs().sum() > 0) and (g[1].abs().sum() > 0), name


@pytest.mark.parametrize("estimator", ["maml", "lvc"])
def test_every_task_reaches_theta_and_alpha_and_only_its_own_slice(estimator):
    """Batched adaptation of T tasks equals T single-task adaptations on the same episodes."""
    model = small_nav_model(estimator=estimator)
    batches = record(model, model.sample_train_tasks(0))
    tensors = all_tensors(model)
    batched = replayed_loss(model, batches).task_losses
    for t in range(batched.shape[0]):
        together = torch.autograd.grad(batched[t], list(tensors.values()), retain_graph=True)
        alone = torch.autograd.grad(replayed_loss(model, batches, slice(t, t + 1)).loss, list(tensors.values()))
        for name, g_together, g_alone in zip(tensors, together, alone, strict=True):
            assert g_together.abs().sum() > 0, f"task {t} does not reach {name}"
            torch.testing.assert_close(g_together, g_alone, msg=f"task {t}, {name}")


def test_estimators_differ_in_theta_but_agree_in_alpha_on_the_same_episodes():
    model = small_nav_model()
    batches = record(model, model.sample_train_tasks(0))
    tensors = all_tensors(model)
    grads = {}
    for est in ("maml", "lvc", "dice"):
        loss = replayed_loss(model, batches, estimator=est).loss
        grads[est] = dict(zip(tensors, torch.autograd.grad(loss, list(tensors.values())), strict=True))
    for name in tensors:
        if name.startswith("alpha:"):  # K = 1: no estimator changes α's gradient
            torch.testing.assert_close(grads["maml"][name], grads["lvc"][name])
            torch.testing.assert_close(grads["maml"][name], grads["dice"][name])
    weight = "theta:layers.0.weight"
    assert not torch.allclose(grads["maml"][weight], grads["lvc"][weight])
    assert not torch.allclose(grads["maml"][weight], grads["dice"][weight])


@pytest.mark.parametrize("outer", ["trpo", "adam", "ppo"])
def test_first_order_mode_still_moves_alpha(outer):
    model = MetaSGD("Navigation2D-v0", policy_kwargs=dict(hidden_sizes=(16,)), meta_batch_size=4,
                    episodes_per_task=4, first_order=True, outer=outer, seed=0)
    before = {n: a.detach().clone() for n, a in model.step_sizes.alphas.items()}
    info = model.train_step()
    assert not info["update_rejected"]
    for n, a in model.step_sizes.alphas.items():
        assert not torch.equal(a.detach(), before[n]), n


@pytest.mark.parametrize("outer", ["trpo", "adam", "ppo"])
def test_fixed_alpha_does_not_move(outer):
    model = MetaSGD("Navigation2D-v0", policy_kwargs=dict(hidden_sizes=(16,)), meta_batch_size=4,
                    episodes_per_task=4, learn_alpha=False, outer=outer, seed=0)
    before = {n: a.detach().clone() for n, a in model.step_sizes.alphas.items()}
    model.train_step()
    for n, a in model.step_sizes.alphas.items():
        assert torch.equal(a.detach(), before[n]), n
