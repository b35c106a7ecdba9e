"""Policies that evaluate one parameter set per task in a single batched call.

A policy is an ``nn.Module`` that owns the meta-learned initialisation θ, but its forward pass is
functional: it takes the parameters as a dict. Parameters either have their usual shapes (one policy for
all inputs) or carry a leading task axis ``[T, ...]`` (task t's inputs use parameter set t), which is how
adapted policies θ'_t of a whole meta-batch are evaluated at once: linear layers become batched matmuls
(``torch.bmm``) instead of a Python loop over tasks.

Observations passed with task-batched parameters have shape ``[T, N, obs_dim]`` (or ``[T, ..., obs_dim]``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence

import gymnasium as gym
import torch
import torch.nn.functional as F
from torch import nn

Params = dict[str, torch.Tensor]

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": torch.relu,
    "tanh": torch.tanh,
    "elu": F.elu,
    "gelu": F.gelu,
    "silu": F.silu,
    "leaky_relu": F.leaky_relu,
}
#: in-place forms of the activations, for rollouts (no graph); others are applied out of place there too
_INPLACE_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": torch.relu_,
    "tanh": torch.tanh_,
    "elu": lambda x: F.elu(x, inplace=True),
    "silu": lambda x: F.silu(x, inplace=True),
    "leaky_relu": lambda x: F.leaky_relu(x, inplace=True),
}
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
#: weight initialisations of the MLP layers: PyTorch's ``nn.Linear`` default, or Glorot/Xavier uniform weights
#: with zero biases as in MAML-RL (tristandeleu/pytorch-maml-rl)
INITS = ("default", "xavier")


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``x @ weight.T + bias`` for shared (``weight [out, in]``) or per-task (``weight [T, out, in]``) layers."""
    if weight.dim() == 2:
        return F.linear(x, weight, bias)
    tasks = weight.shape[0]
    if x.shape[0] != tasks:
        raise ValueError(f"inputs have {x.shape[0]} tasks on their leading axis, parameters have {tasks}")
    flat = x.reshape(tasks, -1, x.shape[-1])
    # bmm then an in-place bias add: about a quarter faster on CPU than baddbmm with a broadcast bias
    out = torch.bmm(flat, weight.transpose(1, 2)).add_(bias.unsqueeze(1))
    return out.reshape(*x.shape[:-1], weight.shape[1])


def _task_view(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape per-task ``t [T, k]`` so it broadcasts against ``like [T, ..., k]``."""
    return t.reshape(t.shape[0], *([1] * (like.dim() - 2)), t.shape[-1])


class MLPPolicy(nn.Module):
    """Shared MLP trunk; subclasses turn its output into an action distribution.

    ``init`` chooses the layers' initialisation (:data:`INITS`); the output layer's weights are then multiplied
    by ``output_init_scale`` and its bias is zero. A small scale (the default 0.01) starts the policy near its
    prior (mean action ≈ 0), but it also scales every hidden layer's inner-loop gradient by the same factor,
    which is what the hidden layers' step sizes α learn from.
    """

    def __init__(
        self,
        obs_dim: int,
        out_dim: int,
        hidden_sizes: Sequence[int] = (100, 100),
        activation: str = "relu",
        generator: torch.Generator | None = None,
        init: str = "default",
        output_init_scale: float = 0.01,
    ):
        super().__init__()
        if init not in INITS:
            raise ValueError(f"init={init!r} is not allowed; use one of {list(INITS)}")
        if isinstance(output_init_scale, bool) or not isinstance(output_init_scale, numbers.Real) or not (
            math.isfinite(output_init_scale) and output_init_scale > 0
        ):
            raise ValueError(f"output_init_scale={output_init_scale!r} is not allowed; use a positive finite number")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation={activation!r} is not allowed; use one of {sorted(ACTIVATIONS)}")
        if isinstance(hidden_sizes, (str, bytes)) or not isinstance(hidden_sizes, Sequence) or any(
            isinstance(h, bool) or not isinstance(h, numbers.Integral) or h < 1 for h in hidden_sizes
        ):
            raise ValueError(
                f"hidden_sizes={hidden_sizes!r} is not allowed; use a sequence of positive integers, e.g. (100, 100)"
            )
        hidden_sizes = tuple(int(h) for h in hidden_sizes)
        self.obs_dim, self.out_dim = int(obs_dim), int(out_dim)
        self.hidden_sizes, self.activation = hidden_sizes, activation
        self.init, self.output_init_scale = init, float(output_init_scale)
        self._names: tuple[str, ...] | None = None
        sizes = (self.obs_dim, *hidden_sizes, self.out_dim)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True))
        with torch.no_grad():
            for i, layer in enumerate(self.layers):
                if init == "xavier":
                    nn.init.xavier_uniform_(layer.weight, generator=generator)
                    layer.bias.zero_()
                else:  # nn.Linear's own initialisation, drawn from ``generator``
                    bound = 1.0 / math.sqrt(layer.in_features)
                    nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
                    nn.init.uniform_(layer.bias, -bound, bound, generator=generator)
                if i == len(self.layers) - 1:
                    layer.weight.mul_(self.output_init_scale)
                    layer.bias.zero_()

    def adaptable_parameters(self) -> Params:
        """θ: the learnable tensors the inner loop adapts (and α mirrors), by name."""
        return {name: p for name, p in self.named_parameters() if p.requires_grad}

    def task_parameters(self, num_tasks: int) -> Params:
        """θ broadcast to ``[num_tasks, ...]`` (a view: every task's gradient flows back into θ)."""
        return {n: p.unsqueeze(0).expand(num_tasks, *p.shape) for n, p in self.adaptable_parameters().items()}

    def _trunk(self, obs: torch.Tensor, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        act = ACTIVATIONS[self.activation]
        x = obs
        last = len(self.layers) - 1
        for i in range(len(self.layers)):
            x = linear(x, params[f"layers.{i}.weight"], params[f"layers.{i}.bias"])
            if i < last:
                x = act(x)
        return x

    def _rollout_trunk(self, params: Mapping[str, torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
        """:meth:`_trunk` for many calls with the same per-task ``params`` and no gradient: weights transposed
        once into contiguous copies (a batched matmul over θ broadcast to all tasks, an expand view, is about
        30 % slower), each bias added inside its matmul, activations in place. A rollout step is a handful of
        small ops, so the per-op overhead this removes is about a fifth of a Navigation2D rollout's time."""
        p = self._full(params)
        n = len(self.layers)
        if any(p[f"layers.{i}.weight"].dim() != 3 for i in range(n)):  # shared θ: the plain trunk
            return lambda obs: self._trunk(obs, p)
        weights = [p[f"layers.{i}.weight"].detach().transpose(1, 2).contiguous() for i in range(n)]
        biases = [p[f"layers.{i}.bias"].detach().unsqueeze(1) for i in range(n)]
        act = _INPLACE_ACTIVATIONS.get(self.activation, ACTIVATIONS[self.activation])

        def trunk(obs: torch.Tensor) -> torch.Tensor:
            x = obs.reshape(obs.shape[0], -1, obs.shape[-1])
            for i in range(n):
                x = torch.baddbmm(biases[i], x, weights[i])
                if i < n - 1:
                    x = act(x)
            return x.reshape(*obs.shape[:-1], x.shape[-1])

        return trunk

    def _full(self, params: Mapping[str, torch.Tensor] | None) -> Mapping[str, torch.Tensor]:
        """Complete ``params`` with the module's non-adapted tensors (fixed log-std, buffers)."""
        if params is None:
            return dict(self.named_parameters()) | dict(self.named_buffers())
        if all(n in params for n in self._tensor_names()):  # the per-step case of rollouts: no module walk
            return params
        missing = {n: t for n, t in (*self.named_parameters(), *self.named_buffers()) if n not in params}
        return {**missing, **params}

    def _tensor_names(self) -> tuple[str, ...]:
        """Names of all parameters and buffers (fixed after construction)."""
        if self._names is None:
            self._names = tuple(n for n, _ in (*self.named_parameters(), *self.named_buffers()))
        return self._names


class GaussianMLPPolicy(MLPPolicy):
    """Diagonal Gaussian with an MLP mean and a state-independent log-std (learnable or fixed)."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden_sizes: Sequence[int] = (100, 100),
        activation: str = "relu",
        init_std: float = 1.0,
        learn_std: bool = True,
        generator: torch.Generator | None = None,
        init: str = "default",
        output_init_scale: float = 0.01,
    ):
        super().__init__(obs_dim, act_dim, hidden_sizes, activation, generator, init, output_init_scale)
        if not (math.isfinite(init_std) and init_std > 0):
            raise ValueError(f"init_std must be a positive finite number, got {init_std}")
        log_std = torch.full((act_dim,), math.log(init_std))
        if learn_std:
            self.log_std = nn.Parameter(log_std)
        else:
            self.register_buffer("log_std", log_std)
        self.init_std, self.learn_std = float(init_std), bool(learn_std)

    def distribution_params(
        self, obs: torch.Tensor, params: Mapping[str, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean ``[..., act_dim]`` and log-std broadcastable to it."""
        p = self._full(params)
        mean = self._trunk(obs, p)
        log_std = p["log_std"]
        if log_std.dim() == 2:  # per-task log-std [T, act_dim]
            log_std = _task_view(log_std, mean)
        return mean, log_std

    def log_prob(
        self, obs: torch.Tensor, actions: torch.Tensor, params: Mapping[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        return self.dist_log_prob(self.distribution_params(obs, params), actions)

    @staticmethod
    def dist_log_prob(dist: tuple[torch.Tensor, torch.Tensor], actions: torch.Tensor) -> torch.Tensor:
        """Log-density of ``actions`` under the output of :meth:`distribution_params`."""
        mean, log_std = dist
        z = (actions - mean) * torch.exp(-log_std)
        return (-0.5 * z.pow(2) - log_std - _LOG_SQRT_2PI).sum(-1)

    @staticmethod
    def dist_kl(p: tuple[torch.Tensor, torch.Tensor], q: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """KL(p || q) between outputs of :meth:`distribution_params`."""
        (mp, lp), (mq, lq) = p, q
        var_ratio = torch.exp(2 * (lp - lq))
        return (0.5 * (var_ratio + ((mp - mq) * torch.exp(-lq)).pow(2) - 1) - (lp - lq)).sum(-1)

    def draw_noise(self, batch_shape: Sequence[int], generator: torch.Generator | None = None,
                   device: torch.device | str = "cpu") -> torch.Tensor:
        """Standard normal noise ``[*batch_shape, act_dim]`` (the policy's dtype): what :meth:`sample` turns into
        actions."""
        dtype = self.layers[-1].weight.dtype
        return torch.randn((*batch_shape, self.out_dim), generator=generator, dtype=dtype, device=device)

    def sample(
        self,
        obs: torch.Tensor,
        params: Mapping[str, torch.Tensor] | None = None,
        generator: torch.Generator | None = None,
        deterministic: bool = False,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Actions for ``obs``; ``noise`` (from :meth:`draw_noise`) instead of drawing from ``generator``."""
        mean, log_std = self.distribution_params(obs, params)
        if deterministic:
            return mean
        if noise is None:
            noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
        return mean + torch.exp(log_std) * noise

    def action_sampler(
        self, params: Mapping[str, torch.Tensor] | None = None
    ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """``(obs, noise) -> actions`` for a whole rollout with fixed ``params``: :meth:`sample`'s actions (up to
        float rounding) without a graph, with what stays fixed over the rollout computed once."""
        with torch.no_grad():
            trunk = self._rollout_trunk(params)
            std = torch.exp(self._full(params)["log_std"].detach())

        @torch.no_grad()
        def sample(obs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
            mean = trunk(obs)
            return mean.addcmul_(_task_view(std, mean) if std.dim() == 2 else std, noise)

        return sample

    def kl(
        self, obs: torch.Tensor, params_p: Mapping[str, torch.Tensor], params_q: Mapping[str, torch.Tensor]
    ) -> torch.Tensor:
        """KL(π_p || π_q) per observation."""
        return self.dist_kl(self.distribution_params(obs, params_p), self.distribution_params(obs, params_q))

    def entropy(self, obs: torch.Tensor, params: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        mean, log_std = self.distribution_params(obs, params)
        return (log_std + 0.5 + _LOG_SQRT_2PI).expand_as(mean).sum(-1)


class CategoricalMLPPolicy(MLPPolicy):
    """Categorical distribution over ``n_actions`` with MLP logits."""

    def __init__(
        self,
        obs_dim: int,
        n_actions: int,
        hidden_sizes: Sequence[int] = (100, 100),
        activation: str = "relu",
        generator: torch.Generator | None = None,
        init: str = "default",
        output_init_scale: float = 0.01,
    ):
        super().__init__(obs_dim, n_actions, hidden_sizes, activation, generator, init, output_init_scale)
        self.n_actions = int(n_actions)

    def distribution_params(
        self, obs: torch.Tensor, params: Mapping[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Log-probabilities ``[..., n_actions]``."""
        return torch.log_softmax(self._trunk(obs, self._full(params)), dim=-1)

    def log_prob(
        self, obs: torch.Tensor, actions: torch.Tensor, params: Mapping[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        return self.dist_log_prob(self.distribution_params(obs, params), actions)

    @staticmethod
    def dist_log_prob(dist: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Log-probability of ``actions`` under the output of :meth:`distribution_params`."""
        return dist.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)

    @staticmethod
    def dist_kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """KL(p || q) between outputs of :meth:`distribution_params`."""
        return (p.exp() * (p - q)).sum(-1)

    def draw_noise(self, batch_shape: Sequence[int], generator: torch.Generator | None = None,
                   device: torch.device | str = "cpu") -> torch.Tensor:
        """Uniform noise in [0, 1) ``[*batch_shape]``: what :meth:`sample` turns into actions."""
        return torch.rand(tuple(batch_shape), generator=generator, device=device)

    def sample(
        self,
        obs: torch.Tensor,
        params: Mapping[str, torch.Tensor] | None = None,
        generator: torch.Generator | None = None,
        deterministic: bool = False,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Actions for ``obs`` by inverting the CDF at uniform ``noise`` (from :meth:`draw_noise`, else drawn
        from ``generator``): one number per action, so a slice of a batch's noise samples that slice."""
        logp = self.distribution_params(obs, params)
        if deterministic:
            return logp.argmax(-1)
        if noise is None:
            noise = torch.rand(logp.shape[:-1], generator=generator, device=logp.device)
        return self._inverse_cdf(logp, noise)

    def _inverse_cdf(self, logp: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        cdf = torch.cumsum(logp.exp(), dim=-1)
        action = (cdf < noise.unsqueeze(-1).to(cdf.dtype)).sum(-1)
        return action.clamp(max=self.n_actions - 1)

    def action_sampler(
        self, params: Mapping[str, torch.Tensor] | None = None
    ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """``(obs, noise) -> actions`` for a whole rollout with fixed ``params``: :meth:`sample`'s actions (up to
        float rounding of the logits) without a graph, with what stays fixed over the rollout computed once."""
        with torch.no_grad():
            trunk = self._rollout_trunk(params)

        @torch.no_grad()
        def sample(obs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
            return self._inverse_cdf(torch.log_softmax(trunk(obs), dim=-1), noise)

        return sample

    def kl(
        self, obs: torch.Tensor, params_p: Mapping[str, torch.Tensor], params_q: Mapping[str, torch.Tensor]
    ) -> torch.Tensor:
        return self.dist_kl(self.distribution_params(obs, params_p), self.distribution_params(obs, params_q))

    def entropy(self, obs: torch.Tensor, params: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        logp = self.distribution_params(obs, params)
        return -(logp.exp() * logp).sum(-1)


Policy = GaussianMLPPolicy | CategoricalMLPPolicy


def observation_features(space: gym.Space, obs: torch.Tensor) -> torch.Tensor:
    """Policy inputs for raw observations: one-hot for ``Discrete``, flattened float otherwise."""
    if isinstance(space, gym.spaces.Discrete):
        return F.one_hot((obs.long() - int(space.start)), int(space.n)).float()
    return obs.float()


def make_policy(
    observation_space: gym.Space,
    action_space: gym.Space,
    *,
    hidden_sizes: Sequence[int] = (100, 100),
    activation: str = "relu",
    init_std: float = 1.0,
    learn_std: bool = True,
    generator: torch.Generator | None = None,
    init: str = "default",
    output_init_scale: float = 0.01,
) -> Policy:
    """The policy class that fits the action space: Gaussian for ``Box``, categorical for ``Discrete``."""
    if isinstance(observation_space, gym.spaces.Discrete):
        obs_dim = int(observation_space.n)
    elif isinstance(observation_space, gym.spaces.Box) and len(observation_space.shape) == 1:
        obs_dim = int(observation_space.shape[0])
    else:
        raise ValueError(f"observation space {observation_space} is not supported: use a 1-D Box or Discrete")
    if isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1:
        return GaussianMLPPolicy(
            obs_dim, int(action_space.shape[0]), hidden_sizes, activation, init_std, learn_std, generator, init,
            output_init_scale,
        )
    if isinstance(action_space, gym.spaces.Discrete):
        if int(action_space.start) != 0:
            raise ValueError(f"Discrete action spaces must start at 0, got {action_space}")
        return CategoricalMLPPolicy(obs_dim, int(action_space.n), hidden_sizes, activation, generator, init,
                                    output_init_scale)
    raise ValueError(f"action space {action_space} is not supported: use a 1-D Box or Discrete")
