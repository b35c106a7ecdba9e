"""Rollouts on Ray actors (a local Ray with 2 CPUs): the same batch as the local sampler, dead actors replaced,
failures that end in a clear error instead of a hang."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from metasgd_rl import MetaSGD, make_task_family
from metasgd_rl.config import ConfigError, resolve_config
from metasgd_rl.policies import make_policy
from metasgd_rl.ray_sampler import INSTALL_HINT, RaySampler, RolloutWorkerError, make_sampler
from metasgd_rl.sampler import sample_episodes
from metasgd_rl_envs.navigation import Navigation2DRandomStartFamily
from tests.test_sampler import assert_same_batch
from tests.tiny_config import TINY

ROOT = Path(__file__).resolve().parent.parent


# -- families that misbehave inside the actor ------------------------------------------------------------------


class DiesOnce(Navigation2DRandomStartFamily):
    """Navigation2D whose worker process dies the first time it builds a vector env (marker file absent)."""

    def __init__(self, marker: str):
        super().__init__()
        self.marker = marker

    def make_vector_env(self, tasks, episodes_per_task):
        if not os.path.exists(self.marker):
            Path(self.marker).touch()
            os._exit(1)
        return super().make_vector_env(tasks, episodes_per_task)


class AlwaysDies(Navigation2DRandomStartFamily):
    def make_vector_env(self, tasks, episodes_per_task):
        os._exit(1)


class Hangs(Navigation2DRandomStartFamily):
    def make_vector_env(self, tasks, episodes_per_task):
        time.sleep(120)
        return super().make_vector_env(tasks, episodes_per_task)


class SlowToUnpickle(Navigation2DRandomStartFamily):
    """Navigation2D that an actor takes ten minutes to unpickle: its start-up's last stage, making the family."""

    def __setstate__(self, state):
        time.sleep(600)
        self.__dict__.update(state)


class Raises(Navigation2DRandomStartFamily):
    def make_vector_env(self, tasks, episodes_per_task):
        raise ValueError("this env is broken")


# -- without Ray -------------------------------------------------------------------------------------------------


def test_the_sampler_config_key_is_validated(tmp_path):
    config = resolve_config({**TINY, "sampler": "ray", "ray_workers": 2, "run_dir": str(tmp_path / "r")})
    assert (config["sampler"], config["ray_workers"], config["ray_address"]) == ("ray", 2, None)
    with pytest.raises(ConfigError, match="sampler='spark' is not allowed; use one of \\['local', 'ray'\\]"):
        resolve_config({**TINY, "sampler": "spark"})
    with pytest.raises(ConfigError, match="ray_workers=0 is not allowed"):
        resolve_config({**TINY, "ray_workers": 0})


def test_a_missing_ray_says_what_to_install(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "ray", None)
    with pytest.raises(ImportError, match="metasgd-rl\\[distributed\\]") as info:
        make_sampler("ray", make_task_family("Navigation2D-v0"))
    assert str(info.value) == INSTALL_HINT


def test_a_checkpoint_never_chooses_a_network_address(tmp_path, capsys):
    """A file that says sampler: ray with an address loads (and evaluates) locally; only the caller picks Ray."""
    pytest.importorskip("ray", reason="the distributed extra (ray) is not installed")
    from metasgd_rl.cli import main

    model = MetaSGD("Navigation2D-v0", policy_kwargs=dict(hidden_sizes=(8,)), meta_batch_size=2, episodes_per_task=2,
                    outer="adam", sampler="ray", ray_address="10.255.255.1:6379", ray_workers=3)
    path = model.save(tmp_path / "remote.pt")  # never rolled out: nothing connected
    loaded = MetaSGD.load(path)
    assert (loaded.sampler, loaded.ray_address, loaded.ray_workers) == ("local", None, None)
    assert main(["evaluate", str(path), "--tasks", "2", "--steps", "1", "--episodes", "2"]) == 0
    assert "mean return" in capsys.readouterr().out
    chosen = MetaSGD.load(path, sampler="ray", ray_address="auto")  # the caller may ask for Ray
    assert (chosen.sampler, chosen.ray_address) == ("ray", "auto")


def _rollout_in_a_process_without_ray() -> tuple[bool, int]:
    """In a fresh process: a RaySampler starts its own local Ray (2 actors) and samples the local batch."""
    import ray

    family = make_task_family("Navigation2D-v0", max_episode_steps=5)
    policy = make_policy(family.observation_space, family.action_space, hidden_sizes=(8,))
    tasks = family.sample_tasks(3, np.random.default_rng(0))
    sampler = RaySampler(family, num_workers=2)
    try:
        batch = sampler(family, policy, policy.task_parameters(3), tasks, 2, seed=0)
        local = sample_episodes(family, policy, policy.task_parameters(3), tasks, 2, seed=0)
        return torch.equal(batch.observations, local.observations), len(sampler._actors)
    finally:
        sampler.close()
        ray.shutdown()


def test_a_sampler_starts_a_local_ray_when_none_is_running():
    pytest.importorskip("ray", reason="the distributed extra (ray) is not installed")
    from metasgd_rl.benchmark import in_fresh_process

    assert in_fresh_process(_rollout_in_a_process_without_ray) == (True, 2)


# -- with a local Ray --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray", reason="the distributed extra (ray) is not installed")
    started = not ray.is_initialized()
    if started:  # workers import this test module (its families are pickled by reference)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}})
    yield ray
    if started:
        ray.shutdown()


def random_params(policy, num_tasks: int, seed: int = 2) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {n: p.detach().unsqueeze(0).expand(num_tasks, *p.shape) + 0.3 * torch.randn(num_tasks, *p.shape,
                                                                                            generator=gen)
            for n, p in policy.adaptable_parameters().items()}


@pytest.mark.parametrize("family_id, kwargs", [
    ("Navigation2D-RandomStart-v0", {}),
    ("CartPoleRandParams-v0", {"max_episode_steps": 40}),  # generic vector env, discrete, early termination
    ("MetaWorld-ML1-v0", {"env_name": "reach-v3", "max_episode_steps": 30}),  # success flags from the actors
    ("HopperRandParams-v0", {"max_episode_steps": 30}),  # MuJoCo's batched rollout, a model per task, falls
])
def test_the_ray_batch_is_the_local_batch(local_ray, family_id, kwargs):
    if family_id.startswith("MetaWorld"):
        pytest.importorskip("metaworld", reason="the metaworld extra is not installed")
    if family_id.startswith("Hopper"):
        pytest.importorskip("mujoco", reason="the mujoco extra is not installed")
    family = make_task_family(family_id, **kwargs)
    policy = make_policy(family.observation_space, family.action_space, hidden_sizes=(8,),
                         generator=torch.Generator().manual_seed(0))
    tasks = family.sample_tasks(5, np.random.default_rng(1))
    params = random_params(policy, 5)
    local = sample_episodes(family, policy, params, tasks, 3, seed=11)
    sampler = RaySampler(family, num_workers=2, startup_timeout=900)  # actors start slowly on a loaded machine
    try:
        assert_same_batch(sampler(family, policy, params, tasks, 3, seed=11), local)
        # the actors are reused; fewer tasks than actors use fewer actors
        assert_same_batch(sampler(family, policy, params, tasks, 3, seed=11), local)
        assert len(sampler._actors) == 2
        one = sample_episodes(family, policy, {n: p[:1] for n, p in params.items()}, tasks[:1], 3, seed=4)
        assert_same_batch(sampler(family, policy, {n: p[:1] for n, p in params.items()}, tasks[:1], 3, seed=4), one)
    finally:
        sampler.close()


def test_more_actors_than_the_cluster_can_place_is_an_error_not_a_hang(local_ray):
    family = make_task_family("Navigation2D-v0")
    policy = make_policy(family.observation_space, family.action_space, hidden_sizes=(8,))
    tasks = family.sample_tasks(3, np.random.default_rng(0))
    sampler = RaySampler(family, num_workers=3, startup_timeout=10)  # 3 actors x 1 CPU on 2 CPUs
    with pytest.raises(RolloutWorkerError, match="did not start within startup_timeout=10 s: they need 3 CPUs but Ray "
                                                 "has only 2 of its 2 CPUs free"):
        sampler(family, policy, policy.task_parameters(3), tasks, 1, seed=0)
    assert sampler._actors == []


def test_actors_slow_to_make_the_family_fail_with_an_error_that_names_that_stage(local_ray):
    # how long a fresh actor takes to start and import torch here and now (seconds idle, a minute on a loaded
    # machine): the timeout below leaves three times that, never the 600 s of unpickling
    quick = RaySampler(Navigation2DRandomStartFamily(), num_workers=1, startup_timeout=600)
    quick.actors(1)
    startup = quick.startup_seconds[-1]  # until its family was built (cumulative per stage)
    quick.close()
    timeout = round(max(20.0, 3 * startup))
    family = SlowToUnpickle()  # no registry id: pickled, and unpickled by the actor's build()
    policy = make_policy(family.observation_space, family.action_space, hidden_sizes=(8,))
    tasks = family.sample_tasks(2, np.random.default_rng(0))
    sampler = RaySampler(family, num_workers=1, startup_timeout=timeout)
    began = time.monotonic()
    with pytest.raises(RolloutWorkerError, match=(
            rf"^1 of 1 new Ray rollout actors \(num_cpus=1 each\) did not start within startup_timeout={timeout} s: "
            r"the worker processes were up after [\d.]+ s and imported torch and the rollout code in [\d.]+ s, but "
            r"making task family 'SlowToUnpickle' \(importing its module and building it\) had not finished after "
            r"[\d.]+ s; raise the timeout \(config key ray_startup_timeout")) as info:
        sampler(family, policy, policy.task_parameters(2), tasks, 1, seed=0)
    assert "\n" not in str(info.value) and time.monotonic() - began < timeout + 60
    assert sampler._actors == []


def test_a_model_on_ray_computes_the_same_meta_gradient(local_ray):
    kwargs = dict(policy_kwargs=dict(hidden_sizes=(8,)), meta_batch_size=3, episodes_per_task=4, seed=3)
    models = {kind: MetaSGD("Navigation2D-RandomStart-v0", sampler=kind, ray_workers=2, **kwargs)
              for kind in ("local", "ray")}
    tasks = models["local"].sample_train_tasks(0)
    grads = {}
    for kind, model in models.items():
        loss = model.meta_loss(tasks, seed=5)
        loss.backward()
        grads[kind] = (loss.detach(), [p.grad.clone() for p in model.outer_optimizer.params])
    assert torch.equal(grads["local"][0], grads["ray"][0])
    for a, b in zip(grads["local"][1], grads["ray"][1], strict=True):
        assert torch.equal(a, b)
    info = {kind: model.train_step() for kind, model in models.items()}
    assert info["local"]["post_return"] == info["ray"]["post_return"]
    assert models["ray"].config["sampler"] == "ray"
    models["ray"].close()


def test_an_actor_that_dies_is_replaced_and_its_work_redone(local_ray, tmp_path):
    family = DiesOnce(str(tmp_path / "died"))
    policy = make_policy(family.observation_space, family.action_space, hidden_sizes=(8,),
                         generator=torch.Generator().manual_seed(0))
    tasks = family.sample_tasks(4, np.random.default_rng(0))
    params = random_params(policy, 4)
    local = sample_episodes(Navigation2DRandomStartFamily(), policy, params, tasks, 2, seed=1)
    sampler = RaySampler(family, num_workers=2, max_restarts=2)
    try:
        batch = sampler(family, policy, params, tasks, 2, seed=1)
    finally:
        sampler.close()
    assert (tmp_path / "died").exists()  # an actor really died
    assert_same_batch(batch, local)


def test_an_actor_that_keeps_dying_fails_with_a_clear_error(local_ray):
    family = AlwaysDies()
    policy = make_policy(family.observation_space, family.action_space, hidden_sizes=(8,))
    tasks = family.sample_tasks(2, np.random.default_rng(0))
    sampler = RaySampler(family, num_workers=1, max_restarts=1)
    with pytest.raises(RolloutWorkerError, match=r"tasks 0\.\.1 died and was restarted max_restarts=1 times"):
        sampler(family, policy, policy.task_parameters(2), tasks, 2, seed=0)


def test_a_hanging_actor_times_out_instead_of_hanging(local_ray):
    family = Hangs()
    policy = make_policy(family.observation_space, family.action_space, hidden_sizes=(8,))
    tasks = family.sample_tasks(2, np.random.default_rng(0))
    # the actor sleeps 120 s: without the timeout the rollout would end normally, with no error. No wall-clock
    # bound: starting the actor may take minutes on a loaded machine (hence the generous startup timeout)
    sampler = RaySampler(family, num_workers=1, timeout=5, startup_timeout=900)
    with pytest.raises(RolloutWorkerError, match=r"tasks 0\.\.1 did not finish within timeout=5 s"):
        sampler(family, policy, policy.task_parameters(2), tasks, 2, seed=0)
    assert sampler._actors == []  # killed; the next rollout starts fresh ones


def test_an_error_in_the_environment_is_raised_as_itself(local_ray):
    family = Raises()
    policy = make_policy(family.observation_space, family.action_space, hidden_sizes=(8,))
    tasks = family.sample_tasks(2, np.random.default_rng(0))
    sampler = RaySampler(family, num_workers=1)
    try:
        with pytest.raises(ValueError, match="this env is broken"):
            sampler(family, policy, policy.task_parameters(2), tasks, 2, seed=0)
    finally:
        sampler.close()


@pytest.mark.parametrize("alpha", [{"alpha_optimizer": "joint"}, {"alpha_parameterization": "log"}])
def test_a_run_resumed_on_ray_equals_the_uninterrupted_local_run(local_ray, tmp_path, alpha):
    from metasgd_rl.run import Run
    from tests.tiny_config import metrics_rows

    config = {**TINY, "family": "Navigation2D-RandomStart-v0", "iterations": 2, "checkpoint_every": 1, **alpha}
    Run.create(resolve_config({**config, "run_dir": str(tmp_path / "local")})).train()
    Run.create(resolve_config({**config, "iterations": 1, "run_dir": str(tmp_path / "mixed")})).train()
    resumed = Run.resume(tmp_path / "mixed", ["iterations=2", "sampler=ray", "ray_workers=2"])
    assert resumed.model.sampler == "ray"
    resumed.train()
    resumed.model.close()
    assert metrics_rows(tmp_path / "mixed") == metrics_rows(tmp_path / "local")


def test_sigterm_on_ray_stops_after_the_iteration_with_a_checkpoint_as_locally(tmp_path):
    """ray.init installs a SIGTERM handler that exits wherever the driver is; the run's own handler must win."""
    pytest.importorskip("ray", reason="the distributed extra (ray) is not installed")
    import signal
    import subprocess
    import sys

    from metasgd_rl.cli import main
    from metasgd_rl.run import Run
    from tests.test_run import SIGNAL_AFTER_SECOND_ITERATION
    from tests.tiny_config import assert_same_state, load_state, metrics_rows, write_config

    config = write_config(tmp_path / "tiny.yaml", checkpoint_every=3, sampler="ray", ray_workers=1)
    b = tmp_path / "b"
    proc = subprocess.run([sys.executable, "-c", SIGNAL_AFTER_SECOND_ITERATION, "SIGTERM", "1", "train", str(config),
                           "--run-dir", str(b)], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr[-3000:]
    assert "stopped at iteration 2, checkpoint saved" in proc.stderr
    assert load_state(b / "checkpoint.pt")["iteration"] == 2 and not (b / "final.pt").exists()
    assert [r["iteration"] for r in metrics_rows(b)] == ["1", "2"]
    assert main(["train", "--resume", str(b), "--set", "sampler=local"]) == 0
    Run.create(resolve_config({**TINY, "ray_workers": 1, "run_dir": str(tmp_path / "a")})).train()
    assert metrics_rows(tmp_path / "a") == metrics_rows(b)
    assert_same_state(load_state(tmp_path / "a" / "final.pt"), load_state(b / "final.pt"))
