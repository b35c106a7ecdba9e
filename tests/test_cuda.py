"""The learner on a GPU (skipped without CUDA; CPU is the default everywhere)."""

from __future__ import annotations

import math

import pytest
import torch

from metasgd_rl import MetaSGD, evaluate_adaptation

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")


@pytest.mark.parametrize("chunk", [None, 2])
@pytest.mark.parametrize("outer", ["trpo", "adam", "ppo"])
def test_a_meta_iteration_on_cuda(outer, chunk):
    model = MetaSGD("Navigation2D-v0", policy_kwargs=dict(hidden_sizes=(16,)), meta_batch_size=3,
                    episodes_per_task=4, outer=outer, device="cuda", seed=0, task_chunk_size=chunk)
    info = model.train_step()
    assert math.isfinite(info["loss"]) and not info["update_rejected"]
    assert all(p.device.type == "cuda" for p in model.outer_optimizer.params)
    result = evaluate_adaptation(model, n_tasks=2, steps=1, episodes=2)
    assert result.returns.shape == (2, 2)


def test_cuda_and_cpu_sample_the_same_environments():
    kwargs = dict(policy_kwargs=dict(hidden_sizes=(16,)), meta_batch_size=2, episodes_per_task=2, seed=0)
    cpu, gpu = MetaSGD("Navigation2D-v0", **kwargs), MetaSGD("Navigation2D-v0", device="cuda", **kwargs)
    assert cpu.sample_train_tasks(0) == gpu.sample_train_tasks(0)  # tasks never depend on the device
