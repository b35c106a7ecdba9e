"""Outer optimisers: TRPO's trust region and Fisher-vector products, PPO and Adam updates, rejection of NaNs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn.utils import parameters_to_vector

from metasgd_rl import MetaSGD
from metasgd_rl.estimators import replay_adaptation
from metasgd_rl.outer import TRPOOuter, conjugate_gradient, mean_kl


def small_model(**kwargs) -> MetaSGD:
    """α in the outer optimiser's vector (joint), so that its Fisher products and steps cover α too."""
    defaults = dict(policy_kwargs=dict(hidden_sizes=(8,), activation="tanh"), meta_batch_size=3,
                    episodes_per_task=4, alpha_optimizer="joint", seed=1)
    model = MetaSGD("Navigation2D-v0", **{**defaults, **kwargs})
    model.family.max_episode_steps = 15
    with torch.no_grad():  # non-uniform α, so that a mix-up between α entries shows
        for a in model.step_sizes.alphas.values():
            a.add_(0.05 * torch.randn(a.shape, generator=torch.Generator().manual_seed(5)))
    return model


def fixed_batch_surrogate_and_kl(model: MetaSGD, batch) -> tuple[float, float]:
    """Importance-weighted surrogate (to maximise) and KL of the adapted policies, on the batch's episodes."""
    post = batch.post_batch
    with torch.no_grad():
        old = {n: p.detach() for n, p in batch.adapted_params.items()}
    params = replay_adaptation(model.policy, model.step_sizes, batch, estimator=model.estimator,
                               create_graph=False).params
    with torch.no_grad():
        obs, actions = post.task_major(post.observations), post.task_major(post.actions)
        log_probs = model.policy.log_prob(obs, actions, params).transpose(0, 1) * post.mask
        ratio = torch.exp(log_probs - batch.post_log_probs)
        surrogate = ((ratio * batch.post_advantages * post.mask).sum((0, 2)) / post.mask.sum((0, 2))).mean()
        return surrogate.item(), mean_kl(model, old, params, post).item()


@pytest.mark.parametrize("kwargs", [dict(), dict(estimator="dice"), dict(first_order=True),
                                    dict(inner_steps=2, alpha_per_step=True), dict(max_kl=1e-3),
                                    dict(meta_batch_size=1)])  # one task: gradients strided as the graph made them
def test_trpo_step_respects_the_kl_bound_and_improves_the_surrogate(kwargs):
    max_kl = kwargs.pop("max_kl", 1e-2)
    model = small_model(outer="trpo", outer_kwargs=dict(max_kl=max_kl), **kwargs)
    batch = model.meta_objective(model.sample_train_tasks(0), 3)
    before_surrogate, _ = fixed_batch_surrogate_and_kl(model, batch)
    before = parameters_to_vector(model.outer_optimizer.params).detach().clone()
    stats = model.outer_optimizer.step(model, batch)
    assert "rejected" not in stats, stats
    after_surrogate, kl = fixed_batch_surrogate_and_kl(model, batch)
    assert 0 < kl <= max_kl
    assert kl > 0.2 * max_kl  # the step uses the trust region rather than crawling
    assert after_surrogate > before_surrogate
    assert stats["kl"] == pytest.approx(kl, rel=1e-4)
    assert not torch.equal(parameters_to_vector(model.outer_optimizer.params), before)


@pytest.mark.parametrize("kwargs", [dict(), dict(estimator="maml"), dict(estimator="dice", alpha_granularity="tensor"),
                                    dict(first_order=True), dict(alpha_granularity="scalar"),
                                    dict(inner_steps=2, alpha_per_step=True), dict(learn_alpha=False),
                                    dict(alpha_parameterization="log"), dict(alpha_optimizer="adam"),
                                    dict(meta_batch_size=1)])
def test_gauss_newton_fvp_equals_the_exact_kl_hessian_through_the_adaptation(kwargs):
    """At the current point the KL's gradient is 0, so its Hessian is exactly Jᵀ F' J."""
    model = small_model(**kwargs)
    batch = model.meta_objective(model.sample_train_tasks(0), 3)
    params = model.outer_optimizer.params
    v = torch.randn(sum(p.numel() for p in params), generator=torch.Generator().manual_seed(0))
    products = {}
    for mode in ("gauss-newton", "exact"):
        trpo = TRPOOuter(params, fvp=mode, cg_damping=0.0, fvp_subsample=1.0)
        products[mode] = trpo.fisher_vector_product(model, batch)(v)
    assert products["exact"].abs().max() > 1e-3
    torch.testing.assert_close(products["gauss-newton"], products["exact"], rtol=1e-4, atol=1e-6)


def test_subsampled_fvp_is_close_to_the_full_one():
    model = small_model(episodes_per_task=8)
    batch = model.meta_objective(model.sample_train_tasks(0), 3)
    params = model.outer_optimizer.params
    v = torch.randn(sum(p.numel() for p in params), generator=torch.Generator().manual_seed(0))
    full = TRPOOuter(params, fvp_subsample=1.0).fisher_vector_product(model, batch)(v)
    half = TRPOOuter(params, fvp_subsample=0.5).fisher_vector_product(model, batch)(v)
    cosine = torch.nn.functional.cosine_similarity(full, half, dim=0)
    assert cosine > 0.8 and not torch.allclose(full, half)


def test_conjugate_gradient_solves_a_spd_system():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((6, 6))
    matrix = torch.tensor(a @ a.T + 6 * np.eye(6))
    b = torch.tensor(rng.standard_normal(6))
    x = conjugate_gradient(lambda v: matrix @ v, b, iters=20)
    torch.testing.assert_close(matrix @ x, b)


@pytest.mark.parametrize("outer", ["trpo", "adam", "ppo"])
def test_every_outer_optimiser_improves_the_adapted_return(outer):
    kwargs = {"adam": dict(lr=3e-3), "ppo": dict(lr=3e-3), "trpo": dict()}[outer]
    model = MetaSGD("Navigation2D-v0", policy_kwargs=dict(hidden_sizes=(32, 32)), meta_batch_size=10,
                    episodes_per_task=10, outer=outer, outer_kwargs=kwargs, seed=0)
    tasks = model.family.sample_tasks(10, np.random.default_rng(7), split="test")
    start = model.meta_objective(tasks, 11).post_return
    model.learn(8 if outer == "trpo" else 25, progress_bar=False)
    end = model.meta_objective(tasks, 11).post_return
    assert end > start + 15, (start, end)


def test_ppo_runs_its_epochs_and_penalises_the_pre_update_kl():
    model = small_model(outer="ppo", outer_kwargs=dict(epochs=3, inner_kl_penalty=1.0))
    stats = model.train_step()
    assert not stats["update_rejected"]
    assert "outer/loss_epoch_0" in stats and "outer/loss_last_epoch" in stats


@pytest.mark.parametrize("estimator", ["lvc", "dice"])
def test_ppo_inner_kl_penalty_reuses_the_adaptation_forward_correctly(estimator):
    """The penalty's KL is taken from the re-adaptation's own forward pass: its value and gradient must equal
    those of a KL computed from scratch (mean_kl) between the step's starting θ and the current θ."""
    model = small_model(outer="ppo", estimator=estimator, outer_kwargs=dict(inner_kl_penalty=1.0))
    batch = model.meta_objective(model.sample_train_tasks(0), 3)
    ppo = model.outer_optimizer
    start = {n: p.detach().clone() for n, p in model.policy.task_parameters(batch.num_tasks).items()}
    old_distribution = model.policy.distribution_params(
        batch.pre_batches[0].task_major(batch.pre_batches[0].observations), start)
    with torch.no_grad():  # as after an epoch: θ has moved, so the KL and its gradient are not 0
        for p in model.policy.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(9)))
    params = list(model.policy.parameters())

    def penalty_and_gradient(loss_fn):
        loss = loss_fn()
        return loss.item(), torch.autograd.grad(loss, params, allow_unused=True, materialize_grads=True)

    def reused():
        adaptation = replay_adaptation(model.policy, model.step_sizes, batch, estimator=estimator,
                                       create_graph=True, keep_first_distribution=True)
        ppo.cfg["inner_kl_penalty"] = 0.0
        without = ppo._loss(model, batch, adaptation, old_distribution)
        ppo.cfg["inner_kl_penalty"] = 1.0
        return ppo._loss(model, batch, adaptation, old_distribution) - without

    def from_scratch():
        current = model.policy.task_parameters(batch.num_tasks)
        return mean_kl(model, start, current, batch.pre_batches[0])

    (value, grads), (expected_value, expected_grads) = penalty_and_gradient(reused), penalty_and_gradient(from_scratch)
    assert expected_value > 1e-4
    assert value == pytest.approx(expected_value, rel=1e-4)
    for g, e in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-3, atol=1e-7)


@pytest.mark.parametrize("outer", ["trpo", "adam", "ppo"])
def test_a_non_finite_update_is_rejected_and_leaves_theta_and_alpha_unchanged(outer):
    model = small_model(outer=outer)
    with torch.no_grad():
        model.policy.log_std.fill_(float("nan"))  # every log-prob, loss and gradient becomes NaN
    before = [p.detach().clone() for p in model.outer_optimizer.params]
    with pytest.warns(RuntimeWarning, match="rejected"):
        info = model.train_step()
    assert info["update_rejected"]
    for p, old in zip(model.outer_optimizer.params, before, strict=True):
        assert torch.equal(p.detach(), old) or (torch.isnan(old).all() and torch.isnan(p).all())
