"""Fast-adaptation evaluation: returns on held-out tasks before and after each of K inner steps.

All tasks adapt at once, as in training (one batched rollout and one autograd call per step), but without
a second-order graph: evaluation only needs the adapted parameters, not their derivatives.

Evaluation never uses training tasks by default: ``split="test"`` draws held-out tasks (disjoint from the
training tasks for a family with a finite task set, a separate random stream for a continuous one). A family
that cannot hold tasks out (``TaskFamily.disjoint_splits = False``, e.g. two running directions) gets a
``UserWarning`` saying so. ``split="train"`` evaluates on tasks of the training distribution; it is there for
diagnosis (is a gap between training and held-out returns overfitting to the task distribution?) and must be
asked for explicitly.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from metasgd_rl.family import Task, check_split, sample_checked_tasks
from metasgd_rl.io import atomic_write_text
from metasgd_rl.model import _int_at_least, first_nonfinite_in
from metasgd_rl.sampler import EpisodeBatch
from metasgd_rl.stats import t_ci95
from metasgd_rl.tables import aligned_table

if TYPE_CHECKING:
    from metasgd_rl.model import MetaSGD

#: the ``format`` entry of :meth:`AdaptationResult.to_dict`
RESULT_FORMAT = "metasgd-rl/adaptation-result/1"

SeedLike = int | np.random.SeedSequence


def seed_to_json(seed: SeedLike | None) -> int | dict[str, Any] | None:
    """An int seed as is; a SeedSequence as ``{"entropy": ..., "spawn_key": [...]}`` (rebuilds the same one)."""
    if seed is None or isinstance(seed, (int, np.integer)):
        return None if seed is None else int(seed)
    if isinstance(seed, np.random.SeedSequence):
        return {"entropy": int(seed.entropy), "spawn_key": [int(k) for k in seed.spawn_key]}
    raise TypeError(f"seed must be an int or a numpy SeedSequence, got {type(seed).__name__}")


def seed_from_json(seed: Any) -> SeedLike | None:
    """The inverse of :func:`seed_to_json`."""
    if isinstance(seed, dict):
        return np.random.SeedSequence(seed["entropy"], spawn_key=tuple(seed.get("spawn_key", ())))
    return None if seed is None else int(seed)


def _finite_or_none(x: Any) -> Any:
    if isinstance(x, list):
        return [_finite_or_none(v) for v in x]
    return x if math.isfinite(x) else None


def _array(values: Any, name: str) -> np.ndarray:
    """A float64 array from nested lists (None -> NaN)."""
    try:
        return np.array(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a nested list of numbers: {err}") from err


def _episode_means(per_episode: Any, name: str, n_tasks: int, given: Any, given_name: str
                   ) -> tuple[np.ndarray, np.ndarray]:
    """``per_episode`` as a float64 array ``[n_tasks, steps + 1, episodes]`` and its mean over episodes, after checking
    its shape and that ``given`` (the per-task values passed beside it, if any) is that mean."""
    per_episode = np.asarray(per_episode, dtype=np.float64)
    if per_episode.ndim != 3 or per_episode.shape[0] != n_tasks:
        raise ValueError(f"{name} must be shaped [n_tasks={n_tasks}, steps + 1, episodes], "
                         f"got {list(per_episode.shape)}")
    mean = per_episode.mean(axis=2)
    if given is not None and not np.allclose(np.asarray(given, dtype=np.float64), mean, equal_nan=True):
        raise ValueError(f"{given_name} must be the mean of {name} over episodes")
    return per_episode, mean


@dataclass
class AdaptationResult:
    """Returns of ``len(tasks)`` tasks after 0..K inner steps.

    ``episode_returns[i, k, e]``: undiscounted return of episode e of task i, sampled with the parameters
    after k inner steps; ``returns[i, k]`` is their mean over episodes. A result built by hand (a baseline
    evaluated elsewhere) may give ``returns`` only, or ``episode_returns`` only (``returns`` is then their
    mean). ``method`` labels the result in reports, ``seed`` (an int, or a SeedSequence as in
    :func:`seed_to_json`) is what the rollouts were drawn from, ``family`` the task family's registry id.

    For a family with a success flag (:attr:`~metasgd_rl.TaskFamily.success_key`, e.g. Meta-World),
    ``episode_success[i, k, e]`` is 1.0 if episode e of task i succeeded at any step and ``success[i, k]`` is the
    fraction of task i's episodes that succeeded after k steps; both are None otherwise.
    """

    tasks: list[Task]
    returns: np.ndarray | None = None  # [n_tasks, steps + 1]
    episodes: int | None = None
    split: str = "test"
    episode_returns: np.ndarray | None = None  # [n_tasks, steps + 1, episodes]
    seed: int | dict[str, Any] | None = None
    method: str = ""
    family: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    success: np.ndarray | None = None  # [n_tasks, steps + 1]
    episode_success: np.ndarray | None = None  # [n_tasks, steps + 1, episodes]

    def __post_init__(self) -> None:
        self.tasks = list(self.tasks)
        self._check_success()
        if self.episode_returns is not None:
            self.episode_returns, mean = _episode_means(self.episode_returns, "episode_returns", len(self.tasks),
                                                        self.returns, "returns")
            if self.returns is None:
                self.returns = mean
            if self.episodes is None:
                self.episodes = self.episode_returns.shape[2]
        if self.returns is None:
            raise ValueError("AdaptationResult needs returns [n_tasks, steps + 1] or episode_returns")
        self.returns = np.asarray(self.returns, dtype=np.float64)
        if self.returns.ndim != 2 or self.returns.shape[0] != len(self.tasks) or self.returns.shape[1] < 1:
            raise ValueError(f"returns must be shaped [n_tasks={len(self.tasks)}, steps + 1], "
                             f"got {list(self.returns.shape)}")
        if not isinstance(self.seed, (dict, type(None))):
            self.seed = seed_to_json(self.seed)
        if self.success is not None and self.success.shape != self.returns.shape:
            raise ValueError(f"success must be shaped like returns {list(self.returns.shape)}, "
                             f"got {list(self.success.shape)}")

    def _check_success(self) -> None:
        if self.episode_success is not None:
            self.episode_success, self.success = _episode_means(self.episode_success, "episode_success",
                                                                len(self.tasks), self.success, "success")
        if self.success is not None:
            self.success = np.asarray(self.success, dtype=np.float64)
            if not np.all((self.success >= 0) & (self.success <= 1)):
                raise ValueError("success rates must lie in [0, 1]")

    @property
    def steps(self) -> int:
        return self.returns.shape[1] - 1

    @property
    def n_tasks(self) -> int:
        return self.returns.shape[0]

    def mean(self) -> np.ndarray:
        """Mean return over tasks after 0..K steps, ``[steps + 1]``."""
        return self.returns.mean(axis=0)

    def ci95(self) -> np.ndarray:
        """Half-width of the 95% confidence interval of :meth:`mean` over tasks, ``[steps + 1]``.

        Student's t: ``t_{0.975, n-1} * std(returns, ddof=1) / sqrt(n)`` over the n tasks (each task's
        return already averages its episodes). NaN with a single task, where no interval can be estimated.
        """
        return t_ci95(self.returns, axis=0)

    def success_mean(self) -> np.ndarray | None:
        """Mean success rate over tasks after 0..K steps, ``[steps + 1]`` (None without a success flag)."""
        return None if self.success is None else self.success.mean(axis=0)

    def success_ci95(self) -> np.ndarray | None:
        """Half-width of the 95% confidence interval of :meth:`success_mean` over tasks (Student's t, as
        :meth:`ci95`); None without a success flag."""
        return None if self.success is None else t_ci95(self.success, axis=0)

    # -- display ---------------------------------------------------------------------------------------
    def __repr__(self) -> str:
        """One line (the arrays would be thousands of characters): what was evaluated and the mean return after
        each step (the first and last beyond five steps)."""
        means = [f"{m:.2f}" for m in self.mean()]
        if len(means) > 5:
            means = [means[0], "…", means[-1]]
        return (f"AdaptationResult(method={self.method!r}, family={self.family!r}, {self.n_tasks} {self.split} "
                f"tasks, {self.episodes} episodes, steps 0..{self.steps}, mean return {' → '.join(means)})")

    def _title(self) -> str:
        name = self.method or "AdaptationResult"
        family = f" on {self.family}" if self.family else ""
        seed = "" if self.seed is None else f", seed {json.dumps(self.seed)}"
        return (f"{name}{family}: {self.n_tasks} {self.split} tasks, {self.episodes} episodes per task and step"
                f"{seed}")

    def _table(self) -> str:
        """Mean return ± 95% CI (and success rate, where recorded) after 0..K inner steps, one row per step."""
        def cell(mean: float, ci: float) -> str:
            return f"{mean:.2f} ± {'n/a' if not math.isfinite(ci) else f'{ci:.2f}'}"

        header = ["inner steps", "mean return ± 95% CI"]
        columns = [[cell(m, c) for m, c in zip(self.mean(), self.ci95(), strict=True)]]
        if self.success is not None:
            header.append("success rate ± 95% CI")
            columns.append([cell(m, c) for m, c in zip(self.success_mean(), self.success_ci95(), strict=True)])
        return aligned_table(header, [[str(k), *(col[k] for col in columns)] for k in range(self.steps + 1)],
                             align="r" * len(header))

    def summary(self) -> str:
        """A short text table: what was evaluated, then mean return ± 95% CI over tasks after 0..K steps."""
        return f"{self._title()}\n{self._table()}"

    def _repr_markdown_(self) -> str:
        """The :meth:`summary` table as markdown, which notebooks (Jupyter) render."""
        return f"**{self._title()}**\n\n{self._table()}\n"

    # -- JSON ------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data (non-finite numbers as null); :meth:`from_dict` rebuilds the result.

        ``mean`` and ``ci95`` are included for readers of the file; :meth:`from_dict` recomputes them.
        """
        return {
            "format": RESULT_FORMAT,
            "method": self.method,
            "family": self.family,
            "split": self.split,
            "seed": self.seed,
            "episodes": self.episodes,
            "tasks": [dict(t) for t in self.tasks],
            "returns": _finite_or_none(self.returns.tolist()),
            "episode_returns": None if self.episode_returns is None else
            _finite_or_none(self.episode_returns.tolist()),
            "mean": _finite_or_none(self.mean().tolist()),
            "ci95": _finite_or_none(self.ci95().tolist()),
            **({} if self.success is None else {
                "success": self.success.tolist(),
                "episode_success": None if self.episode_success is None else self.episode_success.tolist(),
                "success_mean": self.success_mean().tolist(),
                "success_ci95": _finite_or_none(self.success_ci95().tolist()),
            }),
            **({"extra": self.extra} if self.extra else {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AdaptationResult:
        """The result saved by :meth:`to_dict` (or read back from :meth:`save`'s JSON)."""
        if not isinstance(data, Mapping) or "tasks" not in data or "returns" not in data:
            raise ValueError("an AdaptationResult dict needs at least 'tasks' and 'returns'")
        if data.get("format", RESULT_FORMAT) != RESULT_FORMAT:
            raise ValueError(f"format={data['format']!r} is not allowed; use {RESULT_FORMAT!r}")
        episode_returns = data.get("episode_returns")
        return cls(
            tasks=list(data["tasks"]),
            returns=_array(data["returns"], "returns"),
            episodes=data.get("episodes"),
            split=data.get("split", "test"),
            episode_returns=None if episode_returns is None else _array(episode_returns, "episode_returns"),
            seed=data.get("seed"),
            method=data.get("method", ""),
            family=data.get("family"),
            extra=dict(data.get("extra", {})),
            success=None if data.get("success") is None else _array(data["success"], "success"),
            episode_success=None if data.get("episode_success") is None
            else _array(data["episode_success"], "episode_success"),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n"

    def save(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_dict` as JSON to ``path``, atomically (temporary file + rename)."""
        return atomic_write_text(path, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike) -> AdaptationResult:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def _seed_sequence(seed: SeedLike) -> np.random.SeedSequence:
    if isinstance(seed, np.random.SeedSequence):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed={seed!r} is not allowed; use an integer >= 0 or a numpy SeedSequence")
    return np.random.SeedSequence(int(seed))


def evaluation_tasks(model: MetaSGD, n_tasks: int, split: str = "test", seed: SeedLike = 0) -> list[Task]:
    """The tasks :func:`evaluate_adaptation` samples for ``(n_tasks, split, seed)``.

    Warns (``UserWarning``) when ``split="test"`` but the family cannot hold tasks out
    (``disjoint_splits = False``): the "held-out" tasks then come from the training distribution.
    """
    n_tasks = _int_at_least("n_tasks", n_tasks, 1)
    check_split(split)
    if split == "test" and not getattr(model.family, "disjoint_splits", True):
        warnings.warn(f"{model.family!r} declares disjoint_splits = False: its held-out ('test') tasks come from "
                      "the training distribution (the evaluation measures adaptation to tasks seen in "
                      "training, not generalisation to new ones)", UserWarning, stacklevel=3)
    task_ss, _ = _seed_sequence(seed).spawn(2)
    return sample_checked_tasks(model.family, n_tasks, np.random.default_rng(task_ss), split=split)


def adaptation_rollouts(model: MetaSGD, tasks: Sequence[Task], steps: int, episodes: int,
                        seed: SeedLike = 0) -> list[EpisodeBatch]:
    """The ``steps + 1`` batches of :func:`evaluate_adaptation`: batch k sampled after k inner steps.

    Rollout seeds derive from ``seed`` exactly as in :func:`evaluate_adaptation`, so the same
    ``(tasks, steps, episodes, seed)`` gives the episodes that it evaluates (e.g. to plot them).
    """
    steps = _int_at_least("steps", steps, 0)
    episodes = _int_at_least("episodes", episodes, 1)
    tasks = list(tasks)
    if not tasks:
        raise ValueError("tasks=[] is not allowed; give at least one task")
    _, rollout_ss = _seed_sequence(seed).spawn(2)
    step_seeds = rollout_ss.spawn(steps + 1)
    params, batches = model.adapt_tasks(tasks, episodes, step_seeds[:-1])
    batches.append(model.sample_episodes(params, tasks, episodes, step_seeds[-1]))
    return batches


def evaluate_adaptation(
    model: MetaSGD,
    n_tasks: int = 40,
    steps: int = 3,
    episodes: int = 20,
    split: str = "test",
    seed: SeedLike = 0,
    tasks: Sequence[Task] | None = None,
    method: str | None = None,
) -> AdaptationResult:
    """Adapt ``model`` to ``n_tasks`` tasks of ``split`` with up to ``steps`` inner steps of ``episodes`` each.

    Step k samples ``episodes`` episodes per task with the parameters after k steps (their returns are
    ``episode_returns[:, k, :]``, their mean ``returns[:, k]``) and, for k < ``steps``, takes the next inner
    step on them with the model's α (the last trained α is reused past ``model.inner_steps``), estimator form
    and advantages. Tasks and rollouts derive from ``seed`` only: the same seed gives the same numbers, and
    θ, α are left untouched.

    ``split="test"`` (the default) draws held-out tasks, never training ones; for a family with
    ``disjoint_splits = False`` it warns that they come from the training distribution. ``split="train"``
    evaluates on the training distribution and must be asked for explicitly. Pass ``tasks`` to evaluate on
    given tasks instead of sampling ``n_tasks`` (e.g. the same tasks for several models; the rollout seeds
    still derive from ``seed``, so the same ``seed`` gives every model the same environment seeds).
    ``method`` labels the result (default: the model's class name). For a family with a success flag the
    result also holds each episode's success (``result.success[i, k]``: task i's success rate after k steps).
    """
    steps = _int_at_least("steps", steps, 0)
    episodes = _int_at_least("episodes", episodes, 1)
    check_split(split)
    if tasks is None:
        tasks = evaluation_tasks(model, n_tasks, split, seed)
    batches = adaptation_rollouts(model, tasks, steps, episodes, seed)
    cause = first_nonfinite_in(model.family, [(f"evaluation rollouts after {k} inner steps", b)
                                              for k, b in enumerate(batches)], "evaluation tasks")
    if cause:
        warnings.warn(f"evaluate_adaptation: {cause}; the returns it affects are not finite", RuntimeWarning,
                      stacklevel=2)
    episode_returns = np.stack([b.episode_returns().double().cpu().numpy() for b in batches], axis=1)
    episode_success = None if any(b.success is None for b in batches) else \
        np.stack([b.success.double().cpu().numpy() for b in batches], axis=1)
    return AdaptationResult(
        tasks=list(tasks), episodes=episodes, split=split, episode_returns=episode_returns,
        seed=seed_to_json(seed), method=type(model).__name__ if method is None else str(method),
        family=model.family.id, episode_success=episode_success,
    )
