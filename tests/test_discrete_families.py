"""The discrete toy families of ``envs/discrete.py``: contract, vector env ≡ single envs, task semantics,
refused input and a short meta-training run that learns."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest

import metasgd_rl as msr
from metasgd_rl_envs.discrete import MultiArmedBanditFamily, TabularMDPFamily

IDS = ["MultiArmedBandit-v0", "TabularMDP-v0"]


def binomial_tolerance(p: np.ndarray, n: np.ndarray | int, sigmas: float = 5.0) -> np.ndarray:
    """``sigmas`` standard errors of a frequency estimated from ``n`` draws (plus a little for p near 0 or 1)."""
    return sigmas * np.sqrt(p * (1 - p) / n) + 1.0 / np.asarray(n)


# -- contract ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family_id", IDS)
def test_family_is_registered_and_passes_the_check(family_id):
    assert family_id in msr.list_task_families()
    family = msr.make_task_family(family_id)
    msr.check_task_family(family)
    msr.check_task_family(family, n_tasks=2, seed=3, steps=25)


def test_registered_defaults_follow_rl2_and_pytorch_maml_rl():
    bandit, mdp = (msr.make_task_family(i) for i in IDS)
    assert (bandit.action_space, bandit.observation_space, bandit.max_episode_steps) == \
        (gym.spaces.Discrete(5), gym.spaces.Discrete(1), 10)
    assert (mdp.action_space, mdp.observation_space, mdp.max_episode_steps) == \
        (gym.spaces.Discrete(5), gym.spaces.Discrete(10), 10)
    custom = msr.make_task_family("MultiArmedBandit-v0", arms=3, pulls=4)
    assert custom.action_space == gym.spaces.Discrete(3) and custom.max_episode_steps == 4


def test_sampled_tasks_are_plain_json_and_follow_their_distributions():
    rng = np.random.default_rng(0)
    bandits = MultiArmedBanditFamily().sample_tasks(400, rng)
    assert json.loads(json.dumps(bandits)) == bandits
    probs = np.array([t["probs"] for t in bandits])
    assert probs.shape == (400, 5) and probs.min() >= 0 and probs.max() <= 1
    assert abs(probs.mean() - 0.5) < 0.03 and abs(probs.var() - 1 / 12) < 0.01  # uniform on [0, 1]

    mdps = TabularMDPFamily().sample_tasks(40, rng)
    assert json.loads(json.dumps(mdps)) == mdps and all(type(t["rewards_mean"][0][0]) is float for t in mdps)
    transitions = np.array([t["transitions"] for t in mdps])
    rewards_mean = np.array([t["rewards_mean"] for t in mdps])
    assert transitions.shape == (40, 10, 5, 10) and rewards_mean.shape == (40, 10, 5)
    np.testing.assert_allclose(transitions.sum(axis=-1), 1.0, atol=1e-12)
    assert abs(transitions.var() - 9 / 1100) < 1e-3  # Dirichlet(1) over 10 states: var = (1/10)(9/10)/11
    assert abs(rewards_mean.mean() - 1.0) < 0.05 and abs(rewards_mean.std() - 1.0) < 0.05  # Normal(1, 1)


# -- vector env ≡ single envs --------------------------------------------------------------------------------


@pytest.mark.parametrize("family_id", IDS)
def test_vector_env_matches_single_envs_exactly_over_two_full_episodes(family_id):
    family = msr.make_task_family(family_id)
    tasks = family.sample_tasks(4, np.random.default_rng(1))
    episodes, seed = 3, 11
    venv = family.make_vector_env(tasks, episodes)
    envs = [family.make_env(tasks[i // episodes]) for i in range(venv.num_envs)]
    actions_rng = np.random.default_rng(2)
    for episode in range(2):  # the second reset is unseeded: every generator goes on from the first episode
        vobs, _ = venv.reset(seed=seed if episode == 0 else None)
        obs = [env.reset(seed=seed + i if episode == 0 else None)[0] for i, env in enumerate(envs)]
        assert vobs.dtype == np.int64 and vobs.tolist() == obs
        for t in range(family.max_episode_steps):
            actions = actions_rng.integers(family.action_space.n, size=venv.num_envs)
            vobs, vrew, vterm, vtrunc, _ = venv.step(actions)
            steps = [env.step(int(a)) for env, a in zip(envs, actions, strict=True)]
            assert vobs.tolist() == [s[0] for s in steps]
            assert vrew.tolist() == [s[1] for s in steps]  # exactly: same noise, same float64 arithmetic
            assert vterm.tolist() == [s[2] for s in steps] == [False] * venv.num_envs
            assert vtrunc.tolist() == [s[3] for s in steps] == [t == family.max_episode_steps - 1] * venv.num_envs
        frozen = venv.step(np.zeros(venv.num_envs, dtype=np.int64))  # past the horizon: done, no reward
        assert not frozen[1].any() and frozen[3].all()


@pytest.mark.parametrize("family_id", IDS)
def test_vector_env_refuses_out_of_range_actions(family_id):
    family = msr.make_task_family(family_id)
    venv = family.make_vector_env(family.sample_tasks(1, np.random.default_rng(0)), 2)
    venv.reset(seed=0)
    with pytest.raises(ValueError, match=r"actions must be in \[0, 5\)"):
        venv.step(np.array([0, 5]))
    with pytest.raises(ValueError, match="expected 2 integer actions"):
        venv.step(np.array([0, 1, 2]))


# -- the task changes what it claims -------------------------------------------------------------------------


def test_bandit_arm_pays_with_its_probability():
    family = MultiArmedBanditFamily(arms=5, pulls=10)
    task = {"probs": [0.05, 0.3, 0.5, 0.8, 1.0]}
    n = 2000  # sub-envs; sub-env i always pulls arm i % 5
    venv = family.make_vector_env([task], n)
    venv.reset(seed=0)
    arms = np.arange(n) % 5
    total = np.zeros(n)
    for _ in range(family.pulls):
        total += venv.step(arms)[1]
    pulls_per_arm = n // 5 * family.pulls
    empirical = np.array([total[arms == a].sum() / pulls_per_arm for a in range(5)])
    probs = np.array(task["probs"])
    assert np.all(np.abs(empirical - probs) < binomial_tolerance(probs, pulls_per_arm)), (empirical, probs)
    assert empirical[-1] == 1.0  # p = 1 always pays


def test_tabular_mdp_transitions_and_rewards_follow_the_task():
    family = TabularMDPFamily(states=4, actions=3, max_episode_steps=8)
    task = family.sample_tasks(1, np.random.default_rng(4))[0]
    transitions, rewards_mean = np.array(task["transitions"]), np.array(task["rewards_mean"])
    n = 3000
    venv = family.make_vector_env([task], n)
    states, _ = venv.reset(seed=5)
    assert not states.any()  # every episode starts in state 0
    actions_rng = np.random.default_rng(6)
    counts = np.zeros((4, 3, 4))
    reward_sums = np.zeros((4, 3))
    first = None
    for t in range(family.max_episode_steps):
        actions = np.arange(n) % 3 if t == 0 else actions_rng.integers(3, size=n)
        next_states, rewards, _, _, _ = venv.step(actions)
        np.add.at(counts, (states, actions, next_states), 1)
        np.add.at(reward_sums, (states, actions), rewards)
        if t == 0:
            first = counts[0].copy()
        states = next_states

    # from state 0 under each fixed action: next-state frequencies ≈ transitions[0][a]
    freq = first / first.sum(axis=-1, keepdims=True)
    assert np.all(np.abs(freq - transitions[0]) < binomial_tolerance(transitions[0], n // 3)), (freq, transitions[0])
    # over whole episodes, every well-visited (s, a): next-state frequencies and mean reward follow the task
    visits = counts.sum(axis=-1)
    seen = visits >= 200
    assert seen.sum() >= 6
    freq = counts[seen] / visits[seen][:, None]
    assert np.all(np.abs(freq - transitions[seen]) < binomial_tolerance(transitions[seen], visits[seen][:, None]))
    mean_reward = reward_sums[seen] / visits[seen]
    assert np.all(np.abs(mean_reward - rewards_mean[seen]) < 5 / np.sqrt(visits[seen]))  # reward noise std 1


def test_single_envs_are_registered_with_gymnasium():
    env = gym.make("metasgd_rl_envs.discrete:metasgd_rl/MultiArmedBandit-v0", probs=[0.0, 1.0])
    obs, _ = env.reset(seed=0)
    rewards = []
    for _ in range(10):
        obs, reward, terminated, truncated, _ = env.step(1)
        rewards.append(reward)
    assert obs == 0 and rewards == [1.0] * 10 and truncated and not terminated
    task = TabularMDPFamily().sample_tasks(1, np.random.default_rng(0))[0]
    env = gym.make("metasgd_rl_envs.discrete:metasgd_rl/TabularMDP-v0", **task)
    assert env.observation_space == gym.spaces.Discrete(10) and env.spec.max_episode_steps == 10


# -- refused input -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make, match", [
    (lambda: MultiArmedBanditFamily(arms=0), r"arms must be an integer >= 1, got 0"),
    (lambda: MultiArmedBanditFamily(arms=2.5), r"arms must be an integer >= 1, got 2.5"),
    (lambda: MultiArmedBanditFamily(pulls=True), r"pulls must be an integer >= 1, got True"),
    (lambda: msr.make_task_family("MultiArmedBandit-v0", pulls=-3), r"pulls must be an integer >= 1, got -3"),
    (lambda: TabularMDPFamily(states=0), r"states must be an integer >= 1, got 0"),
    (lambda: TabularMDPFamily(actions="5"), r"actions must be an integer >= 1, got '5'"),
    (lambda: msr.make_task_family("TabularMDP-v0", max_episode_steps=0),
     r"max_episode_steps must be an integer >= 1, got 0"),
])
def test_bad_constructor_arguments_are_refused(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def _mdp_task(**change):
    task = TabularMDPFamily(states=2, actions=2).sample_tasks(1, np.random.default_rng(0))[0]
    return {**task, **change}


BAD_TASKS = [
    (MultiArmedBanditFamily(arms=3), {"probs": [0.1, 0.2]}, r"probs must be a list of 3 probabilities in \[0, 1\]"),
    (MultiArmedBanditFamily(arms=2), {"probs": [0.1, 1.5]}, r"probabilities in \[0, 1\], got \[0.1, 1.5\]"),
    (MultiArmedBanditFamily(arms=2), {"probs": [0.1, float("nan")]}, r"probs must be a list of 2 probabilities"),
    (MultiArmedBanditFamily(arms=2), {"probs": "high"}, r"probs must be a list of 2 probabilities"),
    (MultiArmedBanditFamily(arms=2), {"goal": [0.1, 0.2]}, r"a task must be a dict with key 'probs'"),
    (TabularMDPFamily(states=2, actions=2), _mdp_task(transitions=[[[0.5, 0.6], [1.0, 0.0]]] * 2),
     r"transitions must be a 2 x 2 x 2 nested list of probabilities whose rows sum to 1"),
    (TabularMDPFamily(states=2, actions=2), _mdp_task(transitions=[[[1.5, -0.5], [1.0, 0.0]]] * 2),
     r"transitions must be a 2 x 2 x 2 nested list"),
    (TabularMDPFamily(states=3, actions=2), _mdp_task(), r"transitions must be a 3 x 2 x 3 nested list"),
    (TabularMDPFamily(states=2, actions=2), _mdp_task(rewards_mean=[[1.0, 2.0]]),
     r"rewards_mean must be a 2 x 2 nested list of finite numbers"),
    (TabularMDPFamily(states=2, actions=2), _mdp_task(rewards_mean=[[1.0, 2.0], [float("inf"), 0.0]]),
     r"rewards_mean must be a 2 x 2 nested list of finite numbers"),
    (TabularMDPFamily(states=2, actions=2), {"transitions": [[[1.0, 0.0]] * 2] * 2},
     r"a task must be a dict with key 'rewards_mean'"),
]


@pytest.mark.parametrize("family, task, match", BAD_TASKS, ids=[m for _, _, m in BAD_TASKS])
def test_bad_tasks_are_refused_by_make_env_and_make_vector_env(family, task, match):
    with pytest.raises(ValueError, match=match):
        family.make_env(task)
    with pytest.raises(ValueError, match=match):
        family.make_vector_env([task], 2)


@pytest.mark.parametrize("family_id", IDS)
def test_bad_sampling_arguments_are_refused(family_id):
    family = msr.make_task_family(family_id)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"n must be an integer >= 0, got -1"):
        family.sample_tasks(-1, rng)
    with pytest.raises(ValueError, match=r"n must be an integer >= 0, got 2.0"):
        family.sample_tasks(2.0, rng)
    with pytest.raises(ValueError, match=r"split='validation' is not allowed"):
        family.sample_tasks(2, rng, split="validation")
    with pytest.raises(ValueError, match=r"episodes_per_task must be an integer >= 1, got 0"):
        family.make_vector_env(family.sample_tasks(1, rng), 0)
    assert family.sample_tasks(0, rng) == []


# -- meta-training -------------------------------------------------------------------------------------------


def test_meta_sgd_learns_to_adapt_to_bandits():
    """Seeds 0, 1, 2 give post-adaptation returns 5.21 -> 6.59 / 6.52 / 6.38 (pre-adaptation ≈ 5.0 throughout)."""
    model = msr.MetaSGD(msr.make_task_family("MultiArmedBandit-v0"), policy_kwargs=dict(hidden_sizes=()),
                        meta_batch_size=10, episodes_per_task=20, alpha_init=0.5, outer="adam",
                        outer_kwargs=dict(lr=0.1), alpha_lr=0.1, seed=0)
    tasks = model.family.sample_tasks(40, np.random.default_rng(123), split="test")
    before = model.meta_objective(tasks, 1)
    model.learn(60, progress_bar=False)
    after = model.meta_objective(tasks, 1)
    assert abs(before.pre_return - 5.0) < 0.3  # uniform over arms: 10 pulls x mean probability 0.5
    assert after.post_return > before.post_return + 0.7, (before.post_return, after.post_return)
    assert after.post_return > after.pre_return + 0.8, (after.pre_return, after.post_return)
    result = msr.evaluate_adaptation(model, n_tasks=20, steps=2, episodes=20, seed=0)  # held-out bandits
    assert result.returns.shape == (20, 3)
    assert result.mean()[1] > result.mean()[0] + 0.5, result.mean()
