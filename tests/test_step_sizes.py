"""Step sizes α: shapes per granularity, per-step α, learnability, validation."""

from __future__ import annotations

import math

import pytest
import torch

from metasgd_rl.step_sizes import StepSizes

SHAPES = {"layers.0.weight": (4, 3), "layers.0.bias": (4,), "layers.1.weight": (2, 4), "log_std": (2,)}


def n_values(s: StepSizes) -> int:
    return sum(p.numel() for p in s.parameters())


def test_element_granularity_has_one_alpha_per_element():
    s = StepSizes(SHAPES, alpha_init=0.3, granularity="element")
    alphas = s.for_step(0)
    assert list(alphas) == list(SHAPES)
    for name, shape in SHAPES.items():
        assert alphas[name].shape == (1, *shape)
        assert torch.equal(alphas[name], torch.full((1, *shape), 0.3))
    assert n_values(s) == sum(math.prod(shape) for shape in SHAPES.values())
    # each element is its own parameter: changing one entry changes only that α
    key = next(k for k in s.alphas if "weight" in k and "0" in k)
    with torch.no_grad():
        s.alphas[key][0, 1, 2] = -7.0
    a = s.for_step(0)["layers.0.weight"]
    assert a[0, 1, 2] == -7.0
    assert (a == -7.0).sum() == 1
    assert torch.equal(s.for_step(0)["layers.0.bias"], torch.full((1, 4), 0.3))


def test_alphas_broadcast_against_task_batched_parameters():
    """α [1, *shape] (or all-ones dims) times a per-task gradient [T, *shape] keeps the gradient's shape."""
    for granularity in ("element", "tensor", "scalar"):
        s = StepSizes(SHAPES, alpha_init=0.5, granularity=granularity)
        for name, a in s.for_step(0).items():
            grad = torch.ones(5, *SHAPES[name])
            assert (a * grad).shape == grad.shape
            assert torch.equal(a * grad, torch.full_like(grad, 0.5))


def test_tensor_granularity_has_one_alpha_per_parameter_tensor():
    s = StepSizes(SHAPES, alpha_init=0.2, granularity="tensor")
    assert n_values(s) == len(SHAPES)
    alphas = s.for_step(0)
    for name, shape in SHAPES.items():
        assert alphas[name].numel() == 1
        assert alphas[name].dim() == len(shape) + 1
    # changing one tensor's α leaves the others alone
    key = next(k for k in s.alphas if "bias" in k)
    with torch.no_grad():
        s.alphas[key].fill_(-1.5)
    alphas = s.for_step(0)
    assert alphas["layers.0.bias"].item() == -1.5
    for name in SHAPES:
        if name != "layers.0.bias":
            assert alphas[name].item() == pytest.approx(0.2)


def test_scalar_granularity_is_one_shared_parameter():
    s = StepSizes(SHAPES, alpha_init=0.1, granularity="scalar")
    params = list(s.parameters())
    assert len(params) == 1 and params[0].numel() == 1
    with torch.no_grad():
        params[0].fill_(-0.4)
    for name, a in s.for_step(0).items():
        assert a.numel() == 1 and a.dim() == len(SHAPES[name]) + 1
        assert a.item() == pytest.approx(-0.4)
    # one gradient: the sum over all parameters' uses
    loss = sum((a * torch.ones(1, *SHAPES[n])).sum() for n, a in s.for_step(0).items())
    loss.backward()
    assert params[0].grad.item() == pytest.approx(sum(math.prod(sh) for sh in SHAPES.values()))


@pytest.mark.parametrize("granularity", ["element", "tensor", "scalar"])
def test_per_step_alphas_are_independent_and_later_steps_reuse_the_last(granularity):
    s = StepSizes(SHAPES, alpha_init=0.1, granularity=granularity, per_step=True, num_steps=2)
    with torch.no_grad():
        for p in s.parameters():
            p[1].fill_(0.9)  # only step 1's values
    for name in SHAPES:
        assert torch.allclose(s.for_step(0)[name], torch.full_like(s.for_step(0)[name], 0.1))
        assert torch.allclose(s.for_step(1)[name], torch.full_like(s.for_step(1)[name], 0.9))
        assert torch.equal(s.for_step(5)[name], s.for_step(1)[name])
    # gradients of step 0 and step 1 land in different slices
    loss = sum(a.sum() for a in s.for_step(1).values())
    loss.backward()
    for p in s.parameters():
        assert torch.all(p.grad[0] == 0)
        assert torch.all(p.grad[1] != 0)


def test_without_per_step_every_step_shares_one_alpha():
    s = StepSizes(SHAPES, alpha_init=0.1, per_step=False, num_steps=3)
    assert s.num_steps == 1
    for name in SHAPES:
        assert torch.equal(s.for_step(0)[name], s.for_step(2)[name])
    with torch.no_grad():
        for p in s.parameters():
            p.fill_(0.7)
    assert all(torch.allclose(a, torch.full_like(a, 0.7)) for a in s.for_step(2).values())


@pytest.mark.parametrize("granularity", ["element", "tensor", "scalar"])
def test_learnable_flag(granularity):
    fixed = StepSizes(SHAPES, granularity=granularity, learnable=False)
    assert all(not p.requires_grad for p in fixed.parameters())
    assert all(not a.requires_grad for a in fixed.for_step(0).values())
    learned = StepSizes(SHAPES, granularity=granularity, learnable=True)
    assert all(p.requires_grad for p in learned.parameters())
    assert all(a.requires_grad for a in learned.for_step(0).values())


@pytest.mark.parametrize("granularity", ["row", "Element", "per-layer"])
def test_bad_granularity(granularity):
    with pytest.raises(ValueError, match=repr(granularity)):
        StepSizes(SHAPES, granularity=granularity)


@pytest.mark.parametrize("alpha_init", [math.nan, math.inf, -math.inf])
def test_non_finite_alpha_init(alpha_init):
    with pytest.raises(ValueError, match=r"alpha_init.*" + str(alpha_init)):
        StepSizes(SHAPES, alpha_init=alpha_init)


@pytest.mark.parametrize("granularity", ["element", "tensor", "scalar"])
def test_negative_alpha_init_is_allowed(granularity):
    s = StepSizes(SHAPES, alpha_init=-0.05, granularity=granularity)
    for a in s.for_step(0).values():
        assert torch.allclose(a, torch.full_like(a, -0.05))
