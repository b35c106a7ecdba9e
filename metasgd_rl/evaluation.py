"""Fast-adaptation evaluation: returns on (held-out) tasks before and after each of K inner steps.

All tasks adapt at once, as in training (one batched rollout and one autograd call per step), but without
a second-order graph: evaluation only needs the adapted parameters, not their derivatives.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from metasgd_rl.family import Task
from metasgd_rl.sampler import sample_episodes

if TYPE_CHECKING:
    from metasgd_rl.model import MetaSGD


@dataclass
class AdaptationResult:
    """``returns[i, k]``: mean undiscounted return of task i's episodes after k inner steps."""

    tasks: list[Task]
    returns: np.ndarray  # [n_tasks, steps + 1]
    episodes: int
    split: str

    @property
    def steps(self) -> int:
        return self.returns.shape[1] - 1

    def mean(self) -> np.ndarray:
        """Mean return over tasks after 0..K steps, ``[steps + 1]``."""
        return self.returns.mean(axis=0)

    def ci95(self) -> np.ndarray:
        """Half-width of a 95% confidence interval of :meth:`mean` over tasks (normal approximation).

        NaN with a single task, where no interval can be estimated.
        """
        n = self.returns.shape[0]
        if n < 2:
            return np.full(self.returns.shape[1], np.nan)
        return 1.96 * self.returns.std(axis=0, ddof=1) / np.sqrt(n)


def evaluate_adaptation(
    model: MetaSGD,
    n_tasks: int = 40,
    steps: int = 3,
    episodes: int = 20,
    split: str = "test",
    seed: int | np.random.SeedSequence = 0,
    tasks: Sequence[Task] | None = None,
) -> AdaptationResult:
    """Adapt ``model`` to ``n_tasks`` tasks of ``split`` with up to ``steps`` inner steps of ``episodes`` each.

    Step k samples ``episodes`` episodes per task with the parameters after k steps (their mean return is
    ``returns[:, k]``) and, for k < ``steps``, takes the next inner step on them with the model's α (the
    last trained α is reused past ``model.inner_steps``), estimator form and advantages. Tasks and rollouts
    derive from ``seed`` only: the same seed gives the same numbers, and θ, α are left untouched. Pass
    ``tasks`` to evaluate on given tasks instead of sampling ``n_tasks``.
    """
    if isinstance(steps, bool) or int(steps) != steps or steps < 0:
        raise ValueError(f"steps={steps!r} is not allowed; use an integer >= 0")
    if isinstance(episodes, bool) or int(episodes) != episodes or episodes < 1:
        raise ValueError(f"episodes={episodes!r} is not allowed; use an integer >= 1")
    ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(int(seed))
    task_ss, rollout_ss = ss.spawn(2)
    if tasks is None:
        if isinstance(n_tasks, bool) or int(n_tasks) != n_tasks or n_tasks < 1:
            raise ValueError(f"n_tasks={n_tasks!r} is not allowed; use an integer >= 1")
        tasks = model.family.sample_tasks(int(n_tasks), np.random.default_rng(task_ss), split=split)
    tasks = list(tasks)
    step_seeds = rollout_ss.spawn(int(steps) + 1)
    params, batches = model.adapt_tasks(tasks, int(episodes), step_seeds[:-1])
    batches.append(sample_episodes(model.family, model.policy, params, tasks, int(episodes), step_seeds[-1],
                                   model.device))
    returns = [batch.mean_returns().cpu().numpy() for batch in batches]
    table = np.stack(returns, axis=1).astype(np.float64)
    return AdaptationResult(tasks=tasks, returns=table, episodes=int(episodes), split=split)
