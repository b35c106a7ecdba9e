"""The batched sampler: layout, masks, per-task parameters, seeding, returns."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from metasgd_rl import make_task_family
from metasgd_rl.policies import make_policy
from metasgd_rl.sampler import EpisodeBatch, concat_chunks, rollout_chunk, rollout_seeds, sample_episodes
from tests.bandit import BanditFamily, BanditVectorEnv

TINY_STD = 1e-4


def linear_policy(family, init_std: float = 1.0):
    return make_policy(
        family.observation_space,
        family.action_space,
        hidden_sizes=(),
        init_std=init_std,
        generator=torch.Generator().manual_seed(0),
    )


def theta_for_tasks(policy, num_tasks: int) -> dict[str, torch.Tensor]:
    return {
        n: p.detach().unsqueeze(0).expand(num_tasks, *p.shape).clone() for n, p in policy.adaptable_parameters().items()
    }


@pytest.fixture(scope="module")
def nav():
    return make_task_family("Navigation2D-v0")


@pytest.fixture(scope="module")
def homing(nav):
    """Tasks 0-2 head straight for their own goal (mean = goal - obs, tiny std); task 3 stands still."""
    tasks = nav.sample_tasks(4, np.random.default_rng(3))
    goals = torch.tensor([t["goal"] for t in tasks], dtype=torch.float32)
    assert goals[3].abs().max() > 0.05  # the idle task cannot reach its goal from the origin
    policy = linear_policy(nav)
    params = theta_for_tasks(policy, 4)
    params["layers.0.weight"] = -torch.eye(2).repeat(4, 1, 1)
    params["layers.0.bias"] = goals.clone()
    params["layers.0.weight"][3] = 0.0
    params["layers.0.bias"][3] = 0.0
    params["log_std"] = torch.full((4, 2), math.log(TINY_STD))
    batch = sample_episodes(nav, policy, params, tasks, 3, seed=0)
    return tasks, goals.numpy(), batch


def test_shapes(homing, nav):
    _, _, batch = homing
    h = nav.max_episode_steps
    assert h == 100
    assert batch.observations.shape == (h, 4, 3, 2)
    assert batch.actions.shape == (h, 4, 3, 2)
    assert batch.rewards.shape == batch.mask.shape == (h, 4, 3)
    assert (batch.horizon, batch.num_tasks, batch.episodes_per_task) == (h, 4, 3)
    assert len(batch.tasks) == 4


def test_mask_is_ones_then_zeros_and_rewards_vanish_off_mask(homing):
    _, _, batch = homing
    mask = batch.mask.numpy()
    assert set(np.unique(mask)) <= {0.0, 1.0}
    assert np.all(mask[0] == 1)
    assert np.all(np.diff(mask, axis=0) <= 0)  # never 0 -> 1
    assert np.all(batch.rewards.numpy()[mask == 0] == 0)
    lengths = mask.sum(0)
    assert np.all(lengths[:3] < 15)  # homing tasks terminate within a few steps
    assert np.all(lengths[3] == 100)  # the idle task runs to the time limit


def test_every_task_reaches_its_own_goal(homing):
    """Each task used its own parameters: it steered to its own goal, and the env semantics hold."""
    _, goals, batch = homing
    obs, actions = batch.observations.numpy(), batch.actions.numpy()
    rewards, mask = batch.rewards.numpy(), batch.mask.numpy()
    for t in range(4):
        for e in range(3):
            length = int(mask[:, t, e].sum())
            pos = np.zeros(2, dtype=np.float32)  # Navigation2D-v0 starts at the origin
            for h in range(length):
                np.testing.assert_allclose(obs[h, t, e], pos, atol=1e-6)
                expected_mean = goals[t] - pos if t < 3 else np.zeros(2)
                np.testing.assert_allclose(actions[h, t, e], expected_mean, atol=1e-3)
                pos = (pos + np.clip(actions[h, t, e], -0.1, 0.1)).astype(np.float32)
                assert rewards[h, t, e] == pytest.approx(-np.hypot(*(pos - goals[t])), abs=1e-5)
                reached = np.all(np.abs(pos - goals[t]) < 0.01)
                assert reached == (h == length - 1 and t < 3)
            if t < 3:
                np.testing.assert_allclose(pos, goals[t], atol=0.01)


def test_episodes_all_ending_early_shorten_the_batch(nav):
    tasks = nav.sample_tasks(2, np.random.default_rng(1))
    goals = torch.tensor([t["goal"] for t in tasks], dtype=torch.float32)
    policy = linear_policy(nav)
    params = theta_for_tasks(policy, 2)
    params["layers.0.weight"] = -torch.eye(2).repeat(2, 1, 1)
    params["layers.0.bias"] = goals
    params["log_std"] = torch.full((2, 2), math.log(TINY_STD))
    batch = sample_episodes(nav, policy, params, tasks, 2, seed=0)
    steps_needed = int(np.ceil(goals.abs().max().item() / 0.1 - 1e-6))
    assert batch.horizon < 100
    assert batch.horizon in (steps_needed, steps_needed + 1)
    assert batch.mask[-1].sum() >= 1  # the last row has a live episode


def test_same_seed_same_batch_different_seed_different(nav):
    tasks = nav.sample_tasks(3, np.random.default_rng(0))
    policy = linear_policy(nav, init_std=1.0)
    params = theta_for_tasks(policy, 3)
    a = sample_episodes(nav, policy, params, tasks, 2, seed=5)
    b = sample_episodes(nav, policy, params, tasks, 2, seed=5)
    c = sample_episodes(nav, policy, params, tasks, 2, seed=6)
    for name in ("observations", "actions", "rewards", "mask"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert a.actions.shape != c.actions.shape or not torch.equal(a.actions, c.actions)
    assert not torch.equal(a.rewards, c.rewards)
    # no hidden global RNG: the global torch seed does not change the batch
    torch.manual_seed(123)
    d = sample_episodes(nav, policy, params, tasks, 2, seed=5)
    assert torch.equal(a.actions, d.actions)


def test_seed_sequence_is_accepted_and_reproducible(nav):
    tasks = nav.sample_tasks(2, np.random.default_rng(0))
    policy = linear_policy(nav)
    params = theta_for_tasks(policy, 2)
    a = sample_episodes(nav, policy, params, tasks, 2, seed=np.random.SeedSequence(9))
    b = sample_episodes(nav, policy, params, tasks, 2, seed=np.random.SeedSequence(9))
    assert torch.equal(a.actions, b.actions)


@pytest.mark.parametrize("gamma", [1.0, 0.9, 0.0])
def test_episode_returns_match_a_python_loop(nav, gamma):
    tasks = nav.sample_tasks(3, np.random.default_rng(0))
    policy = linear_policy(nav, init_std=0.5)
    batch = sample_episodes(nav, policy, theta_for_tasks(policy, 3), tasks, 2, seed=1)
    r = batch.rewards.numpy().astype(np.float64)
    expected = np.zeros((3, 2))
    for t in range(3):
        for e in range(2):
            discount = 1.0
            for h in range(batch.horizon):
                expected[t, e] += discount * r[h, t, e]
                discount *= gamma
    returns = batch.episode_returns(gamma)
    assert returns.shape == (3, 2)
    np.testing.assert_allclose(returns.numpy(), expected, rtol=1e-5, atol=1e-5)
    if gamma == 1.0:
        np.testing.assert_allclose(batch.mean_returns().numpy(), expected.mean(1), rtol=1e-5)


def test_hand_built_batch_returns():
    rewards = torch.tensor([[1.0, 2.0], [3.0, 0.0], [5.0, 0.0]]).reshape(3, 1, 2)
    batch = EpisodeBatch(torch.zeros(3, 1, 2, 1), torch.zeros(3, 1, 2, 1), rewards, (rewards != 0).float())
    np.testing.assert_allclose(batch.episode_returns(0.5).numpy(), [[1 + 1.5 + 1.25, 2.0]])
    np.testing.assert_allclose(batch.episode_returns().numpy(), [[9.0, 2.0]])


def test_bandit_actions_come_from_each_tasks_own_parameters():
    family = BanditFamily(-1.0, 1.0)
    tasks = family.sample_tasks(4, np.random.default_rng(0))
    goals = np.array([t["goal"] for t in tasks])
    policy = linear_policy(family)
    bias = torch.tensor([[-2.0], [-0.5], [1.0], [3.0]])
    params = {
        "layers.0.weight": torch.randn(4, 1, 1),  # irrelevant: the observation is 0
        "layers.0.bias": bias,
        "log_std": torch.full((4, 1), math.log(1e-3)),
    }
    batch = sample_episodes(family, policy, params, tasks, 5, seed=0)
    assert batch.actions.shape == (1, 4, 5, 1)
    assert batch.rewards.shape == batch.mask.shape == (1, 4, 5)
    assert torch.all(batch.mask == 1)
    actions = batch.actions[0, :, :, 0].numpy()
    np.testing.assert_allclose(actions, np.repeat(bias.numpy(), 5, axis=1), atol=0.01)
    np.testing.assert_allclose(batch.rewards[0].numpy(), -((actions - goals[:, None]) ** 2), rtol=1e-5, atol=1e-6)


class WrongSizeFamily(BanditFamily):
    def make_vector_env(self, tasks, episodes_per_task):
        goals = np.repeat([t["goal"] for t in tasks], episodes_per_task)
        return BanditVectorEnv(goals[:-1])


def test_wrong_number_of_sub_envs_is_a_clear_error():
    family = WrongSizeFamily()
    tasks = family.sample_tasks(2, np.random.default_rng(0))
    policy = linear_policy(family)
    with pytest.raises(ValueError, match="make_vector_env") as info:
        sample_episodes(family, policy, theta_for_tasks(policy, 2), tasks, 2, seed=0)
    message = str(info.value)
    assert "3" in message and "2 tasks" in message


# -- chunks of a meta-batch (what Ray actors roll out) ---------------------------------------------------------


def assert_same_batch(a: EpisodeBatch, b: EpisodeBatch) -> None:
    assert a.tasks == b.tasks
    for name in ("observations", "actions", "rewards", "mask"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.shape == y.shape and torch.equal(x, y), name
    assert (a.success is None) == (b.success is None)
    if a.success is not None:
        assert torch.equal(a.success, b.success), "success"


@pytest.mark.parametrize("family_id, kwargs", [
    ("Navigation2D-RandomStart-v0", {}),                      # native vector env, per-sub-env random starts
    ("CartPoleRandParams-v0", {"max_episode_steps": 40}),     # generic vector env, discrete, early termination
    ("MultiArmedBandit-v0", {}),                              # native vector env, discrete
])
def test_chunks_joined_are_the_whole_batch(family_id, kwargs):
    family = make_task_family(family_id, **kwargs)
    policy = make_policy(family.observation_space, family.action_space, hidden_sizes=(8,),
                         generator=torch.Generator().manual_seed(0))
    tasks = family.sample_tasks(5, np.random.default_rng(1))
    params = {n: p.detach().unsqueeze(0).expand(5, *p.shape) + 0.3 * torch.randn(5, *p.shape, generator=gen)
              for gen in [torch.Generator().manual_seed(2)] for n, p in policy.adaptable_parameters().items()}
    whole = sample_episodes(family, policy, params, tasks, 3, seed=11)
    env_seed, noise_seed = rollout_seeds(11)
    for bounds in ([0, 2, 5], [0, 1, 2, 3, 4, 5], [0, 5]):
        chunks = [rollout_chunk(family, policy, {n: p[a:b] for n, p in params.items()}, tasks[a:b], 3, env_seed,
                                noise_seed, a, 5) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        assert_same_batch(concat_chunks(chunks), whole)
    if family_id.startswith("CartPole"):
        lengths = [c.horizon for c in chunks]
        assert whole.mask[-1].sum() < whole.mask[0].sum()  # episodes ended at different times
        assert whole.horizon == max(lengths)


def test_actions_after_an_episode_ended_are_zero():
    family = make_task_family("CartPoleRandParams-v0", max_episode_steps=60)
    policy = make_policy(family.observation_space, family.action_space, hidden_sizes=(8,),
                         generator=torch.Generator().manual_seed(0))
    tasks = family.sample_tasks(2, np.random.default_rng(0))
    batch = sample_episodes(family, policy, policy.task_parameters(2), tasks, 4, seed=0)
    assert (batch.mask == 0).any()
    assert (batch.actions[batch.mask == 0] == 0).all()


def test_a_chunk_outside_the_meta_batch_is_refused(nav):
    policy = linear_policy(nav)
    tasks = nav.sample_tasks(2, np.random.default_rng(0))
    with pytest.raises(ValueError, match="not within a meta-batch of 3 tasks"):
        rollout_chunk(nav, policy, policy.task_parameters(2), tasks, 1, 0, 0, first_task=2, total_tasks=3)
