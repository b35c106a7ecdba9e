"""Policies: task-batched evaluation against per-task loops and torch.distributions, seeding, validation."""

from __future__ import annotations

import math
import re

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch.distributions import Categorical, Normal, kl_divergence

from metasgd_rl.policies import CategoricalMLPPolicy, GaussianMLPPolicy, make_policy

T, N, OBS_DIM, ACT_DIM, N_ACTIONS = 4, 5, 3, 2, 4
ACTS = {"relu": torch.relu, "tanh": torch.tanh}


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def gaussian(**kwargs) -> GaussianMLPPolicy:
    kwargs = {"hidden_sizes": (8, 6), "activation": "tanh", "generator": gen(0), **kwargs}
    return GaussianMLPPolicy(OBS_DIM, ACT_DIM, **kwargs)


def categorical(**kwargs) -> CategoricalMLPPolicy:
    kwargs = {"hidden_sizes": (8, 6), "activation": "tanh", "generator": gen(0), **kwargs}
    return CategoricalMLPPolicy(OBS_DIM, N_ACTIONS, **kwargs)


def per_task_params(policy, num_tasks: int, seed: int, scale: float = 0.5) -> dict[str, torch.Tensor]:
    """θ perturbed differently for every task: ``[num_tasks, *shape]`` (log-std too, when it is learnable)."""
    g = gen(seed)
    return {
        n: p.detach().unsqueeze(0) + scale * torch.randn((num_tasks, *p.shape), generator=g)
        for n, p in policy.adaptable_parameters().items()
    }


def task_slice(params: dict[str, torch.Tensor], t: int) -> dict[str, torch.Tensor]:
    return {n: p[t] for n, p in params.items()}


def reference_trunk(policy, params: dict[str, torch.Tensor], obs: torch.Tensor) -> torch.Tensor:
    """The MLP written out by hand for one unbatched parameter set."""
    x = obs
    n_layers = len(policy.hidden_sizes) + 1
    for i in range(n_layers):
        x = x @ params[f"layers.{i}.weight"].T + params[f"layers.{i}.bias"]
        if i < n_layers - 1:
            x = ACTS[policy.activation](x)
    return x


def reference_normal(policy, params, obs) -> Normal:
    log_std = params["log_std"] if "log_std" in params else policy.log_std
    mean = reference_trunk(policy, params, obs)
    return Normal(mean, log_std.exp().expand_as(mean))


def reference_categorical(policy, params, obs) -> Categorical:
    return Categorical(logits=reference_trunk(policy, params, obs))


def close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-5) -> None:
    assert a.shape == b.shape, (a.shape, b.shape)
    torch.testing.assert_close(a, b, atol=tol, rtol=tol)


# -- task-batched evaluation == a loop over tasks ----------------------------------------------------


@pytest.mark.parametrize("extra", [(N,), (3, 2)], ids=["obs[T,N,d]", "obs[T,H,E,d]"])
@pytest.mark.parametrize("learn_std", [True, False])
def test_gaussian_batched_equals_per_task_loop(extra, learn_std):
    policy = gaussian(learn_std=learn_std, init_std=0.7)
    p, q = per_task_params(policy, T, seed=1), per_task_params(policy, T, seed=2)
    g = gen(3)
    obs = torch.randn((T, *extra, OBS_DIM), generator=g)
    actions = torch.randn((T, *extra, ACT_DIM), generator=g)

    mean, log_std = policy.distribution_params(obs, p)
    logp = policy.log_prob(obs, actions, p)
    kl = policy.kl(obs, p, q)
    ent = policy.entropy(obs, p)
    assert logp.shape == kl.shape == ent.shape == (T, *extra)
    assert mean.shape == (T, *extra, ACT_DIM)
    for t in range(T):
        pt, qt = task_slice(p, t), task_slice(q, t)
        # the library's own unbatched path ...
        m_t, ls_t = policy.distribution_params(obs[t], pt)
        close(mean[t], m_t)
        close(log_std.expand_as(mean)[t], ls_t.expand_as(m_t))
        close(logp[t], policy.log_prob(obs[t], actions[t], pt))
        close(kl[t], policy.kl(obs[t], pt, qt))
        close(ent[t], policy.entropy(obs[t], pt))
        # ... and an independent one: the MLP by hand and torch.distributions
        dp, dq = reference_normal(policy, pt, obs[t]), reference_normal(policy, qt, obs[t])
        close(mean[t], dp.mean)
        close(log_std.exp().expand_as(mean)[t], dp.stddev)
        close(logp[t], dp.log_prob(actions[t]).sum(-1))
        close(kl[t], kl_divergence(dp, dq).sum(-1))
        close(ent[t], dp.entropy().sum(-1))


@pytest.mark.parametrize("extra", [(N,), (3, 2)], ids=["obs[T,N,d]", "obs[T,H,E,d]"])
def test_categorical_batched_equals_per_task_loop(extra):
    policy = categorical()
    p, q = per_task_params(policy, T, seed=1, scale=2.0), per_task_params(policy, T, seed=2, scale=2.0)
    g = gen(3)
    obs = torch.randn((T, *extra, OBS_DIM), generator=g)
    actions = torch.randint(0, N_ACTIONS, (T, *extra), generator=g)

    logits = policy.distribution_params(obs, p)
    logp = policy.log_prob(obs, actions, p)
    kl = policy.kl(obs, p, q)
    ent = policy.entropy(obs, p)
    assert logits.shape == (T, *extra, N_ACTIONS)
    assert logp.shape == kl.shape == ent.shape == (T, *extra)
    for t in range(T):
        pt, qt = task_slice(p, t), task_slice(q, t)
        close(logits[t], policy.distribution_params(obs[t], pt))
        close(logp[t], policy.log_prob(obs[t], actions[t], pt))
        close(kl[t], policy.kl(obs[t], pt, qt))
        close(ent[t], policy.entropy(obs[t], pt))
        dp, dq = reference_categorical(policy, pt, obs[t]), reference_categorical(policy, qt, obs[t])
        close(logits[t], dp.logits)  # normalised log-probabilities
        close(logp[t], dp.log_prob(actions[t]))
        close(kl[t], kl_divergence(dp, dq))
        close(ent[t], dp.entropy())


def test_tasks_really_use_their_own_parameters():
    """Guard against the batched path silently using one task's parameters for all."""
    policy = gaussian()
    p = per_task_params(policy, T, seed=1)
    obs = torch.randn(1, N, OBS_DIM, generator=gen(2)).expand(T, N, OBS_DIM)
    mean, _ = policy.distribution_params(obs, p)
    for t in range(1, T):
        assert not torch.allclose(mean[0], mean[t], atol=1e-3)


def test_wrong_number_of_tasks_is_rejected():
    policy = gaussian()
    with pytest.raises(ValueError, match="3 tasks.*4"):
        policy.distribution_params(torch.zeros(3, N, OBS_DIM), per_task_params(policy, T, seed=0))


def test_no_params_means_theta():
    policy = gaussian()
    obs = torch.randn(N, OBS_DIM, generator=gen(1))
    theta = {n: p.detach() for n, p in policy.named_parameters()}
    mean, log_std = policy.distribution_params(obs)
    close(mean, reference_trunk(policy, theta, obs))
    close(log_std, theta["log_std"])


# -- gradients through task_parameters -------------------------------------------------------------


@pytest.mark.parametrize("make", [gaussian, categorical], ids=["gaussian", "categorical"])
def test_task_parameters_gradient_is_sum_of_per_task_gradients(make):
    policy = make()
    g = gen(4)
    obs = torch.randn(T, N, OBS_DIM, generator=g)
    if isinstance(policy, GaussianMLPPolicy):
        actions = torch.randn(T, N, ACT_DIM, generator=g)
    else:
        actions = torch.randint(0, N_ACTIONS, (T, N), generator=g)
    weights = torch.arange(1.0, T + 1.0)  # different loss per task

    params = policy.task_parameters(T)
    names = list(params)
    for n in names:
        assert params[n].shape == (T, *policy.adaptable_parameters()[n].shape)
    losses = -(policy.log_prob(obs, actions, params) ** 2).mean(-1) * weights  # [T]
    per_view = torch.autograd.grad(losses.sum(), [params[n] for n in names], retain_graph=True)
    losses.sum().backward()
    total = {n: p.grad.clone() for n, p in policy.adaptable_parameters().items()}

    theta = policy.adaptable_parameters()
    expected = {n: torch.zeros_like(p) for n, p in theta.items()}
    for t in range(T):
        loss_t = -(policy.log_prob(obs[t], actions[t]) ** 2).mean() * weights[t]
        grads_t = torch.autograd.grad(loss_t, [theta[n] for n in names])
        for n, gr in zip(names, grads_t, strict=True):
            expected[n] += gr
            # the gradient w.r.t. the broadcast view holds task t's own gradient in slice t
            close(per_view[names.index(n)][t], gr)
    for n in names:
        assert total[n].abs().sum() > 0
        close(total[n], expected[n])


# -- linear policy -----------------------------------------------------------------------------------


def test_empty_hidden_sizes_gives_a_linear_policy():
    policy = gaussian(hidden_sizes=())
    assert len(policy.layers) == 1
    assert set(policy.adaptable_parameters()) == {"layers.0.weight", "layers.0.bias", "log_std"}
    with torch.no_grad():
        policy.layers[0].weight.copy_(torch.randn(ACT_DIM, OBS_DIM, generator=gen(1)))
        policy.layers[0].bias.copy_(torch.randn(ACT_DIM, generator=gen(2)))
    g = gen(3)
    o1, o2 = torch.randn(OBS_DIM, generator=g), torch.randn(OBS_DIM, generator=g)

    def mean(o):
        return policy.distribution_params(o.unsqueeze(0))[0][0].detach()

    zero = mean(torch.zeros(OBS_DIM))
    close(zero, policy.layers[0].bias.detach())
    # affine: m(a o1 + b o2) - m(0) = a (m(o1) - m(0)) + b (m(o2) - m(0))
    a, b = 2.5, -1.5
    close(mean(a * o1 + b * o2) - zero, a * (mean(o1) - zero) + b * (mean(o2) - zero), tol=1e-4)
    close(mean(o1), policy.layers[0].weight.detach() @ o1 + policy.layers[0].bias.detach())

    # a deep tanh policy is not affine (the check above can fail)
    deep = gaussian(hidden_sizes=(8,))
    with torch.no_grad():
        for p in deep.parameters():
            p.copy_(torch.randn(p.shape, generator=g))

    def dmean(o):
        return deep.distribution_params(o.unsqueeze(0))[0][0].detach()

    dz = dmean(torch.zeros(OBS_DIM))
    assert not torch.allclose(dmean(a * o1 + b * o2) - dz, a * (dmean(o1) - dz) + b * (dmean(o2) - dz), atol=1e-2)


# -- torch.distributions equivalence (unbatched) ------------------------------------------------------


def test_gaussian_matches_torch_distributions():
    policy = gaussian(init_std=0.3)
    g = gen(5)
    obs = torch.randn(7, OBS_DIM, generator=g)
    actions = torch.randn(7, ACT_DIM, generator=g)
    q = task_slice(per_task_params(policy, 1, seed=6), 0)
    with torch.no_grad():
        mean = reference_trunk(policy, dict(policy.named_parameters()), obs)
        std = torch.full_like(mean, 0.3)
        dist_p = Normal(mean, std)
        dist_q = reference_normal(policy, q, obs)
        close(policy.log_prob(obs, actions).detach(), dist_p.log_prob(actions).sum(-1))
        close(policy.kl(obs, dict(policy.named_parameters()), q).detach(), kl_divergence(dist_p, dist_q).sum(-1))
        close(policy.entropy(obs).detach(), dist_p.entropy().sum(-1))


def test_categorical_matches_torch_distributions():
    policy = categorical()
    q = task_slice(per_task_params(policy, 1, seed=6, scale=2.0), 0)
    g = gen(5)
    obs = torch.randn(7, OBS_DIM, generator=g)
    actions = torch.randint(0, N_ACTIONS, (7,), generator=g)
    with torch.no_grad():
        dist_p = Categorical(logits=reference_trunk(policy, dict(policy.named_parameters()), obs))
        dist_q = reference_categorical(policy, q, obs)
        close(policy.log_prob(obs, actions), dist_p.log_prob(actions))
        close(policy.kl(obs, dict(policy.named_parameters()), q), kl_divergence(dist_p, dist_q))
        close(policy.entropy(obs), dist_p.entropy())
        close(policy.distribution_params(obs).exp(), dist_p.probs)


# -- log-std -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("init_std", [0.25, 1.0, 3.0])
def test_learn_std_false_makes_log_std_a_fixed_buffer(init_std):
    policy = gaussian(learn_std=False, init_std=init_std)
    assert "log_std" in dict(policy.named_buffers())
    assert "log_std" not in dict(policy.named_parameters())
    assert "log_std" not in policy.adaptable_parameters()
    assert "log_std" not in policy.task_parameters(2)
    close(policy.log_std.exp(), torch.full((ACT_DIM,), init_std))
    _, log_std = policy.distribution_params(torch.zeros(1, OBS_DIM))
    close(log_std.exp().expand(1, ACT_DIM), torch.full((1, ACT_DIM), init_std))


@pytest.mark.parametrize("init_std", [0.25, 3.0])
def test_learn_std_true_makes_log_std_adaptable(init_std):
    policy = gaussian(learn_std=True, init_std=init_std)
    assert "log_std" in policy.adaptable_parameters()
    assert policy.adaptable_parameters()["log_std"].requires_grad
    close(policy.log_std.detach().exp(), torch.full((ACT_DIM,), init_std))


# -- sampling --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [gaussian, categorical], ids=["gaussian", "categorical"])
def test_seeded_sampling_is_reproducible(make):
    policy = make()
    params = per_task_params(policy, T, seed=1)
    obs = torch.randn(T, 50, OBS_DIM, generator=gen(2))
    a1 = policy.sample(obs, params, generator=gen(7))
    a2 = policy.sample(obs, params, generator=gen(7))
    a3 = policy.sample(obs, params, generator=gen(8))
    assert torch.equal(a1, a2)
    assert not torch.equal(a1, a3)


def test_gaussian_deterministic_sample_is_the_mean_and_noise_has_the_right_std():
    policy = gaussian(init_std=0.5, learn_std=False)
    params = per_task_params(policy, T, seed=1)
    obs = torch.randn(T, 4000, OBS_DIM, generator=gen(2))
    mean = torch.stack([reference_trunk(policy, task_slice(params, t), obs[t]) for t in range(T)])
    close(policy.sample(obs, params, deterministic=True), mean)
    noise = policy.sample(obs, params, generator=gen(3)) - mean
    assert abs(noise.std().item() - 0.5) < 0.02
    assert abs(noise.mean().item()) < 0.02


def test_categorical_deterministic_sample_is_the_argmax_and_sampling_follows_the_probabilities():
    policy = categorical()
    params = per_task_params(policy, T, seed=1, scale=2.0)
    obs = torch.randn(T, 5, OBS_DIM, generator=gen(2))
    logits = torch.stack([reference_trunk(policy, task_slice(params, t), obs[t]) for t in range(T)])
    det = policy.sample(obs, params, deterministic=True)
    assert torch.equal(det, logits.argmax(-1))
    # one observation per task, many draws: frequencies match softmax(logits)
    one = obs[:, :1].expand(T, 20000, OBS_DIM)
    draws = policy.sample(one, params, generator=gen(3))
    freq = torch.stack([torch.bincount(draws[t], minlength=N_ACTIONS).float() / 20000 for t in range(T)])
    close(freq, torch.softmax(logits[:, 0], -1), tol=0.02)


# -- validation ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ["sigmoidz", "RELU", ""])
def test_bad_activation(activation):
    with pytest.raises(ValueError, match=re.escape(repr(activation))):
        gaussian(activation=activation)
    with pytest.raises(ValueError, match=re.escape(repr(activation))):
        categorical(activation=activation)


@pytest.mark.parametrize("hidden_sizes", [(0,), (8, -3)])
def test_bad_hidden_sizes(hidden_sizes):
    with pytest.raises(ValueError, match=r"hidden_sizes.*" + re.escape(str(hidden_sizes))):
        gaussian(hidden_sizes=hidden_sizes)


@pytest.mark.parametrize("hidden_sizes", [64, (1.5,), (True,)])
def test_non_sequence_or_non_integer_hidden_sizes(hidden_sizes):
    with pytest.raises(ValueError, match=r"hidden_sizes.*" + re.escape(str(hidden_sizes))):
        gaussian(hidden_sizes=hidden_sizes)


@pytest.mark.parametrize("init_std", [0.0, -1.0, math.nan, math.inf])
def test_bad_init_std(init_std):
    with pytest.raises(ValueError, match=r"init_std.*" + re.escape(str(init_std))):
        gaussian(init_std=init_std)


BOX1 = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)


@pytest.mark.parametrize(
    "obs_space, act_space, bad",
    [
        (gym.spaces.Box(0.0, 1.0, (2, 2), np.float32), BOX1, "obs"),
        (gym.spaces.Dict({"x": BOX1}), BOX1, "obs"),
        (BOX1, gym.spaces.MultiDiscrete([2, 3]), "act"),
        (BOX1, gym.spaces.Box(-1.0, 1.0, (2, 2), np.float32), "act"),
        (BOX1, gym.spaces.Discrete(3, start=1), "act"),
    ],
)
def test_unsupported_spaces(obs_space, act_space, bad):
    offending = obs_space if bad == "obs" else act_space
    with pytest.raises(ValueError, match=re.escape(str(offending))):
        make_policy(obs_space, act_space, hidden_sizes=(4,))


def test_make_policy_picks_the_class_and_sizes():
    gauss = make_policy(gym.spaces.Discrete(5), BOX1, hidden_sizes=(4,))
    assert isinstance(gauss, GaussianMLPPolicy)
    assert gauss.layers[0].in_features == 5 and gauss.layers[-1].out_features == 2
    cat = make_policy(BOX1, gym.spaces.Discrete(3), hidden_sizes=(4,))
    assert isinstance(cat, CategoricalMLPPolicy)
    assert cat.layers[0].in_features == 2 and cat.layers[-1].out_features == 3


# -- initialisation seeding -------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [gaussian, categorical], ids=["gaussian", "categorical"])
def test_construction_generator_seeds_the_initial_parameters(make):
    a, b, c = make(generator=gen(11)), make(generator=gen(11)), make(generator=gen(12))
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert sa.keys() == sb.keys() == sc.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    assert not torch.equal(sa["layers.0.weight"], sc["layers.0.weight"])
    assert not torch.equal(sa["layers.0.bias"], sc["layers.0.bias"])


@pytest.mark.parametrize("make", [gaussian, categorical], ids=["gaussian", "categorical"])
def test_a_slice_of_the_noise_samples_that_slice_of_the_batch(make):
    policy = make()
    params = per_task_params(policy, T, seed=1)
    obs = torch.randn(T, 50, OBS_DIM, generator=gen(2))
    noise = policy.draw_noise((T, 50), gen(7))
    whole = policy.sample(obs, params, noise=noise)
    assert torch.equal(whole, policy.sample(obs, params, generator=gen(7)))  # the same draws as without noise=
    part = policy.sample(obs[1:3], {n: p[1:3] for n, p in params.items()}, noise=noise[1:3])
    assert torch.equal(part, whole[1:3])


@pytest.mark.parametrize("activation", ["relu", "tanh", "gelu", "elu"])
@pytest.mark.parametrize("hidden_sizes", [(8, 6), ()], ids=["mlp", "linear"])
@pytest.mark.parametrize("make", [gaussian, categorical], ids=["gaussian", "categorical"])
def test_the_rollout_action_sampler_gives_the_actions_of_sample(make, hidden_sizes, activation):
    policy = make(hidden_sizes=hidden_sizes, activation=activation)
    params = {n: p.requires_grad_() for n, p in per_task_params(policy, T, seed=1).items()}
    before = {n: p.detach().clone() for n, p in params.items()}
    obs = torch.randn(T, 3, 50, OBS_DIM, generator=gen(2))
    obs_before = obs.clone()
    noise = policy.draw_noise((T, 3, 50), gen(7))
    sample = policy.action_sampler(params)
    actions = sample(obs, noise)
    expected = policy.sample(obs, params, noise=noise)
    assert not actions.requires_grad
    if make is gaussian:
        close(actions, expected.detach())
    else:
        assert (actions == expected).float().mean() > 0.99  # a uniform draw on a CDF step may round either way
        assert len(actions.unique()) == N_ACTIONS
    # the in-place work touches neither the parameters nor the observations
    assert all(torch.equal(params[n].detach(), before[n]) for n in params) and torch.equal(obs, obs_before)
    assert torch.equal(sample(obs, noise), actions)  # and a second call gives the same


@pytest.mark.parametrize("make", [gaussian, categorical], ids=["gaussian", "categorical"])
def test_the_rollout_action_sampler_with_shared_theta(make):
    policy = make()
    obs = torch.randn(T, 50, OBS_DIM, generator=gen(2))
    noise = policy.draw_noise((T, 50), gen(7))
    assert torch.equal(policy.action_sampler()(obs, noise), policy.sample(obs, noise=noise).detach())


# -- initialisation ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [gaussian, categorical])
def test_xavier_init_draws_glorot_weights_and_zero_biases(make):
    policy = make(init="xavier", output_init_scale=1.0, hidden_sizes=(64, 32))
    for layer in policy.layers:
        bound = math.sqrt(6.0 / (layer.in_features + layer.out_features))
        w = layer.weight.detach()
        assert w.abs().max() <= bound and w.abs().max() > 0.8 * bound  # uniform over the whole interval
        assert torch.equal(layer.bias.detach(), torch.zeros_like(layer.bias))


@pytest.mark.parametrize("init", ["default", "xavier"])
def test_output_init_scale_scales_only_the_output_weights(init):
    small = gaussian(init=init, output_init_scale=0.01)
    full = gaussian(init=init, output_init_scale=1.0)
    *hidden_small, out_small = small.layers
    *hidden_full, out_full = full.layers
    for a, b in zip(hidden_small, hidden_full, strict=True):
        assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    torch.testing.assert_close(out_small.weight, 0.01 * out_full.weight)
    assert not out_small.bias.any() and not out_full.bias.any()


def test_the_default_init_is_unchanged():
    """init="default", output_init_scale=0.01 is what every earlier run and checkpoint was trained from."""
    policy = gaussian()
    reference = torch.nn.Linear(6, ACT_DIM)
    g = gen(0)
    for layer in policy.layers[:-1]:  # the same draws, in the same order, from the same generator
        w, b = torch.empty_like(layer.weight), torch.empty_like(layer.bias)
        torch.nn.init.kaiming_uniform_(w, a=math.sqrt(5), generator=g)
        torch.nn.init.uniform_(b, -1 / math.sqrt(layer.in_features), 1 / math.sqrt(layer.in_features), generator=g)
        assert torch.equal(layer.weight, w) and torch.equal(layer.bias, b)
    torch.nn.init.kaiming_uniform_(reference.weight, a=math.sqrt(5), generator=g)
    torch.testing.assert_close(policy.layers[-1].weight, 0.01 * reference.weight)


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(init="he"), "init='he' is not allowed; use one of \\['default', 'xavier'\\]"),
    (dict(output_init_scale=0.0), "output_init_scale=0.0 is not allowed"),
    (dict(output_init_scale=float("nan")), "output_init_scale=nan is not allowed"),
])
def test_bad_init_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        gaussian(**kwargs)
