"""Meta-World families (envs/metaworld.py) and success rates through sampler, evaluation, runs and the CLI."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import metasgd_rl as msr
from metasgd_rl.cli import format_table, main
from metasgd_rl.evaluation import AdaptationResult
from metasgd_rl.family import TaskFamily
from metasgd_rl.policies import make_policy
from metasgd_rl.report import evaluate_runs
from metasgd_rl.sampler import info_flags, sample_episodes

ROOT = Path(__file__).resolve().parents[1]
IDS = ("MetaWorld-ML1-v0", "MetaWorld-ML10-v0", "MetaWorld-ML45-v0")


def rand_vec(task) -> np.ndarray:
    """The object/goal vector a metaworld.Task fixes."""
    return np.asarray(pickle.loads(task.data)["rand_vec"])


def bound_rand_vec(env: gym.Env) -> np.ndarray:
    return np.asarray(env.unwrapped._last_rand_vec)


# -- without the extra -----------------------------------------------------------------------------------------


def test_the_ids_are_listed_and_without_metaworld_making_one_says_what_to_install():
    assert set(IDS) <= set(msr.list_task_families())
    code = (
        "import sys\n"
        "sys.modules['metaworld'] = None  # as if the extra were not installed\n"
        "import metasgd_rl as msr\n"
        f"assert set({IDS!r}) <= set(msr.list_task_families())\n"
        "try:\n"
        "    msr.make_task_family('MetaWorld-ML1-v0', env_name='reach-v3')\n"
        "except ImportError as err:\n"
        "    print(err)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert 'pip install "metasgd-rl[metaworld]"' in result.stdout


# -- the benchmark's tasks and splits ----------------------------------------------------------------------------

metaworld = pytest.importorskip("metaworld", reason="the metaworld extra is not installed")


@pytest.fixture(scope="module")
def reach():
    family = msr.make_task_family("MetaWorld-ML1-v0", env_name="reach-v3", max_episode_steps=40)
    yield family
    family.close()


@pytest.fixture(scope="module")
def ml10():
    family = msr.make_task_family("MetaWorld-ML10-v0", max_episode_steps=20)
    yield family
    family.close()


def test_ml1_test_tasks_are_the_benchmarks_test_tasks_for_the_same_seed(reach):
    bench = metaworld.ML1("reach-v3", seed=0)  # built here, independently of the family's cached one
    for split, expected in (("train", bench.train_tasks), ("test", bench.test_tasks)):
        for index, task in enumerate(expected):
            ours = reach.benchmark_task({"env_name": "reach-v3", "index": index, "split": split})
            assert np.array_equal(rand_vec(ours), rand_vec(task)), (split, index)
    # the environment a task dict builds is bound to that benchmark task
    env = reach.make_env({"env_name": "reach-v3", "index": 7, "split": "test"})
    env.reset(seed=0)
    assert np.array_equal(bound_rand_vec(env), rand_vec(bench.test_tasks[7]))
    env.close()
    # another benchmark seed gives other tasks
    other = msr.make_task_family("MetaWorld-ML1-v0", env_name="reach-v3", benchmark_seed=1, max_episode_steps=40)
    assert not np.array_equal(rand_vec(other.benchmark_task({"env_name": "reach-v3", "index": 0, "split": "test"})),
                              rand_vec(bench.test_tasks[0]))
    assert other.make_kwargs["benchmark_seed"] == 1


def test_train_and_test_never_overlap(reach, ml10):
    rng = np.random.default_rng(0)
    train = reach.sample_tasks(50, rng)
    test = reach.sample_tasks(50, rng, split="test")
    assert {t["split"] for t in train} == {"train"} and {t["split"] for t in test} == {"test"}
    assert len({t["index"] for t in train}) == 50  # without replacement: every training goal once
    train_goals = {tuple(rand_vec(reach.benchmark_task(t))) for t in train}
    test_goals = {tuple(rand_vec(reach.benchmark_task(t))) for t in test}
    assert len(train_goals) == len(test_goals) == 50 and not train_goals & test_goals
    # ML10: the test split draws only the 5 held-out classes, the train split only the 10 training ones
    assert len(ml10.classes["train"]) == 10 and len(ml10.classes["test"]) == 5
    assert not set(ml10.classes["train"]) & set(ml10.classes["test"])
    assert {t["env_name"] for t in ml10.sample_tasks(200, rng)} == set(ml10.classes["train"])
    assert {t["env_name"] for t in ml10.sample_tasks(200, rng, split="test")} == set(ml10.classes["test"])
    # a task of one split cannot pose as the other's
    with pytest.raises(ValueError, match="not a test class of ML10"):
        ml10.make_env({"env_name": ml10.classes["train"][0], "index": 0, "split": "test"})


def test_tasks_are_json_references_and_bad_ones_are_refused(reach):
    tasks = reach.sample_tasks(3, np.random.default_rng(5))
    assert json.loads(json.dumps(tasks)) == tasks
    assert tasks == reach.sample_tasks(3, np.random.default_rng(5))
    for bad, message in [
        ({"env_name": "reach-v3", "index": 50, "split": "train"}, r"index=50.*\[0, 49\]"),
        ({"env_name": "push-v3", "index": 0, "split": "train"}, "'push-v3', which is not a train class"),
        ({"env_name": "reach-v3", "index": 0, "split": "val"}, "split='val'"),
        ({"env_name": "reach-v3", "index": 0}, "exactly the keys"),
    ]:
        with pytest.raises(ValueError, match=message):
            reach.make_env(bad)


def test_bad_family_arguments_are_refused():
    with pytest.raises(ValueError, match=r"env_name=None is not allowed.*'reach-v3'"):
        msr.make_task_family("MetaWorld-ML1-v0")
    with pytest.raises(ValueError, match="env_name=.*reach-v9"):
        msr.make_task_family("MetaWorld-ML1-v0", env_name="reach-v9")
    with pytest.raises(ValueError, match="only for MetaWorld-ML1-v0"):
        msr.make_task_family("MetaWorld-ML10-v0", env_name="reach-v3")
    with pytest.raises(ValueError, match=r"max_episode_steps=501.*\[1, 500\]"):
        msr.make_task_family("MetaWorld-ML1-v0", env_name="reach-v3", max_episode_steps=501)
    with pytest.raises(ValueError, match="benchmark_seed=-1"):
        msr.make_task_family("MetaWorld-ML1-v0", env_name="reach-v3", benchmark_seed=-1)


@pytest.mark.parametrize("which", ["reach", "ml10"])
def test_check_task_family_passes(which, request):
    family = request.getfixturevalue(which)
    msr.check_task_family(family, steps=10)


def test_episodes_end_at_the_horizon(reach):
    env = reach.make_env(reach.sample_tasks(1, np.random.default_rng(0))[0])
    env.reset(seed=0)
    for step in range(1, 41):
        *_, terminated, truncated, _ = env.step(env.action_space.sample())
        assert truncated == (step == 40) and not terminated
    env.close()


def test_classes_mix_in_one_meta_batch_and_envs_are_kept_per_class(ml10):
    tasks = ml10.sample_tasks(10, np.random.default_rng(3))
    assert len({t["env_name"] for t in tasks}) > 3
    policy = make_policy(ml10.observation_space, ml10.action_space, hidden_sizes=(8,),
                         generator=torch.Generator().manual_seed(0))
    params = {n: p.detach().unsqueeze(0).expand(len(tasks), *p.shape) for n, p in policy.adaptable_parameters().items()}
    batch = sample_episodes(ml10, policy, params, tasks, 2, seed=1)
    assert batch.observations.shape == (20, 10, 2, 39) and batch.success.shape == (10, 2)
    pooled = {cls: list(envs) for cls, envs in ml10._pools.items()}
    for cls, envs in pooled.items():
        assert all(type(env) is cls for env in envs)
    venv = ml10.make_vector_env(tasks, 2)  # the same classes again: every env comes from the pool
    assert {id(env) for env in venv.envs} <= {id(env) for envs in pooled.values() for env in envs}
    for i, env in enumerate(venv.envs):
        assert env.unwrapped.__class__.__name__ == pooled_class_name(ml10, tasks[i // 2])
        env.reset(seed=0)
        assert np.array_equal(bound_rand_vec(env), rand_vec(ml10.benchmark_task(tasks[i // 2])))
    venv.close()
    # a reused environment behaves exactly like a fresh one for its new task
    again = sample_episodes(ml10, policy, params, tasks, 2, seed=1)
    assert torch.equal(again.observations, batch.observations) and torch.equal(again.rewards, batch.rewards)


def test_a_bounded_rollout_keeps_at_most_max_envs_and_gives_the_same_batch():
    family = msr.make_task_family("MetaWorld-ML1-v0", env_name="push-v3", max_episode_steps=10)  # fresh pools
    assert family.max_envs == 50  # Meta-World's default bound
    try:
        tasks = family.sample_tasks(7, np.random.default_rng(0), split="test")
        policy = make_policy(family.observation_space, family.action_space, hidden_sizes=(8,),
                             generator=torch.Generator().manual_seed(0))
        params = {n: p.detach().unsqueeze(0).expand(7, *p.shape) + 0.5 * torch.randn(7, *p.shape, generator=gen)
                  for gen in [torch.Generator().manual_seed(1)] for n, p in policy.adaptable_parameters().items()}
        bounded = sample_episodes(family, policy, params, tasks, 3, seed=4, max_envs=5)  # one task (3 envs) at a time
        assert sum(len(pool) for pool in family._pools.values()) == 3
        whole = sample_episodes(family, policy, params, tasks, 3, seed=4, max_envs=21)
        assert sum(len(pool) for pool in family._pools.values()) == 21
        for name in ("observations", "actions", "rewards", "mask", "success"):
            assert torch.equal(getattr(bounded, name), getattr(whole, name)), name
    finally:
        family.close()


def pooled_class_name(family, task) -> str:
    return family._classes[task["split"]][task["env_name"]].__name__


# -- success rates -----------------------------------------------------------------------------------------------


class FlagEnv(gym.Env):
    """Sets ``info["success"]`` at step ``task["succeed_at"]`` only (never if it is 0); ends after 5 steps or, with
    ``task["stop_at"]``, terminates then."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def __init__(self, task):
        self.task = task

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.t += 1
        info = {"success": self.t == self.task["succeed_at"]} if self.t != 2 else {}  # step 2 reports nothing
        stop = self.t == self.task.get("stop_at", 0)
        return np.zeros(1, np.float32), 1.0, stop, self.t == 5, info


class FlagFamily(TaskFamily):
    success_key = "success"
    observation_space = FlagEnv.observation_space
    action_space = FlagEnv.action_space
    max_episode_steps = 5

    def sample_tasks(self, n, rng, split="train"):
        return [{"succeed_at": int(k)} for k in rng.integers(0, 6, n)]

    def make_env(self, task):
        return FlagEnv(task)


@pytest.mark.parametrize("asynchronous", [False, True])
def test_the_sampler_records_success_at_any_step_and_not_after_the_episode(asynchronous):
    family = FlagFamily()
    family.asynchronous = asynchronous  # gymnasium's AsyncVectorEnv: the vector info format
    tasks = [{"succeed_at": 0}, {"succeed_at": 1}, {"succeed_at": 4}, {"succeed_at": 5},
             {"succeed_at": 4, "stop_at": 3}]  # the last one ends before its flag
    policy = make_policy(family.observation_space, family.action_space, hidden_sizes=(4,),
                         generator=torch.Generator().manual_seed(0))
    params = {n: p.detach().unsqueeze(0).expand(len(tasks), *p.shape) for n, p in policy.adaptable_parameters().items()}
    batch = sample_episodes(family, policy, params, tasks, 2, seed=0)
    assert batch.success.tolist() == [[0, 0], [1, 1], [1, 1], [1, 1], [0, 0]]
    assert batch.success_rates().tolist() == [0, 1, 1, 1, 0]
    assert batch.select_tasks(slice(1, 3)).success.tolist() == [[1, 1], [1, 1]]
    # a family without a success flag records none
    family.success_key = None
    assert sample_episodes(family, policy, params, tasks, 2, seed=0).success is None


def test_info_flags_reads_the_vector_info_format():
    infos = {"success": np.array([1.0, 0.0, 1.0]), "_success": np.array([True, True, False])}
    assert info_flags(infos, "success", 3).tolist() == [True, False, False]
    assert info_flags({}, "success", 3).tolist() == [False, False, False]
    with pytest.raises(ValueError, match="one number or bool per sub-env"):
        info_flags({"success": np.ones((3, 2))}, "success", 3)


def test_training_and_evaluation_report_success_rates(capsys):
    model = msr.MetaSGD(family=FlagFamily(), policy_kwargs=dict(hidden_sizes=(4,)), meta_batch_size=4,
                        episodes_per_task=3, outer="adam", seed=0)
    info = model.train_step()
    assert "pre_success" in info and "post_success" in info
    result = msr.evaluate_adaptation(model, n_tasks=6, steps=2, episodes=3, seed=1)
    expected = [[float(1 <= t["succeed_at"] <= 5 and t["succeed_at"] != 2)] * 3 for t in result.tasks]
    assert result.success.shape == (6, 3) and result.episode_success.shape == (6, 3, 3)
    assert result.success.tolist() == expected
    assert np.allclose(result.success_mean(), result.success.mean(0))
    assert np.isfinite(result.success_ci95()).all()
    again = AdaptationResult.from_dict(json.loads(result.to_json()))
    assert np.array_equal(again.success, result.success) and np.array_equal(again.episode_success,
                                                                            result.episode_success)
    table = format_table(result)
    assert "success rate ± 95% CI" in table.splitlines()[0]
    assert f"{result.success_mean()[0]:.2f}" in table.splitlines()[2]
    # families without success keep the return-only table and results
    plain = msr.evaluate_adaptation(msr.MetaSGD(family="Navigation2D-v0", policy_kwargs=dict(hidden_sizes=(4,)),
                                                meta_batch_size=2, episodes_per_task=2), n_tasks=2, steps=1,
                                    episodes=2)
    assert plain.success is None and "success" not in format_table(plain) and "success" not in plain.to_json()


def test_an_inconsistent_success_result_is_refused():
    with pytest.raises(ValueError, match="success must be the mean of episode_success"):
        AdaptationResult(tasks=[{}], returns=[[0.0]], success=[[0.5]], episode_success=[[[1.0, 1.0]]])
    with pytest.raises(ValueError, match=r"success rates must lie in \[0, 1\]"):
        AdaptationResult(tasks=[{}], returns=[[0.0]], success=[[2.0]])
    with pytest.raises(ValueError, match="success must be shaped like returns"):
        AdaptationResult(tasks=[{}], returns=[[0.0]], success=[[0.5, 0.5]])


# -- meta-training on Meta-World --------------------------------------------------------------------------------


def test_a_short_meta_training_run_on_ml1_records_success_and_evaluates(tmp_path, capsys):
    config = ROOT / "configs" / "metaworld-ml1-reach-metasgd.yaml"
    run = tmp_path / "run"
    sets = ["iterations=2", "eval_every=2", "eval_tasks=2", "meta_batch_size=2", "episodes_per_task=2",
            "family_kwargs.max_episode_steps=20", "policy_kwargs.hidden_sizes=[8]", "sampler=local",
            "progress_bar=false", "checkpoint_every=1"]
    assert main(["train", str(config), "--run-dir", str(run), *[a for s in sets for a in ("--set", s)]]) == 0
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    for column in ("pre_success", "post_success", "eval/pre_success", "eval/post_success"):
        assert column in header
    capsys.readouterr()
    out = tmp_path / "report"
    assert main(["evaluate", str(run / "final.pt"), "--tasks", "2", "--steps", "1", "--episodes", "2",
                 "--report", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "MetaWorld-ML1-v0" in printed and "success rate ± 95% CI" in printed
    report = (out / "report.md").read_text()
    assert "Success rate" in report and "last held-out post success" in report
    model = msr.MetaSGD.load(run / "final.pt")
    assert model.family.make_kwargs["benchmark_seed"] == 0 and model.family.max_episode_steps == 20
    # compare releases each run's pooled environments after evaluating it (about 20 MB each)
    results, _, models = evaluate_runs([run], n_tasks=2, steps=1, episodes=2)
    assert list(results) == ["Meta-SGD (seed 0)"]
    assert results["Meta-SGD (seed 0)"].success is not None
    assert not any(models["Meta-SGD (seed 0)"].family._pools.values())
