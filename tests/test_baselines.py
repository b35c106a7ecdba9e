"""Baselines: multi-task pretraining and random init fine-tuned by vanilla PG, SB3 PPO from scratch, budgets."""

import json
import math
import random

import numpy as np
import pytest
import torch
from scipy import stats

import metasgd_rl as msr
from metasgd_rl.baselines import (
    PPOResult,
    adaptation_samples,
    budget_to_match,
    ppo_from_scratch,
    ppo_schedule,
    pretrain_multitask,
    random_init,
)


@pytest.fixture(scope="module")
def navigation():
    return msr.make_task_family("Navigation2D-v0")


def _theta(model):
    return {n: p.detach().clone() for n, p in model.policy.adaptable_parameters().items()}


def _pre_update_return(model):
    return msr.evaluate_adaptation(model, n_tasks=10, steps=0, episodes=10, seed=1).mean()[0]


# Random init scores about -98 on these tasks. Gains over seeds 0, 1, 2 (measured): Adam 31.6, 38.5, 41.0;
# TRPO 34.0, 36.2, 34.4. The margin is less than half of the smallest.
@pytest.mark.parametrize("outer, outer_kwargs", [("adam", {"lr": 1e-2}), ("trpo", {})])
def test_pretraining_improves_the_pre_update_return(navigation, outer, outer_kwargs):
    infos = []
    pretrained = pretrain_multitask(navigation, iterations=5, meta_batch_size=5, episodes_per_task=5, outer=outer,
                                    outer_kwargs=outer_kwargs, seed=0, callback=infos.append, progress_bar=False)
    untrained = random_init(navigation, seed=0)
    assert [i["iteration"] for i in infos] == [1, 2, 3, 4, 5] and pretrained.iteration == 5
    assert not any(i["update_rejected"] for i in infos)
    assert _pre_update_return(pretrained) > _pre_update_return(untrained) + 15.0


def test_fine_tuning_models_have_a_fixed_scalar_step_and_evaluate(navigation):
    pretrained = pretrain_multitask(navigation, iterations=2, meta_batch_size=3, episodes_per_task=4, outer="adam",
                                    step_size=0.05, seed=2, progress_bar=False)
    untrained = random_init(navigation, step_size=0.05, seed=2)
    tasks = navigation.sample_tasks(4, np.random.default_rng(0), split="test")
    for model in (pretrained, untrained):
        assert isinstance(model, msr.MAML) and model.estimator == "maml" and not model.learn_alpha
        assert model.step_sizes.granularity == "scalar"
        alphas = model.step_sizes.for_step(0)
        assert all(torch.allclose(a, torch.tensor(0.05)) and not a.requires_grad for a in alphas.values())
        result = msr.evaluate_adaptation(model, steps=2, episodes=5, tasks=tasks, seed=3)
        assert result.returns.shape == (4, 3) and np.isfinite(result.returns).all()
        assert result.tasks == tasks
    # pretraining starts from the random init of the same seed and moves it
    assert any(not torch.equal(a, b) for a, b in zip(_theta(pretrained).values(), _theta(untrained).values(),
                                                      strict=True))
    assert json.loads(json.dumps(pretrained.config))["alpha_init"] == 0.05


def test_random_init_and_pretraining_are_deterministic_for_a_seed(navigation):
    a, b, c = random_init(navigation, seed=3), random_init(navigation, seed=3), random_init(navigation, seed=4)
    for name, p in _theta(a).items():
        assert torch.equal(p, _theta(b)[name])
    assert any(not torch.equal(p, _theta(c)[n]) for n, p in _theta(a).items())
    kwargs = dict(iterations=2, meta_batch_size=2, episodes_per_task=3, outer="adam", seed=5, progress_bar=False)
    first, second = pretrain_multitask(navigation, **kwargs), pretrain_multitask(navigation, **kwargs)
    for name, p in _theta(first).items():
        assert torch.equal(p, _theta(second)[name])


def test_pretraining_rejects_bad_arguments(navigation):
    with pytest.raises(ValueError, match="outer='ppo'"):
        pretrain_multitask(navigation, iterations=1, outer="ppo")
    with pytest.raises(ValueError, match="iterations=0"):
        pretrain_multitask(navigation, iterations=0)
    with pytest.raises(ValueError, match="estimator='lvc'"):
        random_init(navigation, estimator="lvc")


def test_pretraining_shows_a_progress_bar_by_default(navigation, capsys):
    pretrain_multitask(navigation, iterations=2, meta_batch_size=2, episodes_per_task=2, outer="adam")
    err = capsys.readouterr().err
    assert "pretrain" in err and "2/2" in err
    pretrain_multitask(navigation, iterations=1, meta_batch_size=2, episodes_per_task=2, outer="adam",
                       progress_bar=False)
    assert capsys.readouterr() == ("", "")


def test_the_baselines_are_exported_from_the_top_level():
    from metasgd_rl import baselines

    for name in ("random_init", "pretrain_multitask", "ppo_from_scratch", "adaptation_samples", "budget_to_match"):
        assert getattr(msr, name) is getattr(baselines, name) and name in msr.__all__


def test_the_api_page_names_the_baselines_and_their_module():
    from pathlib import Path

    page = (Path(__file__).parents[1] / "docs" / "reference" / "api.md").read_text(encoding="utf-8")
    assert "`metasgd_rl.baselines`" in page
    for name in ("random_init", "pretrain_multitask", "ppo_from_scratch", "adaptation_samples", "budget_to_match"):
        assert f"::: metasgd_rl.{name}\n" in page


def test_ppo_from_scratch_learns_with_more_budget_and_is_seeded(capsys):
    family = msr.make_task_family("Navigation2D-v0", max_episode_steps=10)
    tasks = [{"goal": [0.4, 0.4]}, {"goal": [-0.4, 0.3]}]
    np_state = np.random.get_state()[1].copy()  # noqa: NPY002 (checks that SB3 leaves it alone)
    torch_state, py_state = torch.get_rng_state(), random.getstate()
    result = ppo_from_scratch(family, tasks, [100, 2000], eval_episodes=20, seed=0,
                              policy_kwargs=dict(net_arch=[32, 32]))  # with its progress bar (the default)
    err = capsys.readouterr().err
    assert "PPO from scratch" in err and "100%" in err and "4.20k/4.20k" in err  # 2 tasks × (100 + 2000) steps
    # SB3 seeds the global RNGs; they are restored
    assert np.array_equal(np.random.get_state()[1], np_state)  # noqa: NPY002
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert random.getstate() == py_state
    assert result.returns.shape == (2, 2) and result.timesteps == [100, 2000] and result.mean().shape == (2,)
    # measured gains of the task mean for seeds 0, 1, 2: 0.61, 0.80, 0.60 (returns about -6)
    assert result.mean()[1] > result.mean()[0] + 0.25
    again = ppo_from_scratch(family, tasks[:1], [100], eval_episodes=20, seed=0, policy_kwargs=dict(net_arch=[32, 32]),
                             progress_bar=False)
    assert capsys.readouterr().err == ""
    assert again.returns[0, 0] == result.returns[0, 0]  # the bar does not change what PPO does
    assert json.loads(json.dumps(result.to_dict()))["budgets"] == [100, 2000]


def test_ppo_schedule_fits_the_budget():
    assert ppo_schedule(2000) == (2000, 50, 2000)
    assert ppo_schedule(200_000) == (2000, 50, 200_000)
    assert ppo_schedule(20) == (20, 20, 20)
    for budget in (2, 64, 2047, 2049, 12345, 99_991):
        n_steps, batch, total = ppo_schedule(budget)
        assert 2 <= n_steps <= 2048 and 2 <= batch <= n_steps
        assert budget <= total < budget + math.ceil(budget / 2048) and total % n_steps == 0
    with pytest.raises(ValueError, match="budget=1"):
        ppo_schedule(1)


def test_ppo_result_summaries():
    returns = np.array([[-10.0, -5.0], [-12.0, -4.0], [-11.0, -6.0]])
    result = PPOResult(tasks=[{}] * 3, budgets=[10, 100], returns=returns, timesteps=[10, 100], eval_episodes=5,
                       deterministic=False)
    assert np.allclose(result.mean(), [-11.0, -5.0])
    expected = stats.t.ppf(0.975, 2) * returns.std(axis=0, ddof=1) / np.sqrt(3)
    assert np.allclose(result.ci95(), expected)
    single = PPOResult(tasks=[{}], budgets=[10], returns=returns[:1, :1], timesteps=[10], eval_episodes=5,
                       deterministic=False)
    assert np.isnan(single.ci95()).all()


def test_adaptation_samples(navigation):
    assert adaptation_samples(20, 3, navigation) == 20 * 100 * 3
    assert adaptation_samples(20, 0, navigation) == 0
    short = msr.make_task_family("Navigation2D-v0", max_episode_steps=7)
    model = random_init(short, episodes_per_task=4)
    assert adaptation_samples(model, 2) == 4 * 7 * 2
    tasks = [{"goal": [0.3, 0.2]}, {"goal": [-0.1, 0.4]}]
    _, batches = model.adapt_tasks(tasks, 4, np.random.SeedSequence(0).spawn(2))
    assert adaptation_samples(batches, 2) == 4 * 7 * 2  # no episode reaches the goal in 7 steps
    assert adaptation_samples(batches, 1) == 4 * 7
    with pytest.raises(ValueError, match="family"):
        adaptation_samples(20, 1)
    with pytest.raises(ValueError, match="steps=3"):
        adaptation_samples(batches, 3)


def test_budget_to_match():
    budgets, means = [1_000, 10_000, 100_000], [-50.0, -20.0, -10.0]
    assert budget_to_match(budgets, means, -35.0) == pytest.approx(math.sqrt(1_000 * 10_000))  # halfway in log
    assert budget_to_match(budgets, means, -20.0) == pytest.approx(10_000)
    assert budget_to_match(budgets, means, -60.0) == 1_000  # reached at the first budget
    assert budget_to_match(budgets, means, -5.0) is None  # never reached
    # first crossing counts when PPO's curve is not monotone
    assert budget_to_match(budgets, [-50.0, -10.0, -30.0], -30.0) == pytest.approx(1_000 * 10 ** 0.5)
    with pytest.raises(ValueError, match="increasing"):
        budget_to_match([10, 5], [0.0, 1.0], 0.5)
