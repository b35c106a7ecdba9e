"""Outer optimisers: update θ and α from one meta-batch (TRPO, Adam, ProMP-style PPO).

Each gets the :class:`~metasgd_rl.estimators.MetaBatch` of the current iteration (its differentiable loss and
the recorded episodes) and the model (policy, step sizes, estimator), which they see through the protocol
:class:`~metasgd_rl.interfaces.MetaLearner`: this module does not import the model, which builds and calls it.
An update whose loss, gradient or result is not finite is rejected and θ, α are left as they were.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from metasgd_rl.adaptation import batch_distribution, batch_log_probs, inner_gradients, masked_task_mean
from metasgd_rl.estimators import (
    INNER_FORM,
    Adaptation,
    MetaBatch,
    replay_adaptation,
    sampling_term,
)
from metasgd_rl.interfaces import MetaLearner
from metasgd_rl.policies import Params
from metasgd_rl.sampler import EpisodeBatch

FVP_MODES = ("gauss-newton", "exact")


def flat_vector(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """The tensors' elements concatenated into one vector.

    Unlike ``parameters_to_vector`` (which uses ``.view``) it accepts non-contiguous tensors: autograd returns
    gradients strided like the graph that made them, e.g. a transposed weight's gradient when a task axis of
    size 1 (``meta_batch_size=1``) needs no reduction.
    """
    return torch.cat([t.reshape(-1) for t in tensors])


def _finite(*tensors: torch.Tensor) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors)


def _check_kwargs(name: str, kwargs: Mapping[str, Any], allowed: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(kwargs) - set(allowed)
    if unknown:
        raise ValueError(f"outer_kwargs for {name!r} has unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}")
    return {**allowed, **kwargs}


def _positive(name: str, value: Any, integer: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    if not ok or (integer and int(value) != value):
        kind = "a positive integer" if integer else "a positive number"
        raise ValueError(f"outer_kwargs {name}={value!r} is not allowed; use {kind}")


def mean_kl(model: MetaLearner, old: Params, new: Params, batch: EpisodeBatch) -> torch.Tensor:
    """KL(π_old || π_new) averaged over each task's valid states of ``batch``, then over tasks."""
    obs = batch.task_major(batch.observations)
    kl = model.policy.kl(obs, old, new).transpose(0, 1)
    return masked_task_mean(kl, batch.mask).mean()


def subsample_episodes(batch: EpisodeBatch, fraction: float) -> EpisodeBatch:
    """The first ⌈fraction·E⌉ episodes of every task (episodes are i.i.d., so any subset is a random one)."""
    keep = max(1, math.ceil(fraction * batch.episodes_per_task))
    if keep >= batch.episodes_per_task:
        return batch
    return EpisodeBatch(*(t[:, :, :keep] for t in (batch.observations, batch.actions, batch.rewards, batch.mask)),
                        tasks=batch.tasks)


def conjugate_gradient(fvp: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, iters: int,
                       tol: float = 1e-10) -> torch.Tensor:
    """Solve ``F x = b`` for a symmetric positive-definite operator given as ``fvp``."""
    x = torch.zeros_like(b)
    r, p = b.clone(), b.clone()
    rr = r @ r
    for _ in range(iters):
        fp = fvp(p)
        step = rr / (p @ fp)
        x += step * p
        r -= step * fp
        rr_new = r @ r
        if rr_new < tol:
            break
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x


class OuterOptimizer:
    """Interface: ``step(model, batch) -> stats``; ``state_dict()`` / ``load_state_dict()`` for resume."""

    name = "base"

    def __init__(self, params: Sequence[torch.nn.Parameter]):
        self.params = list(params)

    def step(self, model: MetaLearner, batch: MetaBatch) -> dict[str, float]:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass

    def _vector(self) -> torch.Tensor:
        return parameters_to_vector(self.params).detach().clone()

    def _set(self, vector: torch.Tensor) -> None:
        with torch.no_grad():
            vector_to_parameters(vector, self.params)


class AdamOuter(OuterOptimizer):
    """One Adam step on the estimator's meta-gradient per meta-batch."""

    name = "adam"
    DEFAULTS: dict[str, Any] = dict(lr=1e-3, max_grad_norm=None)

    def __init__(self, params: Sequence[torch.nn.Parameter], **kwargs: Any):
        super().__init__(params)
        cfg = _check_kwargs(self.name, kwargs, self.DEFAULTS)
        _positive("lr", cfg["lr"])
        if cfg["max_grad_norm"] is not None:
            _positive("max_grad_norm", cfg["max_grad_norm"])
        self.max_grad_norm = cfg["max_grad_norm"]
        self.optimizer = torch.optim.Adam(self.params, lr=cfg["lr"])

    def step(self, model: MetaLearner, batch: MetaBatch) -> dict[str, float]:
        start = time.perf_counter()
        grads = model.meta_gradient(batch)
        for p, g in zip(self.params, grads, strict=True):
            p.grad = g
        gradient_time = time.perf_counter() - start
        if not (_finite(batch.loss, *grads)):
            return {"rejected": 1.0}
        grad_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        if self.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm)
        self.optimizer.step()
        return {"grad_norm": grad_norm.item(), "time/meta_gradient": gradient_time}

    def state_dict(self) -> dict[str, Any]:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.optimizer.load_state_dict(state)


class AdaptationJacobian:
    """Products with J = ∂θ'/∂(θ, α) of the recorded adaptation, without differentiating it twice.

    Step k maps θ_k to θ_{k+1} = θ_k - a_k ⊙ g_k(θ_k) (a_k: α of step k, g_k: the inner gradient on the
    k-th recorded batch), so dθ_{k+1} = dθ_k - a_k ⊙ H_k dθ_k - da_k ⊙ g_k with H_k the per-task Hessian of the
    inner loss. J v and Jᵀ u therefore need only per-task Hessian-vector products, computed on the first
    ⌈subsample·E⌉ episodes of each batch. θ' itself and g_k always come from the full batches. In first-order
    mode g_k is a constant and H_k is dropped, as in the adaptation it describes.
    """

    def __init__(self, model: MetaLearner, batch: MetaBatch, subsample: float = 1.0):
        self.model, self.step_sizes = model, model.step_sizes
        self.theta = list(model.policy.adaptable_parameters().values())
        self.names = list(model.policy.adaptable_parameters())
        self.alpha_keys = list(self.step_sizes.alphas) if model.alpha_in_outer else []
        self.num_tasks = batch.num_tasks
        self.points: list[dict[str, torch.Tensor]] = []  # θ_k as leaves (for the Hessian products)
        self.inner_grads: list[dict[str, torch.Tensor]] = []  # g_k with graph to θ_k (subsample)
        self.grad_values: list[dict[str, torch.Tensor]] = []  # g_k on the full batch, detached
        self.alphas: list[dict[str, torch.Tensor]] = []
        form = INNER_FORM[model.estimator]
        for k, (pre, adv) in enumerate(zip(batch.pre_batches, batch.pre_advantages, strict=True)):
            start, grads = batch.trajectory[k]
            point = {n: p.detach().requires_grad_() for n, p in start.items()}
            if not model.first_order:
                sub = subsample_episodes(pre, subsample)
                sub_adv = adv[:, :, : sub.episodes_per_task]
                self.inner_grads.append(inner_gradients(model.policy, point, sub, sub_adv, form, create_graph=True))
            self.points.append(point)
            self.grad_values.append(grads)
            self.alphas.append({n: a.detach() for n, a in self.step_sizes.for_step(k).items()})
        self.adapted = {n: p.detach() for n, p in batch.adapted_params.items()}

    def _hvp(self, k: int, w: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        grads = self.inner_grads[k]
        out = torch.autograd.grad([grads[n] for n in self.names], [self.points[k][n] for n in self.names],
                                  grad_outputs=[w[n] for n in self.names], retain_graph=True,
                                  allow_unused=True, materialize_grads=True)
        return dict(zip(self.names, out, strict=True))

    def _alpha_point(self) -> dict[str, torch.Tensor]:
        return {key: self.step_sizes.alphas[key].detach() for key in self.alpha_keys}

    def _alpha_directions(self, k: int, alpha_parts: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The change of step k's α along ``alpha_parts`` (a direction in the stored tensors' space)."""
        _, tangent = torch.func.jvp(lambda stored: self.step_sizes.for_step(k, alphas=stored), (self._alpha_point(),),
                                    (dict(alpha_parts),))
        return tangent

    def jvp(self, v_parts: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """J v for v given as one tensor per trainable parameter (θ tensors, then α tensors)."""
        theta_parts = zip(self.names, v_parts[: len(self.names)], strict=True)
        d_theta = {n: v.unsqueeze(0).expand(self.num_tasks, *v.shape) for n, v in theta_parts}
        alpha_parts = dict(zip(self.alpha_keys, v_parts[len(self.names):], strict=True))
        for k in range(len(self.points)):
            curvature = self._hvp(k, d_theta) if self.inner_grads else None
            d_alpha = self._alpha_directions(k, alpha_parts) if alpha_parts else None
            nxt = {}
            for n in self.names:
                step = d_theta[n]
                if curvature is not None:
                    step = step - self.alphas[k][n] * curvature[n]
                if d_alpha is not None:
                    step = step - d_alpha[n] * self.grad_values[k][n]
                nxt[n] = step
            d_theta = nxt
        return d_theta

    def vjp(self, u: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
        """Jᵀ u for u with one [T, ...] tensor per adapted parameter; one tensor per trainable parameter."""
        cotangent = dict(u)
        alpha_grads = {key: torch.zeros_like(self.step_sizes.alphas[key]) for key in self.alpha_keys}
        for k in reversed(range(len(self.points))):
            if self.alpha_keys:
                leaves = {key: a.clone().requires_grad_() for key, a in self._alpha_point().items()}
                out = self.step_sizes.for_step(k, alphas=leaves)
                cots = [(-cotangent[n] * self.grad_values[k][n]).sum_to_size(out[n].shape) for n in self.names]
                grads = torch.autograd.grad([out[n] for n in self.names], list(leaves.values()), grad_outputs=cots,
                                            allow_unused=True, materialize_grads=True)
                for key, g in zip(leaves, grads, strict=True):
                    alpha_grads[key] = alpha_grads[key] + g
            if self.inner_grads:
                curvature = self._hvp(k, {n: self.alphas[k][n] * cotangent[n] for n in self.names})
                cotangent = {n: cotangent[n] - curvature[n] for n in self.names}
        theta_grads = [cotangent[n].sum(0) for n in self.names]
        return theta_grads + [alpha_grads[key] for key in self.alpha_keys]


class TRPOOuter(OuterOptimizer):
    """TRPO on (θ, α) with a trust region on the KL divergence of the *adapted* policies.

    The search direction solves ``F x = -g`` by conjugate gradient, F being the Hessian of the mean KL between
    the adapted policies before and after the update, w.r.t. (θ, α) *through the adaptation*. At the
    current point the KL's gradient is zero, so F equals the Gauss-Newton matrix ``Jᵀ F' J`` with J = ∂θ'/∂(θ, α)
    and F' the adapted policies' Fisher. ``fvp="gauss-newton"`` (default) computes it in that form: J v and
    Jᵀ u by differentiating the recorded adaptation, F' on a subsample (``fvp_subsample``) of the post-update
    episodes; ``fvp="exact"`` differentiates the KL twice through the adaptation (third order; slow). A
    backtracking line search then requires both a KL within ``max_kl`` and an improvement of the
    importance-weighted surrogate, re-adapting from the recorded episodes at each candidate point.
    """

    name = "trpo"
    DEFAULTS: dict[str, Any] = dict(max_kl=1e-2, cg_iters=10, cg_damping=1e-5, ls_steps=15, ls_ratio=0.8,
                                    fvp="gauss-newton", fvp_subsample=0.1)

    def __init__(self, params: Sequence[torch.nn.Parameter], **kwargs: Any):
        super().__init__(params)
        cfg = _check_kwargs(self.name, kwargs, self.DEFAULTS)
        for key in ("max_kl", "fvp_subsample"):
            _positive(key, cfg[key])
        if not (isinstance(cfg["cg_damping"], (int, float)) and cfg["cg_damping"] >= 0):
            raise ValueError(f"outer_kwargs cg_damping={cfg['cg_damping']!r} is not allowed; use a number >= 0")
        for key in ("cg_iters", "ls_steps"):
            _positive(key, cfg[key], integer=True)
        if not 0 < cfg["ls_ratio"] < 1:
            raise ValueError(f"outer_kwargs ls_ratio={cfg['ls_ratio']!r} is not allowed; use a number in (0, 1)")
        if cfg["fvp_subsample"] > 1:
            raise ValueError(f"outer_kwargs fvp_subsample={cfg['fvp_subsample']!r} is not allowed; use (0, 1]")
        if cfg["fvp"] not in FVP_MODES:
            raise ValueError(f"outer_kwargs fvp={cfg['fvp']!r} is not allowed; use one of {list(FVP_MODES)}")
        self.cfg = cfg

    # -- Fisher-vector products ---------------------------------------------------------------------------
    def _gauss_newton_fvp(self, model: MetaLearner, batch: MetaBatch) -> Callable[[torch.Tensor], torch.Tensor]:
        jacobian = AdaptationJacobian(model, batch, self.cfg["fvp_subsample"])
        adapted = jacobian.adapted
        names = list(adapted)
        states = subsample_episodes(batch.post_batch, self.cfg["fvp_subsample"])
        # F' in adapted-parameter space: double backward of the KL at the current adapted parameters
        point = {n: p.detach().clone().requires_grad_() for n, p in adapted.items()}
        kl = mean_kl(model, adapted, point, states)
        kl_grads = torch.autograd.grad(kl, [point[n] for n in names], create_graph=True)

        def fvp(v: torch.Tensor) -> torch.Tensor:
            jv = jacobian.jvp(self._split(v))
            f_jv = torch.autograd.grad(kl_grads, [point[n] for n in names], grad_outputs=[jv[n] for n in names],
                                       retain_graph=True)
            return flat_vector(jacobian.vjp(dict(zip(names, f_jv, strict=True)))) + self.cfg["cg_damping"] * v

        return fvp

    def _exact_fvp(self, model: MetaLearner, batch: MetaBatch) -> Callable[[torch.Tensor], torch.Tensor]:
        old = {n: p.detach() for n, p in batch.adapted_params.items()}
        states = subsample_episodes(batch.post_batch, self.cfg["fvp_subsample"])
        adaptation = replay_adaptation(model.policy, model.step_sizes, batch, estimator=model.estimator,
                                       create_graph=not model.first_order)
        kl = mean_kl(model, old, adaptation.params, states)
        grads = torch.autograd.grad(kl, self.params, create_graph=True, allow_unused=True, materialize_grads=True)
        flat = flat_vector(grads)

        def fvp(v: torch.Tensor) -> torch.Tensor:
            hv = torch.autograd.grad(flat @ v, self.params, retain_graph=True, allow_unused=True,
                                     materialize_grads=True)
            return flat_vector(hv) + self.cfg["cg_damping"] * v

        return fvp

    def fisher_vector_product(self, model: MetaLearner, batch: MetaBatch) -> Callable[[torch.Tensor], torch.Tensor]:
        if self.cfg["fvp"] == "exact":
            return self._exact_fvp(model, batch)
        return self._gauss_newton_fvp(model, batch)

    def _split(self, v: torch.Tensor) -> list[torch.Tensor]:
        parts, offset = [], 0
        for p in self.params:
            parts.append(v[offset: offset + p.numel()].view_as(p))
            offset += p.numel()
        return parts

    # -- the step -----------------------------------------------------------------------------------------
    def step(self, model: MetaLearner, batch: MetaBatch) -> dict[str, float]:
        start = time.perf_counter()
        g = flat_vector(model.meta_gradient(batch)).detach()
        times = {"time/meta_gradient": time.perf_counter() - start}
        if not _finite(batch.loss, g):
            return {"rejected": 1.0, **times}
        start = time.perf_counter()
        fvp = self.fisher_vector_product(model, batch)
        direction = conjugate_gradient(fvp, -g, self.cfg["cg_iters"])
        curvature = direction @ fvp(direction)
        times["time/conjugate_gradient"] = time.perf_counter() - start
        if not (_finite(direction, curvature) and curvature > 0):
            return {"rejected": 1.0, "grad_norm": g.norm().item(), **times}
        full_step = torch.sqrt(2 * self.cfg["max_kl"] / curvature) * direction
        expected = -(g @ full_step).item()
        start = time.perf_counter()
        stats = self._line_search(model, batch, full_step, expected)
        times["time/line_search"] = time.perf_counter() - start
        return stats | {"grad_norm": g.norm().item(), **times}

    def _line_search(self, model: MetaLearner, batch: MetaBatch, full_step: torch.Tensor,
                     expected_improvement: float) -> dict[str, float]:
        """Backtrack until the adapted policies' KL is within ``max_kl`` and the surrogate improves.

        At each candidate (θ, α) the tasks are re-adapted (first order: only the value is needed) and the
        importance-weighted surrogate ``π'/π'_old · A`` is evaluated on the post-update episodes; at the old
        point it is the mean advantage. DiCE's sampling term has value 0 everywhere and is left out.
        """
        old_vector = self._vector()
        policy = model.policy
        chunks = []  # tasks in chunks: the first-order re-adaptation's memory is one chunk's
        with torch.no_grad():
            old_loss = -masked_task_mean(batch.post_advantages, batch.post_batch.mask).mean()
            for part in batch.parts(model.task_chunk_size):
                obs = part.post_batch.task_major(part.post_batch.observations)
                old_dist = policy.distribution_params(obs, {n: p.detach() for n, p in part.adapted_params.items()})
                chunks.append((part, obs, part.post_batch.task_major(part.post_batch.actions), old_dist))
        for i in range(self.cfg["ls_steps"]):
            fraction = self.cfg["ls_ratio"] ** i
            self._set(old_vector + fraction * full_step)
            task_losses, task_kls = [], []
            for part, obs, actions, old_dist in chunks:
                post, adv = part.post_batch, part.post_advantages
                params = replay_adaptation(policy, model.step_sizes, part, estimator=model.estimator,
                                           create_graph=False).params
                with torch.no_grad():
                    dist = policy.distribution_params(obs, params)
                    log_probs = policy.dist_log_prob(dist, actions).transpose(0, 1) * post.mask
                    ratio = torch.exp(log_probs - part.post_log_probs)
                    task_losses.append(-masked_task_mean(ratio * adv, post.mask))
                    task_kls.append(masked_task_mean(policy.dist_kl(old_dist, dist).transpose(0, 1), post.mask))
            loss, kl = torch.cat(task_losses).mean(), torch.cat(task_kls).mean()
            improvement = (old_loss - loss).item()
            if _finite(loss, kl) and improvement > 0 and kl.item() <= self.cfg["max_kl"]:
                return {"kl": kl.item(), "improvement": improvement, "expected_improvement": expected_improvement,
                        "step_fraction": fraction, "line_search_steps": float(i + 1)}
        self._set(old_vector)
        return {"rejected": 1.0, "line_search_steps": float(self.cfg["ls_steps"])}


class PPOOuter(OuterOptimizer):
    """ProMP's outer step (Rothfuss et al. 2018): several Adam epochs on one meta-batch.

    Each epoch re-adapts from the recorded pre-update episodes and maximises PPO's clipped objective of the
    adapted policies, minus ``inner_kl_penalty`` times the KL between the pre-update policy at the start of
    the step and now (on the first pre-update batch), which keeps the pre-update sampling distribution close
    to the one that produced the episodes. With DiCE the sampling term is added as in the plain surrogate.
    """

    name = "ppo"
    DEFAULTS: dict[str, Any] = dict(lr=1e-3, epochs=5, clip=0.3, inner_kl_penalty=5e-4, max_grad_norm=None)

    def __init__(self, params: Sequence[torch.nn.Parameter], **kwargs: Any):
        super().__init__(params)
        cfg = _check_kwargs(self.name, kwargs, self.DEFAULTS)
        for key in ("lr", "clip"):
            _positive(key, cfg[key])
        _positive("epochs", cfg["epochs"], integer=True)
        if cfg["max_grad_norm"] is not None:
            _positive("max_grad_norm", cfg["max_grad_norm"])
        if not (isinstance(cfg["inner_kl_penalty"], (int, float)) and cfg["inner_kl_penalty"] >= 0):
            raise ValueError(f"outer_kwargs inner_kl_penalty={cfg['inner_kl_penalty']!r} is not allowed; use >= 0")
        self.cfg = cfg
        self.optimizer = torch.optim.Adam(self.params, lr=cfg["lr"])

    def _loss(self, model: MetaLearner, batch: MetaBatch, adaptation: Adaptation,
              old_distribution: Any) -> torch.Tensor:
        """Minus the clipped surrogate (plus DiCE's term), plus the inner KL penalty; mean over ``batch``'s tasks.

        The KL compares ``old_distribution`` (the pre-update policy at the start of the step, on the first
        pre-update batch) with the current one, which the re-adaptation already computed on those states.
        """
        post = batch.post_batch
        ratio = torch.exp(batch_log_probs(model.policy, adaptation.params, post) - batch.post_log_probs)
        adv = batch.post_advantages
        clipped = torch.clamp(ratio, 1 - self.cfg["clip"], 1 + self.cfg["clip"])
        surrogate = masked_task_mean(torch.minimum(ratio * adv, clipped * adv), post.mask)
        loss = -(surrogate + sampling_term(adaptation, post, batch.dice_centred)).mean()
        if self.cfg["inner_kl_penalty"] > 0:
            pre = batch.pre_batches[0]
            kl = model.policy.dist_kl(old_distribution, adaptation.first_distribution).transpose(0, 1)
            loss = loss + self.cfg["inner_kl_penalty"] * masked_task_mean(kl, pre.mask).mean()
        return loss

    def step(self, model: MetaLearner, batch: MetaBatch) -> dict[str, float]:
        stats: dict[str, float] = {}
        start = time.perf_counter()
        chunks = []  # (part of the batch, its share of the tasks, the pre-update policy's distribution now)
        with torch.no_grad():
            for part in batch.parts(model.task_chunk_size):
                theta = {n: p.clone() for n, p in model.policy.task_parameters(part.num_tasks).items()}  # frozen
                chunks.append((part, part.num_tasks / batch.num_tasks,
                               batch_distribution(model.policy, theta, part.pre_batches[0])))
        for epoch in range(self.cfg["epochs"]):
            self.optimizer.zero_grad(set_to_none=True)
            loss = batch.loss.detach().new_zeros(())
            for part, share, old_distribution in chunks:  # the loss is a mean over tasks: chunks' gradients add
                adaptation = replay_adaptation(model.policy, model.step_sizes, part, estimator=model.estimator,
                                               create_graph=not model.first_order,
                                               keep_first_distribution=self.cfg["inner_kl_penalty"] > 0)
                chunk_loss = self._loss(model, part, adaptation, old_distribution) * share
                chunk_loss.backward()
                loss = loss + chunk_loss.detach()
            grads = [p.grad for p in self.params if p.grad is not None]
            if not _finite(loss, *grads):
                stats["rejected"] = 1.0
                break
            if self.cfg["max_grad_norm"] is not None:
                torch.nn.utils.clip_grad_norm_(self.params, self.cfg["max_grad_norm"])
            self.optimizer.step()
            stats["loss_epoch_0" if epoch == 0 else "loss_last_epoch"] = loss.item()
        stats["time/epochs"] = time.perf_counter() - start
        return stats

    def state_dict(self) -> dict[str, Any]:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.optimizer.load_state_dict(state)


OUTER_OPTIMIZERS: dict[str, type[OuterOptimizer]] = {"trpo": TRPOOuter, "adam": AdamOuter, "ppo": PPOOuter}


def make_outer_optimizer(name: str, params: Sequence[torch.nn.Parameter], **kwargs: Any) -> OuterOptimizer:
    if name not in OUTER_OPTIMIZERS:
        raise ValueError(f"outer={name!r} is not allowed; use one of {list(OUTER_OPTIMIZERS)}")
    return OUTER_OPTIMIZERS[name](params, **kwargs)


