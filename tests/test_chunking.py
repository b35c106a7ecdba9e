"""task_chunk_size: the meta-gradient computed chunk by chunk equals the whole meta-batch's, with a graph whose
memory is one chunk's."""

from __future__ import annotations

import weakref

import numpy as np
import pytest
import torch

from metasgd_rl import MetaSGD
from metasgd_rl.config import ConfigError, resolve_config

TASKS = 5  # chunks of 2 leave a chunk of 1: uneven chunks are covered


def small_model(**kwargs) -> MetaSGD:
    settings = dict(policy_kwargs=dict(hidden_sizes=(16, 16)), meta_batch_size=TASKS, episodes_per_task=3,
                    family_kwargs=dict(max_episode_steps=15), seed=3)
    return MetaSGD("Navigation2D-v0", **{**settings, **kwargs})


def flat(tensors) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


@pytest.mark.parametrize("estimator", ["maml", "lvc", "dice"])
@pytest.mark.parametrize("inner_steps", [1, 2])
def test_chunked_meta_gradient_equals_whole_batch(estimator, inner_steps):
    model = small_model(estimator=estimator, inner_steps=inner_steps)
    tasks = model.sample_train_tasks(0)
    whole = model.meta_objective(tasks, 7)
    chunked = model.meta_objective(tasks, 7, task_chunk_size=2)
    assert whole.loss.requires_grad and not chunked.loss.requires_grad
    torch.testing.assert_close(chunked.task_losses, whole.task_losses.detach())
    for name, p in whole.adapted_params.items():
        torch.testing.assert_close(chunked.adapted_params[name], p.detach())
    expected, got = flat(model.meta_gradient(whole)), flat(model.meta_gradient(chunked))
    assert expected.abs().max() > 0  # the θ and α paths are live
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)


def test_chunked_dice_keeps_the_whole_batch_centring():
    """DiCE's score term is centred over all tasks: a chunk must not re-centre within itself."""
    model = small_model(estimator="dice")
    tasks = model.sample_train_tasks(0)
    whole = model.meta_objective(tasks, 7)
    part = whole.select(slice(0, 2))
    torch.testing.assert_close(part.dice_centred, whole.dice_centred[:2])
    assert not torch.allclose(part.dice_centred, part.dice_centred - part.dice_centred.mean())


def test_first_order_chunked_gradient_equals_whole_batch():
    model = small_model(first_order=True)
    tasks = model.sample_train_tasks(0)
    expected = flat(model.meta_gradient(model.meta_objective(tasks, 1)))
    got = flat(model.meta_gradient(model.meta_objective(tasks, 1, task_chunk_size=3)))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("outer", ["adam", "ppo"])
def test_chunked_training_follows_the_unchunked_run(outer):
    runs = []
    for chunk in (None, 2):
        model = small_model(outer=outer, task_chunk_size=chunk, estimator="dice" if outer == "ppo" else "lvc")
        infos = [model.train_step() for _ in range(2)]
        runs.append((model, infos))
    (whole, whole_infos), (chunked, chunked_infos) = runs
    for a, b in zip(whole_infos, chunked_infos, strict=True):
        assert a["update_rejected"] == b["update_rejected"] is False
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-7)
    before = small_model()
    moved = flat(whole.outer_optimizer.params) - flat(before.outer_optimizer.params)
    assert moved.abs().max() > 1e-4
    torch.testing.assert_close(flat(chunked.outer_optimizer.params), flat(whole.outer_optimizer.params),
                               rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("alpha_optimizer", ["joint", "adam"])
def test_chunked_trpo_step_follows_the_unchunked_one(alpha_optimizer):
    """Same gradient and Fisher products; conjugate gradient with TRPO's tiny damping turns the float32
    rounding of a differently summed gradient (1e-7) into a few per cent of the step, so compare steps where
    the CG solve is well conditioned (θ and α in one vector), and gradients where α has its own optimiser."""
    kwargs = dict(outer="trpo", alpha_optimizer=alpha_optimizer)
    before = flat(small_model(**kwargs).outer_optimizer.params)
    steps, infos = [], []
    for chunk in (None, 2):
        model = small_model(**kwargs, task_chunk_size=chunk)
        infos.append(model.train_step())
        steps.append(flat(model.outer_optimizer.params) - before)
    assert infos[1]["outer/grad_norm"] == pytest.approx(infos[0]["outer/grad_norm"], rel=1e-5)
    if alpha_optimizer == "adam":
        assert infos[1]["outer/alpha_grad_norm"] == pytest.approx(infos[0]["outer/alpha_grad_norm"], rel=1e-5)
        return
    assert not infos[0]["update_rejected"] and not infos[1]["update_rejected"]
    assert steps[0].norm() > 1e-3
    assert (steps[1] - steps[0]).norm() < 0.1 * steps[0].norm()


def peak_saved_bytes(fn) -> int:
    """The most bytes that tensors saved for backward occupy at any one time while ``fn`` runs."""
    live, peak = [0], [0]

    def release(nbytes: int) -> None:
        live[0] -= nbytes

    def pack(t: torch.Tensor) -> torch.Tensor:
        nbytes = t.numel() * t.element_size()
        live[0] += nbytes
        peak[0] = max(peak[0], live[0])
        weakref.finalize(t, release, nbytes)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return peak[0]


def test_chunks_bound_the_graph_memory():
    model = small_model(meta_batch_size=8, episodes_per_task=4)
    tasks = model.sample_train_tasks(0)

    def gradient(chunk):
        def run():
            batch = model.meta_objective(tasks, 5, task_chunk_size=chunk)
            model.meta_gradient(batch)
        return run

    whole, chunked = peak_saved_bytes(gradient(None)), peak_saved_bytes(gradient(2))
    assert chunked < 0.4 * whole, (chunked, whole)


def test_bad_task_chunk_size_is_refused():
    with pytest.raises(ValueError, match="task_chunk_size"):
        small_model(task_chunk_size=0)
    with pytest.raises(ConfigError, match="task_chunk_size"):
        resolve_config({"iterations": 1, "task_chunk_size": -1})


def test_task_chunk_size_survives_save_and_load(tmp_path):
    model = small_model(task_chunk_size=2)
    model.save(tmp_path / "m.pt")
    assert MetaSGD.load(tmp_path / "m.pt").task_chunk_size == 2
    assert MetaSGD.load(tmp_path / "m.pt", task_chunk_size=None).task_chunk_size is None
    np.testing.assert_equal(model.config["task_chunk_size"], 2)


def test_a_run_may_switch_to_chunks_on_resume(tmp_path):
    from metasgd_rl.run import Run
    from tests.tiny_config import TINY, metrics_rows

    config = {**TINY, "meta_batch_size": 3, "iterations": 2, "checkpoint_every": 1, "eval_every": 0}
    Run.create(resolve_config({**config, "run_dir": str(tmp_path / "whole")})).train()
    Run.create(resolve_config({**config, "iterations": 1, "run_dir": str(tmp_path / "mixed")})).train()
    resumed = Run.resume(tmp_path / "mixed", ["iterations=2", "task_chunk_size=2"])
    assert resumed.model.task_chunk_size == 2
    resumed.train()
    whole, mixed = metrics_rows(tmp_path / "whole"), metrics_rows(tmp_path / "mixed")
    assert [r["iteration"] for r in mixed] == ["1", "2"]
    assert mixed[0] == whole[0]
    for key in ("loss", "pre_return", "post_return", "outer/grad_norm"):
        assert float(mixed[1][key]) == pytest.approx(float(whole[1][key]), rel=1e-4, abs=1e-7), key
