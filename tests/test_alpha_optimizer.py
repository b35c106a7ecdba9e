"""α's own optimiser and its log parameterisation: the gradient each variant applies is the estimator's,
α moves in every layer, and resume, checkpoints, chunks and the rejection of non-finite updates hold."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from metasgd_rl import MAML, MetaSGD
from metasgd_rl.config import ConfigError, resolve_config
from metasgd_rl.estimators import meta_objective
from metasgd_rl.run import Run
from metasgd_rl.step_sizes import StepSizes
from tests.test_meta_gradients import EpisodeBatch, finite_difference_check, record, replayed_loss, small_nav_model
from tests.tiny_config import TINY, assert_same_state, load_state, metrics_rows

VARIANTS = [dict(alpha_optimizer="adam"), dict(alpha_optimizer="adam", alpha_parameterization="log"),
            dict(alpha_optimizer="joint", alpha_parameterization="log")]


def applied_alpha_gradients(model: MetaSGD, batch) -> dict[str, torch.Tensor]:
    """The gradients α's own optimiser is handed during ``model.outer_update(batch)``."""
    seen: dict[str, torch.Tensor] = {}
    step = model.alpha_optim.step

    def recording_step(*args, **kwargs):
        for key, a in model.step_sizes.alphas.items():
            seen[key] = a.grad.detach().clone()
        return step(*args, **kwargs)

    model.alpha_optim.step = recording_step
    stats, _, _ = model.outer_update(batch)  # α steps even when TRPO finds no acceptable step for θ
    assert seen and stats["alpha_grad_norm"] > 0
    return seen


# -- the log parameterisation -----------------------------------------------------------------------------


def test_log_parameterisation_stores_log_alpha_and_keeps_the_sign():
    shapes = {"w": (2, 3), "b": (3,)}
    s = StepSizes(shapes, alpha_init=-0.2, parameterization="log")
    assert torch.allclose(s.alphas["w"], torch.full((1, 2, 3), math.log(0.2)))
    assert torch.allclose(s.for_step(0)["w"], torch.full((1, 2, 3), -0.2))
    with torch.no_grad():
        s.alphas["b"].add_(math.log(3.0))  # a relative change: α triples
    assert torch.allclose(s.for_step(0)["b"], torch.full((1, 3), -0.6))
    assert torch.allclose(s.values()["b"], torch.full((1, 3), -0.6))
    with pytest.raises(ValueError, match="alpha_init=0 is not allowed with alpha_parameterization='log'"):
        StepSizes(shapes, alpha_init=0.0, parameterization="log")
    with pytest.raises(ValueError, match="alpha_parameterization='exp' is not allowed"):
        StepSizes(shapes, parameterization="exp")


@pytest.mark.parametrize("first_order", [False, True])
def test_log_alpha_gradient_matches_finite_differences(first_order):
    model = small_nav_model(alpha_parameterization="log", first_order=first_order)
    batches = record(model, model.sample_train_tasks(0))
    names = [f"alpha:{k}" for k in model.step_sizes.alphas]
    grads, mismatches = finite_difference_check(model, batches, names, first_order=first_order)
    assert not mismatches, mismatches
    assert all(g.abs().sum() > 0 for g in grads.values())


def test_log_alpha_gradient_is_alpha_times_the_linear_one():
    """d/dβ = α ⊙ d/dα on the same episodes: the two parameterisations describe the same adaptation."""
    linear = small_nav_model()
    log = small_nav_model(alpha_parameterization="log")
    with torch.no_grad():
        for key, a in linear.step_sizes.alphas.items():
            log.step_sizes.alphas[key].copy_(a.abs().log())
        log.policy.load_state_dict(linear.policy.state_dict())
    batches = record(linear, linear.sample_train_tasks(0))
    g_lin = torch.autograd.grad(replayed_loss(linear, batches).loss, list(linear.step_sizes.alphas.values()))
    g_log = torch.autograd.grad(replayed_loss(log, batches).loss, list(log.step_sizes.alphas.values()))
    for a, gl, gg in zip(linear.step_sizes.alphas.values(), g_lin, g_log, strict=True):
        torch.testing.assert_close(gg, a.detach() * gl)


# -- α's own optimiser ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("outer", ["trpo", "adam", "ppo"])
@pytest.mark.parametrize("parameterization", ["linear", "log"])
def test_alpha_optimizer_applies_the_estimators_alpha_gradient(outer, parameterization):
    # MAML's estimator: its surrogate's value depends on θ', so finite differences of it see the gradient
    model = small_nav_model(alpha_optimizer="adam", alpha_parameterization=parameterization, outer=outer)
    assert len(model.outer_optimizer.params) == len(model.policy.adaptable_parameters())  # θ only
    batches = record(model, model.sample_train_tasks(0))
    names = [f"alpha:{k}" for k in model.step_sizes.alphas]
    expected, mismatches = finite_difference_check(model, batches, names, first_order=False)
    assert not mismatches, mismatches
    applied = applied_alpha_gradients(model, replayed_loss(model, batches))
    for key in model.step_sizes.alphas:
        torch.testing.assert_close(applied[key], expected[f"alpha:{key}"])


def test_alpha_optimizer_gradient_with_task_chunks_is_the_whole_batch_one():
    model = small_nav_model(alpha_optimizer="adam", alpha_parameterization="log")
    batches = record(model, model.sample_train_tasks(0))
    whole = replayed_loss(model, batches)
    expected = torch.autograd.grad(whole.loss, list(model.step_sizes.alphas.values()), retain_graph=True)

    def replay(params, k):
        return batches[k]

    chunked = meta_objective(model.policy, model.step_sizes, replay, 3, inner_steps=1, estimator="maml",
                             advantages=model.advantages, first_order=False, task_chunk_size=2)
    applied = applied_alpha_gradients(model, chunked)
    for key, e in zip(model.step_sizes.alphas, expected, strict=True):
        torch.testing.assert_close(applied[key], e)


@pytest.mark.parametrize("parameterization", ["linear", "log"])
def test_alpha_optimizer_moves_alpha_in_every_layer_under_trpo(parameterization):
    """Adam's first step moves every α entry with a non-zero gradient by about ``alpha_lr``: the hidden layers'
    α as much as the output's, whatever the size of their gradients."""
    lr = 1e-2
    model = MetaSGD("Navigation2D-v0", policy_kwargs=dict(hidden_sizes=(16, 16)), meta_batch_size=4,
                    episodes_per_task=4, outer="trpo", alpha_optimizer="adam", alpha_lr=lr,
                    alpha_parameterization=parameterization, seed=0)
    before = {k: a.detach().clone() for k, a in model.step_sizes.alphas.items()}
    info = model.train_step()
    assert not info["update_rejected"] and info["outer/alpha_grad_norm"] > 0
    for key, a in model.step_sizes.alphas.items():
        moved = (a.detach() - before[key]).abs()
        assert (moved > 0.5 * lr).float().mean() > 0.5, key  # most entries took a full Adam step
        assert moved.max() < 1.01 * lr, key


def test_joint_trpo_hardly_moves_the_hidden_alpha():
    """The failure α's own optimiser fixes: in TRPO's joint vector the hidden layers' α barely move."""
    model = MetaSGD("Navigation2D-v0", policy_kwargs=dict(hidden_sizes=(16, 16)), meta_batch_size=4,
                    episodes_per_task=4, outer="trpo", alpha_optimizer="joint", seed=0)
    before = {k: a.detach().clone() for k, a in model.step_sizes.alphas.items()}
    assert not model.train_step()["update_rejected"]
    moved = {k: (a.detach() - before[k]).abs().mean().item() for k, a in model.step_sizes.alphas.items()}
    assert moved["layers__0__weight"] < 1e-2 * moved["layers__2__bias"]


@pytest.mark.parametrize("outer", ["trpo", "adam", "ppo"])
def test_a_non_finite_alpha_gradient_rejects_the_update_and_leaves_everything(outer):
    model = small_nav_model(alpha_optimizer="adam", outer=outer)
    batches = record(model, model.sample_train_tasks(0))
    batches = [EpisodeBatch(b.observations, b.actions, b.rewards * float("nan"), b.mask, b.tasks) for b in batches]
    before = [p.detach().clone() for p in model._trainable()]
    adam_state = json.dumps(model.alpha_optim.state_dict()["state"], default=str)
    _, _, rejected = model.outer_update(replayed_loss(model, batches))
    assert rejected
    for p, old in zip(model._trainable(), before, strict=True):
        assert torch.equal(p.detach(), old)
    assert json.dumps(model.alpha_optim.state_dict()["state"], default=str) == adam_state


def test_settings_are_validated_with_the_key_named():
    with pytest.raises(ValueError, match="alpha_optimizer='sgd' is not allowed"):
        MetaSGD("Navigation2D-v0", alpha_optimizer="sgd")
    with pytest.raises(ValueError, match="alpha_lr=0 is not allowed"):
        MetaSGD("Navigation2D-v0", alpha_optimizer="adam", alpha_lr=0)
    assert MetaSGD("Navigation2D-v0", learn_alpha=False).alpha_optim is None  # a fixed α has nothing to train
    with pytest.raises(ValueError, match="MAML uses a fixed scalar α: alpha_optimizer='adam'"):
        MAML("Navigation2D-v0", alpha_optimizer="adam")
    with pytest.raises(ConfigError, match="alpha_parameterization"):
        resolve_config({**TINY, "alpha_parameterization": "sqrt"})
    with pytest.raises(ConfigError, match="alpha_lr"):
        resolve_config({**TINY, "alpha_optimizer": "adam", "alpha_lr": -1})
    with pytest.raises(ConfigError, match="policy_kwargs.init='he' is not allowed"):
        resolve_config({**TINY, "policy_kwargs": {"init": "he"}})
    with pytest.raises(ConfigError, match="policy_kwargs.output_init_scale=0 is not allowed"):
        resolve_config({**TINY, "policy_kwargs": {"output_init_scale": 0}})
    with pytest.raises(ConfigError, match="not allowed with algo 'maml'"):
        resolve_config({**TINY, "algo": "maml", "alpha_optimizer": "adam"})


# -- checkpoints and resume ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_save_and_load_keep_alpha_and_its_optimiser(tmp_path, variant):
    model = MetaSGD("Navigation2D-v0", policy_kwargs=dict(hidden_sizes=(8,)), meta_batch_size=2,
                    episodes_per_task=2, outer="adam", **variant)
    model.learn(2, progress_bar=False)
    loaded = MetaSGD.load(model.save(tmp_path / "m.pt"))
    assert loaded.config == model.config
    assert_same_state(loaded.state_dict(), model.state_dict())
    a, b = model.train_step(), loaded.train_step()
    assert {k: v for k, v in a.items() if k != "seconds" and not k.startswith("time/")} == \
        {k: v for k, v in b.items() if k != "seconds" and not k.startswith("time/")}


def test_a_checkpoint_from_before_these_settings_loads_as_it_was_trained(tmp_path):
    model = MetaSGD("Navigation2D-v0", policy_kwargs=dict(hidden_sizes=(8,)), meta_batch_size=2,
                    episodes_per_task=2, alpha_optimizer="joint")
    state = model.state_dict()
    config = json.loads(state["config"])
    for key in ("alpha_parameterization", "alpha_optimizer", "alpha_lr"):
        del config[key]
    for key in ("init", "output_init_scale"):
        del config["policy_kwargs"][key]
    old = {k: v for k, v in state.items() if k != "digest"}  # such files had no digest either
    torch.save({**old, "config": json.dumps(config)}, tmp_path / "old.pt")
    loaded = MetaSGD.load(tmp_path / "old.pt")
    assert loaded.alpha_optimizer == "joint" and loaded.step_sizes.parameterization == "linear"
    assert loaded.policy_kwargs["output_init_scale"] == 0.01
    assert_same_state(loaded.policy.state_dict(), model.policy.state_dict())


def test_a_joint_checkpoint_is_refused_by_a_model_with_its_own_alpha_optimiser():
    joint = MetaSGD("Navigation2D-v0", policy_kwargs=dict(hidden_sizes=(8,)), alpha_optimizer="joint")
    separate = MetaSGD("Navigation2D-v0", policy_kwargs=dict(hidden_sizes=(8,)), alpha_optimizer="adam")
    with pytest.raises(ValueError, match="no state of α's optimiser"):
        separate.load_state_dict(joint.state_dict())


@pytest.mark.parametrize("outer", ["adam", "trpo"])
def test_resume_with_alpha_optimiser_equals_the_uninterrupted_run(tmp_path, outer):
    config = {**TINY, "alpha_optimizer": "adam", "alpha_parameterization": "log", "alpha_lr": 0.01,
              "iterations": 3, "checkpoint_every": 1, "eval_every": 0}
    if outer == "trpo":
        config = {**config, "outer": "trpo", "outer_kwargs": None}
    Run.create(resolve_config({**config, "run_dir": str(tmp_path / "a")})).train()
    Run.create(resolve_config({**config, "iterations": 1, "run_dir": str(tmp_path / "b")})).train()
    Run.resume(tmp_path / "b", ["iterations=3"]).train()
    assert metrics_rows(tmp_path / "a") == metrics_rows(tmp_path / "b")
    assert_same_state(load_state(tmp_path / "a" / "final.pt"), load_state(tmp_path / "b" / "final.pt"))
    hidden = load_state(tmp_path / "a" / "final.pt")["step_sizes"]["alphas.layers__0__weight"]
    assert ((hidden - math.log(0.1)).abs() > 1e-3).float().mean() > 0.5  # the hidden layer's α moved
    assert np.isfinite(float(metrics_rows(tmp_path / "a")[-1]["outer/alpha_grad_norm"]))


def test_a_run_directory_from_before_these_settings_resumes_as_it_was_trained(tmp_path):
    config = {**TINY, "alpha_optimizer": "joint", "iterations": 1, "checkpoint_every": 1, "eval_every": 0}
    Run.create(resolve_config({**config, "run_dir": str(tmp_path / "old")})).train()
    config_file = tmp_path / "old" / "config.yaml"
    text = "\n".join(line for line in config_file.read_text().splitlines()
                     if not line.strip().startswith(("alpha_optimizer", "alpha_lr", "alpha_parameterization",
                                                     "init:", "output_init_scale")))
    config_file.write_text(text + "\n")
    resumed = Run.resume(tmp_path / "old", ["iterations=2"])
    assert resumed.model.alpha_optimizer == "joint" and resumed.model.alpha_optim is None
    assert resumed.model.policy_kwargs["output_init_scale"] == 0.01
    resumed.train()
    assert resumed.model.iteration == 2
