"""The α probe: does the adapted policy rely on the step sizes learned for the hidden layers?

Meta-SGD can learn α for every parameter, yet a trained model may use only the output layer's (its hidden
layers' α staying where they started, or mattering to nothing). The probe answers that with three adaptations
of the same tasks on the same episodes (same tasks, same rollout seeds: common random numbers):

- ``learned``: the model as trained;
- ``hidden_init``: the hidden layers' α reset to α_init (output layer and log-std keep the learned α);
- ``hidden_zero``: the hidden layers' α set to 0, so only the output layer (and log-std) adapt.

If ``learned`` is clearly better than ``hidden_init``, the learned hidden α are used; if ``hidden_zero`` is as
good as ``learned``, the hidden layers' adaptation contributes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from metasgd_rl.evaluation import SeedLike, evaluate_adaptation, evaluation_tasks
from metasgd_rl.family import Task
from metasgd_rl.stats import t_ci95
from metasgd_rl.step_sizes import StepSizes, alpha_key

if TYPE_CHECKING:
    from metasgd_rl.model import MetaSGD

PROBE_VARIANTS = ("learned", "hidden_init", "hidden_zero")
PROBE_LABELS = {"learned": "learned α", "hidden_init": "hidden layers' α = α_init",
                "hidden_zero": "hidden layers' α = 0"}


def hidden_layer_names(model: MetaSGD) -> list[str]:
    """The adapted tensors of the hidden layers: every layer's weight and bias but the output layer's."""
    last = len(model.policy.layers) - 1
    return [n for n in model.policy.adaptable_parameters()
            if n.startswith("layers.") and int(n.split(".")[1]) < last]


def _fixed_step_sizes(model: MetaSGD, replace: Mapping[str, float]) -> StepSizes:
    """A fixed per-element copy of the model's α (every inner step), with the tensors in ``replace`` set."""
    sizes = model.step_sizes
    fixed = StepSizes(sizes.shapes, alpha_init=0.0, granularity="element", learnable=False,
                      per_step=sizes.num_steps > 1, num_steps=sizes.num_steps)
    reference = next(iter(sizes.alphas.values()))
    fixed = fixed.to(device=reference.device, dtype=reference.dtype)
    with torch.no_grad():
        for k in range(sizes.num_steps):
            for name, alpha in sizes.for_step(k).items():
                value = alpha[0].expand(sizes.shapes[name])
                if name in replace:
                    value = torch.full_like(value, float(replace[name]))
                fixed.alphas[alpha_key(name)][k].copy_(value)
    return fixed


@contextmanager
def replaced_alpha(model: MetaSGD, replace: Mapping[str, float]) -> Iterator[MetaSGD]:
    """``model`` with the α of the tensors in ``replace`` set to those values (restored on exit)."""
    original = model.step_sizes
    model.step_sizes = _fixed_step_sizes(model, replace)
    try:
        yield model
    finally:
        model.step_sizes = original


@dataclass
class AlphaProbe:
    """Mean return per task after ``steps`` inner steps for each of :data:`PROBE_VARIANTS`.

    ``returns[v]``: ``[n_tasks]``; ``before``: ``[n_tasks]``, the return before adaptation (the same for all).
    """

    returns: dict[str, np.ndarray]
    before: np.ndarray
    steps: int
    alpha_init: float
    hidden: list[str]

    def mean(self) -> dict[str, float]:
        return {v: float(r.mean()) for v, r in self.returns.items()}

    def ci95(self) -> dict[str, float]:
        return {v: float(t_ci95(r)) for v, r in self.returns.items()}

    def difference(self, variant: str) -> tuple[float, float]:
        """``learned`` minus ``variant``: mean over tasks of the paired difference and its 95% half-width."""
        d = self.returns["learned"] - self.returns[variant]
        return float(d.mean()), float(t_ci95(d))

    def to_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "alpha_init": self.alpha_init, "hidden": self.hidden,
                "before": self.before.tolist(), "returns": {v: r.tolist() for v, r in self.returns.items()},
                "mean": self.mean(), "ci95": self.ci95()}

    def table(self) -> str:
        """A markdown table: each variant's return after the steps, and learned minus it (paired over tasks)."""
        rows = ["| α of the adaptation | return after "
                f"{self.steps} step{'s' * (self.steps != 1)} | learned − this (paired over tasks) |",
                "|---|---|---|"]
        mean, ci = self.mean(), self.ci95()
        for v in PROBE_VARIANTS:
            label = PROBE_LABELS[v] + (f" ({self.alpha_init:g})" if v == "hidden_init" else "")
            diff = "" if v == "learned" else "{:+.2f} ± {:.2f}".format(*self.difference(v))
            rows.append(f"| {label} | {mean[v]:.2f} ± {ci[v]:.2f} | {diff} |")
        return "\n".join(rows)


def alpha_probe(
    model: MetaSGD,
    n_tasks: int = 40,
    episodes: int = 20,
    split: str = "test",
    seed: SeedLike = 0,
    tasks: Sequence[Task] | None = None,
    steps: int = 1,
) -> AlphaProbe:
    """Evaluate ``model`` after ``steps`` inner steps with its learned α, with the hidden layers' α reset to
    α_init and with them set to 0, on the same tasks and rollout seeds (see the module docstring).

    Arguments as in :func:`~metasgd_rl.evaluation.evaluate_adaptation`; θ and α are left untouched.
    """
    if tasks is None:
        tasks = evaluation_tasks(model, n_tasks, split, seed)
    alpha_init = float(model.config["alpha_init"])
    hidden = hidden_layer_names(model)
    settings = {"learned": None, "hidden_init": dict.fromkeys(hidden, alpha_init),
                "hidden_zero": dict.fromkeys(hidden, 0.0)}
    returns, before = {}, None
    for variant, replace in settings.items():
        if replace is None:
            result = evaluate_adaptation(model, steps=steps, episodes=episodes, split=split, seed=seed, tasks=tasks)
        else:
            with replaced_alpha(model, replace) as probed:
                result = evaluate_adaptation(probed, steps=steps, episodes=episodes, split=split, seed=seed,
                                             tasks=tasks)
        returns[variant] = result.returns[:, steps]
        before = result.returns[:, 0]
    assert before is not None
    return AlphaProbe(returns=returns, before=before, steps=steps, alpha_init=alpha_init, hidden=hidden)
