"""The user-facing model: argument validation, MAML, adaptation, SB3 compatibility, seeding."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor

from metasgd_rl import MAML, AdaptedPolicy, MetaSGD
from tests.bandit import BanditFamily

SMALL = dict(policy_kwargs=dict(hidden_sizes=(16,)), meta_batch_size=2, episodes_per_task=2)


def small_model(cls=MetaSGD, **kwargs):
    return cls("Navigation2D-v0", **{**SMALL, **kwargs})


def flat_state(model: MetaSGD) -> dict[str, torch.Tensor]:
    state = {f"policy.{k}": v.detach().clone() for k, v in model.policy.state_dict().items()}
    state.update({f"alpha.{k}": v.detach().clone() for k, v in model.step_sizes.state_dict().items()})
    return state


# -- validation ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, value",
    [
        ("meta_batch_size", 0),
        ("episodes_per_task", -1),
        ("estimator", "foo"),
        ("outer", "bar"),
        ("alpha_granularity", "row"),
        ("baseline", "critic"),
        ("gamma", 1.5),
        ("seed", -1),
    ],
)
def test_bad_argument_is_named_with_its_value(name, value):
    with pytest.raises(ValueError) as info:
        small_model(**{name: value})
    message = str(info.value)
    assert name in message, message
    assert str(value) in message, message


def test_unknown_policy_kwarg_is_named():
    with pytest.raises(ValueError, match=r"policy_kwargs.*hidden_size\b") as info:
        MetaSGD("Navigation2D-v0", policy_kwargs=dict(hidden_size=(16,)))
    assert "hidden_sizes" in str(info.value)  # what is allowed


@pytest.mark.parametrize("outer, key", [("trpo", "lr"), ("adam", "max_kl"), ("ppo", "cg_iters")])
def test_unknown_outer_kwargs_are_named_with_what_is_allowed(outer, key):
    with pytest.raises(ValueError, match=rf"outer_kwargs.*{outer}.*{key}.*allowed"):
        small_model(outer=outer, outer_kwargs={key: 1})


@pytest.mark.parametrize("outer, kwargs", [("trpo", dict(max_kl=-1.0)), ("trpo", dict(fvp="hessian")),
                                           ("trpo", dict(ls_ratio=1.5)), ("adam", dict(lr=0)),
                                           ("ppo", dict(epochs=0)), ("ppo", dict(clip=float("nan")))])
def test_out_of_range_outer_kwargs_are_refused(outer, kwargs):
    (key, value), = kwargs.items()
    with pytest.raises(ValueError, match=rf"{key}={re.escape(repr(value))}"):
        small_model(outer=outer, outer_kwargs=kwargs)


# -- MAML --------------------------------------------------------------------------------------------


def test_maml_has_one_fixed_scalar_alpha():
    model = small_model(MAML, alpha_init=0.25)
    alphas = list(model.step_sizes.parameters())
    assert sum(a.numel() for a in alphas) == 1
    assert not any(a.requires_grad for a in alphas)
    for name, p in model.policy.adaptable_parameters().items():
        a = model.step_sizes.for_step(0)[name]
        assert a.numel() == 1 and a.item() == pytest.approx(0.25)
        assert not a.requires_grad
        assert p.requires_grad
    # α is not among the optimiser's parameters, θ is
    optimised = {id(p) for p in model.outer_optimizer.params}
    assert not optimised & {id(a) for a in alphas}
    assert {id(p) for p in model.policy.adaptable_parameters().values()} <= optimised
    # training leaves α where it was
    model.train_step()
    assert model.step_sizes.for_step(0)["layers.0.weight"].item() == pytest.approx(0.25)


@pytest.mark.parametrize("kwargs", [dict(learn_alpha=True), dict(alpha_granularity="element")])
def test_maml_refuses_a_learned_or_non_scalar_alpha(kwargs):
    key, value = next(iter(kwargs.items()))
    with pytest.raises(ValueError, match=re.escape(f"{key}={value!r}")):
        small_model(MAML, **kwargs)


def test_metasgd_alpha_is_learned_per_element():
    model = small_model(alpha_init=0.1)
    theta = model.policy.adaptable_parameters()
    alphas = model.step_sizes.for_step(0)
    for name, p in theta.items():
        assert alphas[name].shape == (1, *p.shape)
        assert alphas[name].requires_grad
    before = flat_state(model)
    model.train_step()
    after = flat_state(model)
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("alpha."))


def test_a_model_shows_itself_in_one_informative_line():
    model = small_model(alpha_init=0.1, seed=3)
    text = repr(model)
    assert text == ("MetaSGD(family='Navigation2D-v0', iteration=0, seed=3, policy=Gaussian MLP 2→16→2 relu, 84 θ, "
                    "α = 0.1 learned (adam), per element)")  # 2·16 + 16 + 16·2 + 2 + 2 (log-std) entries of θ
    with torch.no_grad():
        model.step_sizes.alphas["layers__1__bias"].copy_(torch.tensor([[-0.2, 0.5]]))
    model.iteration = 7
    text = repr(model)
    assert "iteration=7" in text and "α learned (adam), per element: mean 0.101, range [-0.2, 0.5], 1% < 0" in text
    maml = repr(small_model(MAML, family_kwargs=dict(max_episode_steps=50)))
    assert maml.startswith("MAML(family='Navigation2D-v0' (max_episode_steps=50), iteration=0")
    assert maml.endswith("α = 0.1 fixed, scalar)") and len(maml) < 160
    per_step = repr(small_model(alpha_granularity="tensor", alpha_per_step=True, inner_steps=2))
    assert "α = 0.1 learned (adam), per tensor and inner step (2)" in per_step


# -- adaptation -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def adapted():
    model = small_model(seed=3)
    task = model.family.sample_tasks(1, np.random.default_rng(0))[0]
    return model, task, model.adapt(task, steps=1, episodes=2)


def test_adapt_returns_an_adapted_policy_that_moved_away_from_theta(adapted):
    model, _, policy = adapted
    assert isinstance(policy, AdaptedPolicy)
    theta = model.policy.adaptable_parameters()
    assert set(policy.params) == set(theta)
    for name, p in theta.items():
        assert policy.params[name].shape == p.shape
        assert not policy.params[name].requires_grad
    assert any(not torch.allclose(policy.params[n], theta[n]) for n in theta)


def test_predict_single_and_batch(adapted):
    model, _, policy = adapted
    obs = np.array([0.1, -0.2], dtype=np.float32)
    action, state = policy.predict(obs, deterministic=True)
    assert state is None
    assert action.shape == (2,)
    batch = np.stack([obs, np.zeros(2, np.float32), np.array([0.4, 0.4], np.float32)])
    actions, _ = policy.predict(batch, deterministic=True)
    assert actions.shape == (3, 2)
    np.testing.assert_allclose(actions[0], action, atol=1e-6)
    # the deterministic action is the adapted policy's mean, clipped to the action space
    with torch.no_grad():
        mean, _ = model.policy.distribution_params(torch.as_tensor(batch), policy.params)
    space = model.family.action_space
    np.testing.assert_allclose(actions, np.clip(mean.numpy(), space.low, space.high), atol=1e-6)


def test_predict_deterministic_is_repeatable_and_stochastic_is_not(adapted):
    _, _, policy = adapted
    obs = np.zeros((50, 2), dtype=np.float32)
    a1, _ = policy.predict(obs, deterministic=True)
    a2, _ = policy.predict(obs, deterministic=True)
    assert np.array_equal(a1, a2)
    s1, _ = policy.predict(obs, deterministic=False)
    s2, _ = policy.predict(obs, deterministic=False)
    assert not np.array_equal(s1, s2)


def test_predict_clips_to_the_action_space(adapted):
    model, _, policy = adapted
    space = model.family.action_space
    obs = np.zeros((500, 2), dtype=np.float32)
    actions, _ = policy.predict(obs, deterministic=False)  # std ≈ 1 ≫ 0.1: most raw samples are outside
    assert np.all(actions >= space.low) and np.all(actions <= space.high)
    assert np.mean(np.isclose(np.abs(actions), 0.1)) > 0.5
    # a policy whose mean is far outside the box is clipped deterministically too
    far = {n: p.clone() for n, p in policy.params.items()}
    far["layers.1.bias"] = torch.tensor([5.0, -5.0])
    far_policy = AdaptedPolicy(model.policy, far, model.family.observation_space, space)
    action, _ = far_policy.predict(np.zeros(2, np.float32), deterministic=True)
    np.testing.assert_allclose(action, [0.1, -0.1], atol=1e-6)


def test_adapted_policy_works_with_sb3_evaluate_policy(adapted):
    model, task, policy = adapted
    env = Monitor(model.family.make_env(task))
    rewards, lengths = evaluate_policy(policy, env, n_eval_episodes=2, deterministic=True, return_episode_rewards=True)
    assert len(rewards) == len(lengths) == 2
    assert all(0 < n <= model.family.max_episode_steps for n in lengths)
    assert all(np.isfinite(r) and r < 0 for r in rewards)  # reward is minus a distance
    # deterministic policy, fixed start: both episodes are the same
    assert rewards[0] == pytest.approx(rewards[1])
    assert lengths[0] == lengths[1]


def test_adapt_with_zero_steps_is_theta(adapted):
    model, task, _ = adapted
    policy = model.adapt(task, steps=0)
    for name, p in model.policy.adaptable_parameters().items():
        assert torch.equal(policy.params[name], p.detach())


def test_adapt_is_reproducible_with_a_seed(adapted):
    model, task, _ = adapted
    a = model.adapt(task, episodes=2, seed=7)
    b = model.adapt(task, episodes=2, seed=7)
    c = model.adapt(task, episodes=2, seed=8)
    for n in a.params:
        assert torch.equal(a.params[n], b.params[n])
    assert any(not torch.equal(a.params[n], c.params[n]) for n in a.params)


def test_adapt_and_predict_with_a_family_instance():
    model = MetaSGD(BanditFamily(), policy_kwargs=dict(hidden_sizes=(4,)), meta_batch_size=2, episodes_per_task=2)
    policy = model.adapt({"goal": 0.5})
    action, _ = policy.predict(np.zeros(1, np.float32), deterministic=True)
    assert action.shape == (1,)
    actions, _ = policy.predict(np.zeros((3, 1), np.float32), deterministic=True)
    assert actions.shape == (3, 1)


# -- seeding ---------------------------------------------------------------------------------------------


def test_same_seed_same_training_different_seed_different():
    # unnormalised advantages: with normalised ones the LVC surrogate's value is ≈ 0 whatever the seed
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        model = small_model(seed=seed, normalize_advantages=False)
        tasks = model.sample_train_tasks(0)
        loss = model.meta_loss(tasks).item()
        infos = [model.train_step() for _ in range(2)]
        runs[name] = (loss, [i["loss"] for i in infos], flat_state(model))
    (la, ia, sa), (lb, ib, sb), (lc, ic, sc) = runs["a"], runs["b"], runs["c"]
    assert la == lb and ia == ib
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert la != lc and ia != ic
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)


def test_same_seed_same_initial_parameters():
    a, b, c = small_model(seed=5), small_model(seed=5), small_model(seed=6)
    sa, sb, sc = flat_state(a), flat_state(b), flat_state(c)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["policy.layers.0.weight"], sc["policy.layers.0.weight"])


def test_training_changes_theta():
    model = small_model()
    before = flat_state(model)
    info = model.train_step()
    assert info["iteration"] == 1 and not info["update_rejected"]
    after = flat_state(model)
    assert not torch.equal(before["policy.layers.0.weight"], after["policy.layers.0.weight"])


def test_meta_loss_streams_differ_but_the_sequence_is_reproducible():
    def sequence(model):
        tasks = model.family.sample_tasks(2, np.random.default_rng(0))
        return [model.meta_loss(tasks).item() for _ in range(3)]

    first = sequence(small_model(seed=2, normalize_advantages=False))
    assert len(set(first)) == 3  # successive calls use fresh rollouts
    assert sequence(small_model(seed=2, normalize_advantages=False)) == first
    assert sequence(small_model(seed=4, normalize_advantages=False)) != first


def test_meta_loss_with_explicit_seed_is_reproducible_and_differentiable():
    model = small_model(normalize_advantages=False)
    tasks = model.family.sample_tasks(2, np.random.default_rng(0))
    a = model.meta_loss(tasks, seed=11)
    b = model.meta_loss(tasks, seed=11)
    assert a.item() == b.item()
    assert model.meta_loss(tasks, seed=12).item() != a.item()
    assert a.dim() == 0 and a.requires_grad
    a.backward()
    assert model.policy.layers[0].weight.grad is not None
    assert model.policy.layers[0].weight.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.step_sizes.parameters())
