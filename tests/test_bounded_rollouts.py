"""max_envs: a rollout builds and steps at most that many sub-envs at a time, and its batch (so training and
evaluation) is the same bit for bit."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from metasgd_rl import MetaSGD, make_task_family
from metasgd_rl.config import ConfigError, resolve_config
from metasgd_rl.evaluation import evaluate_adaptation
from metasgd_rl.policies import make_policy
from metasgd_rl.sampler import rollout_chunk, rollout_seeds, sample_episodes, tasks_per_rollout
from tests.test_sampler import assert_same_batch

TASKS, EPISODES = 5, 3


class CountingFamily:
    """Wraps ``family.make_vector_env`` to record how many sub-envs each vector env had."""

    def __init__(self, family):
        self.family, self.sizes = family, []
        self._make = family.make_vector_env
        family.make_vector_env = self.make_vector_env

    def make_vector_env(self, tasks, episodes):
        venv = self._make(tasks, episodes)
        self.sizes.append(venv.num_envs)
        return venv

    def restore(self):
        del self.family.make_vector_env


def perturbed_params(policy, n: int, seed: int = 2) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {name: p.detach().unsqueeze(0).expand(n, *p.shape) + 0.3 * torch.randn(n, *p.shape, generator=gen)
            for name, p in policy.adaptable_parameters().items()}


@pytest.mark.parametrize("family_id, kwargs", [
    ("Navigation2D-RandomStart-v0", {}),                      # native vector env, per-sub-env random starts
    ("CartPoleRandParams-v0", {"max_episode_steps": 40}),     # generic vector env, episodes end at different steps
    ("MultiArmedBandit-v0", {}),                              # native vector env, discrete
])
def test_a_bounded_rollout_is_the_whole_batch_with_at_most_max_envs_at_a_time(family_id, kwargs):
    family = make_task_family(family_id, **kwargs)
    policy = make_policy(family.observation_space, family.action_space, hidden_sizes=(8,),
                         generator=torch.Generator().manual_seed(0))
    tasks = family.sample_tasks(TASKS, np.random.default_rng(1))
    params = perturbed_params(policy, TASKS)
    whole = sample_episodes(family, policy, params, tasks, EPISODES, seed=11)
    counting = CountingFamily(family)
    try:
        # 1 and 2 are below the episodes per task: one task (3 sub-envs) at a time; 7: two tasks, then one left over
        for max_envs, groups in ((1, [3] * 5), (2, [3] * 5), (3, [3] * 5), (7, [6, 6, 3]), (15, [15]), (99, [15])):
            counting.sizes.clear()
            bounded = sample_episodes(family, policy, params, tasks, EPISODES, seed=11, max_envs=max_envs)
            assert_same_batch(bounded, whole)
            assert torch.equal(bounded.final_observations, whole.final_observations)
            assert counting.sizes == groups, max_envs
        # a chunk of a meta-batch (a Ray actor's) obeys the bound too, and is still exactly its part of the batch
        env_seed, noise_seed = rollout_seeds(11)
        part = ({n: p[1:4] for n, p in params.items()}, tasks[1:4], EPISODES, env_seed, noise_seed, 1, TASKS)
        unbounded = rollout_chunk(family, policy, *part, max_envs=99)
        counting.sizes.clear()
        chunk = rollout_chunk(family, policy, *part, max_envs=3)
        assert counting.sizes == [3, 3, 3]
        assert_same_batch(chunk, unbounded)
        assert torch.equal(chunk.observations, whole.observations[:chunk.horizon, 1:4])
    finally:
        counting.restore()


def test_tasks_per_rollout():
    assert tasks_per_rollout(50, 10, None) == 50
    assert tasks_per_rollout(50, 10, 50) == 5
    assert tasks_per_rollout(50, 10, 59) == 5
    assert tasks_per_rollout(50, 10, 9) == 1   # a task's episodes always step together
    assert tasks_per_rollout(3, 10, 1000) == 100  # more than there are: one group


@pytest.mark.parametrize("bad", [0, -1, True, 2.5, "10"])
def test_a_bad_max_envs_is_refused(bad):
    family = make_task_family("Navigation2D-v0")
    policy = make_policy(family.observation_space, family.action_space, hidden_sizes=(),
                         generator=torch.Generator().manual_seed(0))
    tasks = family.sample_tasks(2, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"max_envs=.* is not allowed; use an integer >= 1"):
        sample_episodes(family, policy, policy.task_parameters(2), tasks, 2, seed=0, max_envs=bad)
    with pytest.raises(ValueError, match="max_envs"):
        MetaSGD("Navigation2D-v0", max_envs=bad)
    with pytest.raises(ConfigError, match="max_envs"):
        resolve_config({"iterations": 1, "max_envs": bad})


def test_the_familys_max_envs_is_the_default_and_the_samplers_overrides_it():
    family = make_task_family("Navigation2D-RandomStart-v0")
    policy = make_policy(family.observation_space, family.action_space, hidden_sizes=(),
                         generator=torch.Generator().manual_seed(0))
    tasks = family.sample_tasks(4, np.random.default_rng(0))
    counting = CountingFamily(family)
    try:
        family.max_envs = 4  # an instance attribute shadows the class's None
        sample_episodes(family, policy, policy.task_parameters(4), tasks, 2, seed=0)
        assert counting.sizes == [4, 4]
        counting.sizes.clear()
        sample_episodes(family, policy, policy.task_parameters(4), tasks, 2, seed=0, max_envs=8)
        assert counting.sizes == [8]
    finally:
        counting.restore()


def small_model(**kwargs) -> MetaSGD:
    settings = dict(policy_kwargs=dict(hidden_sizes=(16,)), meta_batch_size=TASKS, episodes_per_task=EPISODES,
                    family_kwargs=dict(max_episode_steps=15), seed=3, outer="adam")
    return MetaSGD("Navigation2D-RandomStart-v0", **{**settings, **kwargs})


def test_training_and_evaluation_are_the_same_with_a_bound():
    models = [small_model(), small_model(max_envs=4)]
    for model in models:
        model.train_step()
        model.train_step()
    whole, bounded = models
    assert bounded.config["max_envs"] == 4 and whole.config["max_envs"] is None
    for (name, a), b in zip(whole.policy.state_dict().items(), bounded.policy.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    for a, b in zip(whole.step_sizes.parameters(), bounded.step_sizes.parameters(), strict=True):
        assert torch.equal(a, b)
    results = [evaluate_adaptation(model, n_tasks=6, steps=2, episodes=4, seed=5) for model in models]
    np.testing.assert_array_equal(results[0].episode_returns, results[1].episode_returns)


def test_max_envs_survives_save_and_load_and_a_run_may_change_it_on_resume(tmp_path):
    from metasgd_rl.run import Run
    from tests.tiny_config import TINY, metrics_rows

    model = small_model(max_envs=6)
    model.save(tmp_path / "m.pt")
    assert MetaSGD.load(tmp_path / "m.pt").max_envs == 6
    assert MetaSGD.load(tmp_path / "m.pt", max_envs=None).max_envs is None

    config = {**TINY, "meta_batch_size": 3, "iterations": 2, "checkpoint_every": 1, "eval_every": 0}
    Run.create(resolve_config({**config, "run_dir": str(tmp_path / "whole")})).train()
    Run.create(resolve_config({**config, "iterations": 1, "run_dir": str(tmp_path / "mixed")})).train()
    resumed = Run.resume(tmp_path / "mixed", ["iterations=2", "max_envs=2"])
    assert resumed.model.max_envs == 2
    resumed.train()
    assert metrics_rows(tmp_path / "mixed") == metrics_rows(tmp_path / "whole")  # bit for bit, not approximately

    from metasgd_rl.cli import main

    reports = []
    for name, extra in (("unbounded", []), ("bounded", ["--max-envs", "2"])):
        assert main(["compare", str(tmp_path / "whole"), str(tmp_path / "mixed"), "--out", str(tmp_path / name),
                     "--tasks", "3", "--steps", "1", "--episodes", "2", *extra]) == 0
        reports.append(json.loads((tmp_path / name / "results.json").read_text()))
    assert [r["episode_returns"] for r in reports[0]["results"].values()] == \
        [r["episode_returns"] for r in reports[1]["results"].values()]


def test_evaluate_takes_max_envs_from_the_command_line(tmp_path, capsys):
    from metasgd_rl.cli import main

    model = small_model()
    model.save(tmp_path / "m.pt")
    outputs = []
    for extra in ([], ["--max-envs", "3"]):
        assert main(["evaluate", str(tmp_path / "m.pt"), "--tasks", "4", "--steps", "1", "--episodes", "2",
                     *extra]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1]
    with pytest.raises(SystemExit):
        main(["evaluate", str(tmp_path / "m.pt"), "--max-envs", "0"])
    assert "--max-envs" in capsys.readouterr().err
