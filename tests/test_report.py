"""Evaluation results (per-episode returns, Student-t CIs, JSON, held-out tasks) and the report folder."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from metasgd_rl import MAML, AdaptationResult, MetaSGD, evaluate_adaptation
from metasgd_rl.config import resolve_config
from metasgd_rl.report import (
    alpha_histogram_range,
    alpha_statistics,
    load_results,
    plot_alpha,
    run_labels,
    trajectories,
    write_report,
)
from metasgd_rl.run import Run
from tests.bandit import ArmsFamily
from tests.tiny_config import TINY

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def tiny_model(cls=MetaSGD, **kwargs) -> MetaSGD:
    return cls("Navigation2D-v0", policy_kwargs=dict(hidden_sizes=(8,)), meta_batch_size=2, episodes_per_task=2,
               **kwargs)


def hand_result(returns, **kwargs) -> AdaptationResult:
    returns = np.asarray(returns, dtype=np.float64)
    return AdaptationResult(tasks=[{"goal": [0.1 * i, 0.0]} for i in range(len(returns))], returns=returns,
                            **kwargs)


def assert_valid_png(path: Path) -> None:
    from matplotlib.image import imread

    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 0 and image.shape[1] > 0, (path, image.shape)


# -- confidence intervals ----------------------------------------------------------------------------------------


def test_ci95_is_the_student_t_interval_over_tasks():
    # step 0: returns 1..5, s = sqrt(2.5), t_{0.975, 4} = 2.7764451051977987 -> 2.776445 * sqrt(2.5) / sqrt(5)
    # step 1: returns 0, 2, 0, 2, 1: s = sqrt(1), half-width 2.776445 / sqrt(5)
    result = hand_result([[1, 0], [2, 2], [3, 0], [4, 2], [5, 1]])
    np.testing.assert_allclose(result.mean(), [3.0, 1.0])
    np.testing.assert_allclose(result.ci95(), [2.7764451051977987 * np.sqrt(0.5), 2.7764451051977987 / np.sqrt(5)],
                               rtol=1e-12)
    # two tasks: t_{0.975, 1} = 12.706204736174698; values 0 and 2 -> s = sqrt(2), half-width 12.7062...
    np.testing.assert_allclose(hand_result([[0.0], [2.0]]).ci95(), [12.706204736174698], rtol=1e-12)
    # wider than the normal approximation for few tasks, NaN for one task
    assert result.ci95()[0] > 1.96 * np.sqrt(2.5) / np.sqrt(5)
    assert np.isnan(hand_result([[1.0, 2.0]]).ci95()).all()


def test_ci95_with_many_tasks_approaches_the_normal_interval():
    values = np.random.default_rng(0).normal(size=(2000, 1))
    result = hand_result(values)
    assert result.ci95()[0] == pytest.approx(1.96 * values.std(ddof=1) / np.sqrt(2000), rel=1e-3)


# -- per-episode returns, seeds, JSON ----------------------------------------------------------------------------


def test_per_episode_returns_and_labels():
    model = tiny_model(seed=0)
    result = evaluate_adaptation(model, n_tasks=3, steps=2, episodes=4, seed=7)
    assert result.episode_returns.shape == (3, 3, 4) and result.returns.shape == (3, 3)
    np.testing.assert_allclose(result.returns, result.episode_returns.mean(axis=2))
    assert (result.steps, result.n_tasks, result.episodes, result.split) == (2, 3, 4, "test")
    assert (result.method, result.seed, result.family) == ("MetaSGD", 7, "Navigation2D-v0")
    assert evaluate_adaptation(tiny_model(MAML), n_tasks=1, steps=0, episodes=1).method == "MAML"
    assert evaluate_adaptation(model, n_tasks=1, steps=0, episodes=1, method="mine").method == "mine"
    with pytest.raises(ValueError, match="returns must be the mean"):
        AdaptationResult(tasks=result.tasks, returns=result.returns + 1, episode_returns=result.episode_returns)


def test_same_seed_same_numbers_and_a_seed_sequence_is_recorded():
    model = tiny_model(seed=0)
    first = evaluate_adaptation(model, n_tasks=2, steps=1, episodes=3, seed=3)
    again = evaluate_adaptation(model, n_tasks=2, steps=1, episodes=3, seed=3)
    assert first.to_dict() == again.to_dict()
    assert np.array_equal(first.episode_returns, again.episode_returns)
    ss = np.random.SeedSequence(5, spawn_key=(1000,))
    from_ss = evaluate_adaptation(model, n_tasks=2, steps=1, episodes=3, seed=ss)
    assert from_ss.seed == {"entropy": 5, "spawn_key": [1000]}
    from metasgd_rl.evaluation import seed_from_json

    replay = evaluate_adaptation(model, n_tasks=2, steps=1, episodes=3, seed=seed_from_json(from_ss.seed))
    assert np.array_equal(replay.episode_returns, from_ss.episode_returns)


def test_json_round_trip(tmp_path):
    result = evaluate_adaptation(tiny_model(seed=1), n_tasks=2, steps=1, episodes=2, seed=2, method="Meta-SGD")
    path = result.save(tmp_path / "sub" / "result.json")
    text = path.read_text()
    data = json.loads(text)  # strict JSON: no NaN
    assert {"tasks", "returns", "episode_returns", "episodes", "split", "seed", "method", "family"} <= set(data)
    assert data["method"] == "Meta-SGD" and data["family"] == "Navigation2D-v0" and data["seed"] == 2
    for back in (AdaptationResult.load(path), AdaptationResult.from_dict(data)):
        assert back.to_dict() == result.to_dict()
        assert np.array_equal(back.episode_returns, result.episode_returns)
        assert np.array_equal(back.returns, result.returns) and back.tasks == result.tasks
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["result.json"]  # no temporary file left
    # one task: the CI is NaN, written as null and read back as NaN; a result built from returns only
    single = hand_result([[1.0, 2.0]], episodes=5, method="PPO", seed=0)
    data = json.loads(single.to_json())
    assert data["ci95"] == [None, None] and data["episode_returns"] is None
    back = AdaptationResult.from_dict(data)
    assert back.episode_returns is None and np.array_equal(back.returns, single.returns)
    assert np.isnan(back.ci95()).all()


# -- held-out tasks ---------------------------------------------------------------------------------------------


def test_the_default_split_only_uses_held_out_arms():
    family = ArmsFamily(arms=5)  # arm 4 is held out
    model = MetaSGD(family, policy_kwargs=dict(hidden_sizes=()), meta_batch_size=4, episodes_per_task=2)
    train_arms = {t["best"] for i in range(20) for t in model.sample_train_tasks(i)}
    assert train_arms <= {0, 1, 2, 3}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a family with disjoint splits: no warning
        result = evaluate_adaptation(model, n_tasks=12, steps=1, episodes=2, seed=0)
    assert {t["best"] for t in result.tasks} == {4} and result.split == "test"
    explicit = evaluate_adaptation(model, n_tasks=12, steps=0, episodes=1, split="train", seed=0)
    assert {t["best"] for t in explicit.tasks} <= train_arms and explicit.split == "train"


def test_navigation_test_tasks_are_never_the_models_training_tasks():
    model = tiny_model(seed=0)
    train_goals = {tuple(t["goal"]) for i in range(50) for t in model.sample_train_tasks(i)}
    for seed in (0, 1, model.seed):
        result = evaluate_adaptation(model, n_tasks=20, steps=0, episodes=1, seed=seed)
        assert not {tuple(t["goal"]) for t in result.tasks} & train_goals


def test_a_family_that_cannot_hold_tasks_out_warns():
    class SharedArms(ArmsFamily):
        disjoint_splits = False

    model = MetaSGD(SharedArms(), policy_kwargs=dict(hidden_sizes=()), meta_batch_size=2, episodes_per_task=2)
    with pytest.warns(UserWarning, match="training distribution"):
        evaluate_adaptation(model, n_tasks=2, steps=0, episodes=1)


# -- α statistics -----------------------------------------------------------------------------------------------


def test_alpha_statistics_of_known_values():
    model = tiny_model(alpha_init=0.1)
    with torch.no_grad():
        alpha = model.step_sizes.alphas["layers__1__bias"]  # [1, 2]
        alpha.copy_(torch.tensor([[-0.3, 0.5]]))
    stats = {s["tensor"]: s for s in alpha_statistics(model)}
    bias = stats["layers.1.bias"]
    assert bias["size"] == 2 and bias["negative"] == 0.5
    assert bias["mean"] == pytest.approx(0.1) and bias["mean_abs_change"] == pytest.approx(0.4)
    assert stats["layers.0.weight"]["negative"] == 0.0 and stats["layers.0.weight"]["mean_abs_change"] == 0.0
    maml = {s["tensor"]: s for s in alpha_statistics(tiny_model(MAML))}
    assert list(maml) == ["all"] and maml["all"]["size"] == 1


def test_the_alpha_histogram_range_widens_around_alpha_that_all_sit_at_one_value(tmp_path):
    at_init = np.full((1, 16), np.float32(0.1), dtype=np.float64)  # α untouched since α_init, as stored
    (lo, hi), bins, note = alpha_histogram_range(at_init)
    assert lo < 0.1 < hi and hi - lo == pytest.approx(0.01) and (lo + hi) / 2 == pytest.approx(0.1)
    assert note == "all α = 0.1" and bins % 2 == 1  # one narrow bar, centred
    assert np.histogram(at_init, bins=bins, range=(lo, hi))[0][bins // 2] == 16
    (lo, hi), bins, note = alpha_histogram_range(0.1 + np.array([[0.0, 1e-9, -1e-9]]))  # rounding only
    assert lo < 0.1 < hi and note == "all α ≈ 0.1"
    (lo, hi), _, note = alpha_histogram_range(np.zeros((2, 3)))
    assert lo < 0 < hi and note == "all α = 0"
    spread = np.linspace(-0.2, 0.3, 100).reshape(1, -1)
    assert alpha_histogram_range(spread) == ((-0.2, 0.3), 25, None)
    assert alpha_histogram_range(spread, max_bins=10)[1] == 10
    assert_valid_png(plot_alpha(tiny_model(alpha_init=0.1), tmp_path / "alpha.png"))  # every tensor at α_init


# -- the report -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Run:
    torch.set_num_threads(1)
    directory = tmp_path_factory.mktemp("runs") / "tiny-metasgd"
    run = Run.create(resolve_config({**TINY, "iterations": 2, "eval_every": 1, "run_dir": str(directory)}))
    run.train()
    return run


def referenced_pngs(report: Path) -> list[Path]:
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report.read_text())
    return [report.parent / link for link in links]


def test_a_report_from_a_tiny_run(tmp_path, tiny_run):
    model = tiny_run.model
    results = {"tiny-metasgd": evaluate_adaptation(model, n_tasks=3, steps=2, episodes=2, seed=0,
                                                   method="tiny-metasgd")}
    out = tmp_path / "report"
    path = write_report(out, results, runs={"tiny-metasgd": tiny_run.directory}, models={"tiny-metasgd": model},
                        command="metasgd-rl evaluate x --report report")
    assert path == out / "report.md"
    text = path.read_text()
    assert "metasgd-rl evaluate x --report report" in text
    assert "| method | before adaptation | after 1 step | after 2 steps |" in text
    mean, ci = results["tiny-metasgd"].mean(), results["tiny-metasgd"].ci95()
    assert f"| tiny-metasgd | {mean[0]:.2f} ± {ci[0]:.2f} | {mean[1]:.2f} ± {ci[1]:.2f}" in text
    assert "mean \\|α − α_init\\|" in text and "layers.0.weight" in text
    pngs = referenced_pngs(path)
    assert {p.name for p in pngs} == {"adaptation.png", "learning_curves.png", "alpha-tiny-metasgd.png",
                                      "trajectories-tiny-metasgd.png"}
    for png in pngs:
        assert_valid_png(png)
    assert load_results(out / "results.json")["tiny-metasgd"].to_dict() == results["tiny-metasgd"].to_dict()
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_a_report_with_a_baseline_computed_elsewhere_and_a_maml_model(tmp_path, tiny_run):
    maml = tiny_model(MAML)
    meta = evaluate_adaptation(tiny_run.model, n_tasks=2, steps=1, episodes=2, method="Meta-SGD")
    results = {"Meta-SGD": meta,
               "MAML": evaluate_adaptation(maml, steps=1, episodes=2, tasks=meta.tasks, method="MAML"),
               "PPO from scratch": AdaptationResult(tasks=meta.tasks, returns=meta.returns - 1.0, episodes=2,
                                                    method="PPO")}
    path = write_report(tmp_path, results, models={"MAML": maml}, trajectory_tasks=0,
                        notes="## Tables\n\n| PPO budget | 2,000 |")
    text = path.read_text()
    assert "| PPO from scratch |" in text and "the same tasks for every method" in text
    assert text.rstrip().endswith("## Tables\n\n| PPO budget | 2,000 |")
    assert "α is fixed, not learned" in text and "alpha-" not in text  # MAML: said, not plotted
    assert "## Meta-training" not in text and "## Trajectories" not in text
    for png in referenced_pngs(path):
        assert_valid_png(png)


def test_trajectories_are_the_masked_positions_from_the_start():
    model = tiny_model(seed=0)
    before, after = trajectories(model, [{"goal": [0.3, -0.2]}], steps=1, episodes=2, seed=0)
    assert len(before) == len(after) == 1 and len(before[0]) == 2
    for xy in before[0] + after[0]:
        assert xy.shape[1] == 2 and 1 <= len(xy) <= 100
        assert np.array_equal(xy[0], [0.0, 0.0])  # Navigation2D starts at the origin
        assert np.abs(np.diff(xy, axis=0)).max() <= 0.1 + 1e-6  # moves of at most 0.1 per coordinate


def test_runs_are_labelled_by_method_and_seed_and_the_directory_where_both_coincide():
    a, b, c = tiny_model(seed=0), tiny_model(seed=0), tiny_model(MAML, seed=1)
    assert run_labels(["runs/x", "runs/y"], [a, c]) == ["Meta-SGD (seed 0)", "MAML (seed 1)"]
    assert run_labels(["runs/x", "runs/y", "runs/z"], [a, b, c]) == \
        ["Meta-SGD (seed 0, x)", "Meta-SGD (seed 0, y)", "MAML (seed 1)"]
    assert run_labels(["a/run", "b/run"], [a, b]) == ["Meta-SGD (seed 0, a/run)", "Meta-SGD (seed 0, b/run)"]
    with pytest.raises(ValueError, match="not allowed twice"):
        run_labels(["runs/x", "runs/x"], [a, b])
