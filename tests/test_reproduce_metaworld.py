"""The Meta-World study script (scripts/reproduce_metaworld.py, issue 24): its paper-size arithmetic, and a tiny
ML10 study end to end that trains, evaluates both ways, reports, publishes, reuses finished runs, and whose
numbers equal a direct ``evaluate_adaptation`` of the published checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.script_module import load_script

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "reproduce_metaworld.py"


@pytest.fixture(scope="module")
def study():
    return load_script("reproduce_metaworld")


def test_ml10_iterations_default_to_fifteen_million_steps_of_the_configs(study):
    args = study.parse_args(["--out", "/nonexistent"])
    assert args.push_iterations == 120 and args.push_seeds == [0, 1] and args.ml10_seeds == [0]
    # ML10: 20 tasks × 10 episodes × horizon 150 × 2 rollouts; ML1 push: a meta-batch of 10
    assert study.steps_per_iteration(study.config_of(args, study.ML10, "metasgd")) == 60_000
    assert study.steps_per_iteration(study.config_of(args, study.ML1, "maml")) == 30_000
    assert study.iterations_of(args, study.ML10) == 250
    assert study.config_of(args, study.ML1, "maml")["sampler"] == "local"
    assert study.iterations_of(study.parse_args(["--ml10-iterations", "7"]), study.ML10) == 7


def test_ray_estimate_scales_only_the_sampling_share(study):
    assert study.ray_seconds(100.0, 0.9, 2) == pytest.approx(55.0)
    assert study.ray_seconds(100.0, 0.9, 16) == pytest.approx(100 * (0.9 / 16 + 0.1))
    assert study.ray_seconds(100.0, None, 4) is None


def test_wall_clock_reads_metrics(study, tmp_path):
    (tmp_path / "metrics.csv").write_text("iteration,seconds,env_steps,time/sampling\n1,10,1000,8\n2,30,1000,24\n")
    w = study.wall_clock(tmp_path)
    assert w["iterations"] == 2 and w["seconds"] == 40 and w["median_seconds"] == 20 and w["env_steps"] == 2000
    assert w["sampling_share"] == pytest.approx(0.8)
    assert w["paper_seconds_local"] == pytest.approx(study.PAPER_STEPS / 50)
    assert w["paper_seconds_ray"]["4"] == pytest.approx(study.PAPER_STEPS / 50 * (0.2 + 0.8 / 4))


TINY = ["--benchmarks", "ML10", "--ml10-iterations", "1", "--set", "meta_batch_size=2", "--set", "episodes_per_task=2",
        "--set", "family_kwargs.max_episode_steps=10", "--set", "eval_every=0", "--eval-tasks", "2",
        "--eval-episodes", "2", "--protocol-adaptation-episodes", "1", "--protocol-evaluation-episodes", "1",
        "--protocol-envs-per-class", "10"]


def _script(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _finished_push_runs(study, tmp_path: Path, *options: str):
    out = tmp_path / "study"
    for name in ("metasgd-seed0", "maml-seed0"):
        (out / "runs" / "ML1-push-v3" / name).mkdir(parents=True)
        (out / "runs" / "ML1-push-v3" / name / "final.pt").write_bytes(name.encode())
    return study.parse_args(["--benchmarks", "ML1-push-v3", "--push-seeds", "0", "--out", str(out), *options])


def test_evaluations_run_side_by_side_in_children_given_the_same_options(study, tmp_path, monkeypatch):
    args = _finished_push_runs(study, tmp_path, "--eval-tasks", "7")
    calls = []

    def run(command, env, **kwargs):
        calls.append((command, env))
        return subprocess.CompletedProcess(command, 0, stdout=f"evaluated {command[-1]}\n", stderr="")

    monkeypatch.setattr(study.subprocess, "run", run)
    assert study.evaluate_runs(args) == []
    assert sorted(c[-3:] for c, _ in calls) == [["--evaluate-run", "ML1-push-v3", "maml-seed0"],
                                                ["--evaluate-run", "ML1-push-v3", "metasgd-seed0"]]
    for command, env in calls:
        assert command[0] == sys.executable and Path(command[1]) == SCRIPT
        assert command[2:-3] == args.argv and "--eval-tasks" in command  # the parent's options, as given
        assert env["OMP_NUM_THREADS"] == "1"

    calls.clear()
    assert study.evaluate_runs(_finished_push_runs(study, tmp_path / "one", "--jobs", "1")) == []
    assert calls == []  # one job at a time: the report evaluates in its own process


def test_a_failed_evaluation_child_names_its_run_and_the_cause(study, tmp_path, monkeypatch):
    args = _finished_push_runs(study, tmp_path)
    monkeypatch.setattr(study.subprocess, "run", lambda command, **kw: subprocess.CompletedProcess(
        command, 1, stdout="", stderr="Traceback (most recent call last):\nValueError: not a checkpoint\n"))
    failures = study.evaluate_runs(args)
    assert sorted(failures) == [
        "evaluating ML1-push-v3 maml-seed0 failed (exit 1): ValueError: not a checkpoint",
        "evaluating ML1-push-v3 metasgd-seed0 failed (exit 1): ValueError: not a checkpoint"]


def test_metaworld_study_trains_evaluates_reuses_and_matches_evaluate_adaptation(tmp_path):
    pytest.importorskip("metaworld", reason="the metaworld extra is not installed")
    import metasgd_rl as msr
    from metasgd_rl.report import load_checkpoint

    out, published = tmp_path / "study", tmp_path / "published"
    first = _script(*TINY, "--out", str(out), "--report-dir", str(published), "--publish")
    assert "ML10 metasgd-seed0: trained to 1 iterations" in first.stdout
    assert "ML10 maml-seed0: trained to 1 iterations" in first.stdout
    results = json.loads((published / "results.json").read_text())
    summary = results["summary"]["ML10"]
    assert set(summary["success_percent"]["methods"]) == {"metasgd", "maml"}
    assert summary["success_percent"]["welch_vs_maml"] == {}  # one seed each: no test
    assert set(summary["protocol"]) == {"Meta-SGD", "MAML"}
    assert len(summary["protocol"]["MAML"]["classes"]) == 5  # ML10's five test classes
    wall = results["wall_clock"]["ML10"]["maml"]["0"]
    assert wall["iterations"] == 1 and set(wall["paper_seconds_ray"]) == {"2", "4", "8", "16"}
    text = (published / "results.md").read_text()
    assert "31.6" in text and "Ray, 16 workers" in text and "How our protocol differs (ML10)" in text
    # Meta-World's protocol beside both papers' ML10 numbers, for both methods; one seed: no interval
    standings = results["standings"]
    assert sorted((r["ours"], r["paper_number"]) for r in standings) == [
        ("MAML", "31.6"), ("MAML", "≈ 35"), ("Meta-SGD", "31.6"), ("Meta-SGD", "≈ 35")]
    for r in standings:
        assert r["step"] == 1 and r["mean"] == 100 * summary["protocol"][r["ours"]]["success"]["mean"]
        assert r["clear"] in (True, None)
    assert "where we stand" in text
    # "in all" counts the evaluations this invocation ran, not only the training
    evaluated = sum(r["seconds"] for by_seed in results["evaluations"]["ML10"].values() for r in by_seed.values())
    # (the two runs' evaluations ran side by side, one child process each)
    assert results["wall"]["total"] >= results["wall"]["train"] + evaluated / 2
    assert first.stdout.count("evaluated ML10") == 2  # the children's lines, passed on
    for method in ("metasgd", "maml"):
        for name in ("final.pt", "config.yaml", "metrics.csv"):
            assert (published / "runs" / "ML10" / f"{method}-seed0" / name).is_file()

    # the same command again: nothing is trained or evaluated again
    again = _script(*TINY, "--out", str(out))
    assert again.stdout.count("reused (1 iterations)") == 2 and again.stdout.count(": cached (") == 2, again.stdout
    assert "evaluated ML10" not in again.stdout

    # the published directory alone gives the same report, from its published evaluations
    _script(*TINY, "--out", str(published), "--evaluate-only")
    assert json.loads((published / "results.json").read_text())["summary"] == results["summary"]
    # ... also without --ml10-iterations (250 by default): the report states what the checkpoints trained
    i = TINY.index("--ml10-iterations")
    _script(*TINY[:i], *TINY[i + 2:], "--out", str(published), "--evaluate-only")
    assert json.loads((published / "results.json").read_text())["summary"]["ML10"]["iterations"] == 1
    assert "1 iterations (≤ " in (published / "results.md").read_text()

    # the report's numbers are those of a direct evaluate_adaptation of the published checkpoint
    model = load_checkpoint(published / "runs" / "ML10" / "metasgd-seed0" / "final.pt")
    direct = msr.evaluate_adaptation(model, n_tasks=2, steps=1, episodes=2, split="test", seed=0)
    record = results["evaluations"]["ML10"]["metasgd"]["0"]
    np.testing.assert_allclose(record["success"], direct.success.mean(0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(record["returns"], direct.returns.mean(0), rtol=0, atol=1e-9)
    cells = summary["success_percent"]["methods"]["metasgd"]
    np.testing.assert_allclose([c[0] for c in cells], 100 * direct.success.mean(0), rtol=0, atol=1e-9)
    assert [t["env_name"] for t in record["tasks"]] == [t["env_name"] for t in direct.tasks]
