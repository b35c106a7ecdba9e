"""What a policy's episodes are made of, per task: length, early ends, return per step and action energy.

A mean return cannot tell a policy that runs from one that ends its episodes early. On a family whose episodes
end when the agent falls and whose reward per step is negative (Ant-v5's control cost of 0.5 ||a||^2 exceeds
its healthy reward of 1 at an exploration noise of 1), falling sooner raises the return. These statistics say
which of the two a trained policy learned, before and after adaptation (``scripts/episode_anatomy.py``).
"""

from __future__ import annotations

from typing import Any

from metasgd_rl.sampler import EpisodeBatch


def episode_anatomy(batch: EpisodeBatch, max_episode_steps: int) -> list[dict[str, Any]]:
    """Per task of ``batch``: its episodes' mean length and return, the share that ended before
    ``max_episode_steps`` (terminated, not truncated), and per step taken: the mean reward and the mean squared
    norm of the sampled action (before any clipping by the env; Ant-v5's control cost is half of it)."""
    if max_episode_steps < 1:
        raise ValueError(f"max_episode_steps={max_episode_steps} must be at least 1")
    lengths = batch.mask.sum(0)  # [T, E]
    steps = lengths.sum(-1)  # [T]
    squared_actions = batch.actions.reshape(*batch.mask.shape, -1).square().sum(-1) * batch.mask
    rewards = batch.rewards.sum(0)  # [T, E]
    rows = []
    for t in range(batch.num_tasks):
        taken = max(float(steps[t]), 1.0)
        rows.append({
            "task": batch.tasks[t] if t < len(batch.tasks) else None,
            "episodes": batch.episodes_per_task,
            "mean_length": float(lengths[t].mean()),
            "ended_early": float((lengths[t] < max_episode_steps).float().mean()),
            "mean_return": float(rewards[t].mean()),
            "reward_per_step": float(rewards[t].sum()) / taken,
            "squared_action_per_step": float(squared_actions[:, t].sum()) / taken,
        })
    return rows
