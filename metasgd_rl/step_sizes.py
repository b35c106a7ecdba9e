"""Inner-loop step sizes α: Meta-SGD's per-parameter tensor, or coarser tyings of it.

``granularity``:
- ``"element"``: one α per element of θ (Meta-SGD, Li et al. 2017);
- ``"tensor"``: one α per parameter tensor (per layer weight / bias);
- ``"scalar"``: one α shared by all parameters (MAML's step size, when not learned).

α is unconstrained in sign: Meta-SGD learns the update direction as well as its size. With
``per_step=True`` each of the ``num_steps`` inner steps has its own α; asking for a later step (more inner
steps at test time than in training) reuses the last one.

``parameterization``: what the stored (trained) tensors are.
- ``"linear"``: α itself. An outer step moves every α by an absolute amount, the same for α = 0.1 and α = 2.
- ``"log"``: β with α = sign(α_init) · exp(β). An outer step changes α by a *relative* amount, so the small α
  of hidden layers and the large ones of the output move at the same pace; α keeps α_init's sign (which must
  not be 0). Its gradient is α ⊙ (the gradient w.r.t. α).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn

GRANULARITIES = ("element", "tensor", "scalar")
PARAMETERIZATIONS = ("linear", "log")


def alpha_key(name: str) -> str:
    """The key of parameter ``name``'s α in :attr:`StepSizes.alphas` (ParameterDict keys may not contain dots)."""
    return name.replace(".", "__")


class StepSizes(nn.Module):
    """α for each adapted parameter of a policy, learnable or fixed."""

    def __init__(
        self,
        param_shapes: Mapping[str, torch.Size | tuple[int, ...]],
        alpha_init: float = 0.1,
        granularity: str = "element",
        learnable: bool = True,
        per_step: bool = False,
        num_steps: int = 1,
        parameterization: str = "linear",
    ):
        super().__init__()
        if granularity not in GRANULARITIES:
            raise ValueError(f"alpha_granularity={granularity!r} is not allowed; use one of {list(GRANULARITIES)}")
        if not math.isfinite(float(alpha_init)):
            raise ValueError(f"alpha_init must be a finite number, got {alpha_init}")
        if parameterization not in PARAMETERIZATIONS:
            raise ValueError(f"alpha_parameterization={parameterization!r} is not allowed; use one of "
                             f"{list(PARAMETERIZATIONS)}")
        if parameterization == "log" and float(alpha_init) == 0.0:
            raise ValueError("alpha_init=0 is not allowed with alpha_parameterization='log' (α = ±exp(β) is never "
                             "0); use a non-zero alpha_init or alpha_parameterization='linear'")
        if int(num_steps) < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        self.names = list(param_shapes)
        self.shapes = {n: tuple(s) for n, s in param_shapes.items()}
        self.granularity, self.learnable = granularity, bool(learnable)
        self.per_step, self.num_steps = bool(per_step), int(num_steps) if per_step else 1
        self.parameterization = parameterization
        self.sign = math.copysign(1.0, float(alpha_init))
        stored = math.log(abs(float(alpha_init))) if parameterization == "log" else float(alpha_init)
        lead = (self.num_steps,)
        if granularity == "scalar":
            tensors = {"all": torch.full(lead, stored)}
        elif granularity == "tensor":
            tensors = {alpha_key(n): torch.full(lead, stored) for n in self.names}
        else:
            tensors = {alpha_key(n): torch.full(lead + self.shapes[n], stored) for n in self.names}
        if self.learnable:
            self.alphas = nn.ParameterDict({k: nn.Parameter(v) for k, v in tensors.items()})
        else:
            self.alphas = nn.ParameterDict({k: nn.Parameter(v, requires_grad=False) for k, v in tensors.items()})

    def to_alpha(self, stored: torch.Tensor) -> torch.Tensor:
        """α from stored values (the identity, or ``sign · exp``)."""
        return stored if self.parameterization == "linear" else self.sign * torch.exp(stored)

    def values(self) -> dict[str, torch.Tensor]:
        """α in the stored layout (keys and shapes of ``self.alphas``), differentiable w.r.t. them."""
        return {k: self.to_alpha(a) for k, a in self.alphas.items()}

    def for_step(self, step: int = 0, alphas: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """α of inner step ``step`` for each parameter name, shaped to broadcast against ``[T, *shape]``.

        ``alphas`` (same keys and shapes as ``self.alphas``) evaluates the map on other stored values, e.g. to
        differentiate it at a point of one's own.
        """
        stored = self.alphas if alphas is None else alphas
        stored = {k: self.to_alpha(a) for k, a in stored.items()}
        k = min(int(step), self.num_steps - 1)
        out = {}
        for n in self.names:
            shape = self.shapes[n]
            if self.granularity == "scalar":
                out[n] = stored["all"][k].reshape((1,) * (len(shape) + 1))
            elif self.granularity == "tensor":
                out[n] = stored[alpha_key(n)][k].reshape((1,) * (len(shape) + 1))
            else:
                out[n] = stored[alpha_key(n)][k].unsqueeze(0)
        return out

    def summary(self) -> dict[str, float]:
        """Mean α per parameter (for logs)."""
        return {n: a.detach().mean().item() for n, a in self.for_step(0).items()}

    def extra_repr(self) -> str:
        return (f"granularity={self.granularity!r}, parameterization={self.parameterization!r}, "
                f"learnable={self.learnable}, num_steps={self.num_steps}")
