"""What the outer optimisers need of a model, as a structural type, so that they do not import the model.

The model (:mod:`metasgd_rl.model`) builds the outer optimiser (:mod:`metasgd_rl.outer`) and calls
``optimizer.step(model, batch)``; the optimiser reads the model through :class:`MetaLearner`, which
:class:`~metasgd_rl.model.MetaSGD` and :class:`~metasgd_rl.model.MAML` satisfy without naming it. The layers
then read bottom-up: policies, step sizes and estimators; this protocol; the outer optimisers; the model.
"""

from __future__ import annotations

from typing import Protocol

import torch

from metasgd_rl.estimators import MetaBatch
from metasgd_rl.policies import Policy
from metasgd_rl.step_sizes import StepSizes


class MetaLearner(Protocol):
    """A meta-learner as an outer optimiser sees it: read-only settings, the policy θ, the step sizes α and the
    meta-gradient of a meta-batch's objective with respect to the trained parameters."""

    @property
    def policy(self) -> Policy: ...

    @property
    def step_sizes(self) -> StepSizes: ...

    @property
    def estimator(self) -> str: ...

    @property
    def first_order(self) -> bool: ...

    @property
    def alpha_in_outer(self) -> bool:
        """Whether the outer optimiser updates α together with θ (else α has its own optimiser, or is fixed)."""
        ...

    @property
    def task_chunk_size(self) -> int | None: ...

    def meta_gradient(self, batch: MetaBatch) -> list[torch.Tensor]:
        """∂(meta-objective)/∂(trained parameters), in the order of the outer optimiser's ``params``."""
        ...
