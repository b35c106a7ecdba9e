"""Discrete observations and actions through sampling, adaptation and meta-training."""

from __future__ import annotations

import numpy as np
import torch

import metasgd_rl as msr
from tests.bandit import ArmsFamily


def test_arms_family_passes_the_check_and_holds_out_arms():
    family = ArmsFamily(arms=10)
    msr.check_task_family(family)
    train = {t["best"] for t in family.sample_tasks(200, np.random.default_rng(0))}
    test = {t["best"] for t in family.sample_tasks(200, np.random.default_rng(0), split="test")}
    assert train == set(range(8)) and test == {8, 9}


def test_categorical_meta_sgd_learns_to_find_the_paying_arm():
    model = msr.MetaSGD(ArmsFamily(), policy_kwargs=dict(hidden_sizes=()), meta_batch_size=10,
                        episodes_per_task=20, baseline="none", alpha_init=0.5, outer="adam",
                        outer_kwargs=dict(lr=0.05), alpha_lr=0.05, seed=0)
    tasks = model.family.sample_tasks(40, np.random.default_rng(5), split="train")
    before = model.meta_objective(tasks, 1)
    model.learn(40, progress_bar=False)
    after = model.meta_objective(tasks, 1)
    assert abs(before.pre_return - 0.2) < 0.06  # uniform over 5 arms
    assert after.post_return > after.pre_return + 0.2, (after.pre_return, after.post_return)
    assert after.post_return > before.post_return + 0.2, (before.post_return, after.post_return)
    batch = after.post_batch
    assert batch.actions.dtype == torch.long and batch.observations.shape[-1] == 1  # one-hot of Discrete(1)


def test_adapted_categorical_policy_predicts_the_best_arm():
    model = msr.MetaSGD(ArmsFamily(), policy_kwargs=dict(hidden_sizes=()), episodes_per_task=50,
                        baseline="none", alpha_init=5.0, seed=0)
    for best in range(5):
        adapted = model.adapt({"best": best}, steps=2, seed=best)
        action, _ = adapted.predict(0, deterministic=True)
        assert int(action) == best
