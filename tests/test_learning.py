"""Meta-training actually learns to adapt (Navigation2D, fixed seed, a few seconds on 2 cores)."""

from __future__ import annotations

import numpy as np
import torch

from metasgd_rl import MetaSGD


def held_out_returns(model: MetaSGD) -> tuple[float, float]:
    """Mean return before and after one adaptation step on 20 held-out tasks (fixed seed, no update)."""
    tasks = model.family.sample_tasks(20, np.random.default_rng(123), split="test")
    batch = model.meta_objective(tasks, 999)
    return batch.pre_return, batch.post_return


def test_meta_sgd_learns_to_adapt_on_navigation2d():
    model = MetaSGD("Navigation2D-v0", policy_kwargs=dict(hidden_sizes=(32, 32)), meta_batch_size=10,
                    episodes_per_task=10, outer="adam", outer_kwargs=dict(lr=3e-3), seed=0)
    alpha_before = {n: a.detach().clone() for n, a in model.step_sizes.alphas.items()}
    pre0, post0 = held_out_returns(model)
    model.learn(100, progress_bar=False)
    pre, post = held_out_returns(model)
    assert post > pre + 10, (pre, post)  # adaptation helps after meta-training
    assert post > post0 + 30, (post0, post)  # and the adapted policy is much better than at iteration 0
    assert any(not torch.allclose(a.detach(), alpha_before[n]) for n, a in model.step_sizes.alphas.items())


def test_learn_stops_when_the_callback_returns_false():
    model = MetaSGD("Navigation2D-v0", policy_kwargs=dict(hidden_sizes=(8,)), meta_batch_size=2,
                    episodes_per_task=2, seed=0)
    seen = []
    model.learn(10, callback=lambda info: seen.append(info["iteration"]) or len(seen) < 3, progress_bar=False)
    assert seen == [1, 2, 3] and model.iteration == 3
