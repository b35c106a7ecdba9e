"""Edge sizes (one task, one episode, horizon 1, one hidden unit, chunks larger than the meta-batch, two inner
steps, one evaluation task) train, resume and evaluate through the CLI on every outer optimiser and estimator;
sizes that cannot work are refused in one line before anything is written."""

from __future__ import annotations

import pytest

from metasgd_rl.cli import main
from tests.tiny_config import write_config

# (name, --set overrides)
EDGES = [
    ("one-task", ["meta_batch_size=1"]),
    ("one-episode", ["episodes_per_task=1"]),
    ("horizon-1", ["family_kwargs.max_episode_steps=1"]),
    ("one-hidden-unit", ["policy_kwargs.hidden_sizes=[1]"]),
    ("chunk-above-batch", ["task_chunk_size=5"]),
    ("one-task-chunked", ["meta_batch_size=1", "task_chunk_size=3"]),
    ("two-inner-steps", ["inner_steps=2"]),
    ("one-eval-task", ["eval_tasks=1"]),
    ("all-at-once", ["meta_batch_size=1", "episodes_per_task=1", "family_kwargs.max_episode_steps=3",
                     "policy_kwargs.hidden_sizes=[1]", "eval_tasks=1", "task_chunk_size=4"]),
]
OUTERS = ("trpo", "adam", "ppo")
ESTIMATORS = ("maml", "lvc", "dice")
# every edge on every outer; the estimator rotates so that each (outer, estimator) pair is covered
CASES = [(name, sets, outer, ESTIMATORS[(i + j) % len(ESTIMATORS)])
         for i, (name, sets) in enumerate(EDGES) for j, outer in enumerate(OUTERS)]


@pytest.mark.parametrize("name, sets, outer, estimator", CASES,
                         ids=[f"{name}-{outer}-{estimator}" for name, _, outer, estimator in CASES])
def test_an_edge_size_trains_resumes_and_evaluates(tmp_path, capsys, name, sets, outer, estimator):
    config = write_config(tmp_path / "edge.yaml", outer=outer, outer_kwargs=None, estimator=estimator,
                          iterations=2, checkpoint_every=1, eval_every=2, policy_kwargs=dict(hidden_sizes=[4]))
    run_dir = tmp_path / "run"
    overrides = [arg for item in sets for arg in ("--set", item)]
    assert main(["train", str(config), "--run-dir", str(run_dir), *overrides]) == 0, capsys.readouterr().err
    assert main(["train", "--resume", str(run_dir), "--set", "iterations=3"]) == 0, capsys.readouterr().err
    assert main(["evaluate", str(run_dir / "final.pt"), "--tasks", "1", "--steps", "1", "--episodes", "1"]) == 0, \
        capsys.readouterr().err


def test_no_inner_step_is_refused_in_one_line(tmp_path, capsys):
    config = write_config(tmp_path / "edge.yaml", inner_steps=0)
    assert main(["train", str(config), "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "inner_steps=0" in err and ">= 1" in err
    assert not (tmp_path / "run").exists()
