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
    alpha_figure,
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


def test_a_result_shows_a_short_line_and_a_table_not_its_arrays():
    rng = np.random.default_rng(0)
    result = AdaptationResult(tasks=[{"goal": [0.1 * i, 0.0]} for i in range(40)],
                              episode_returns=rng.normal(-20, 5, (40, 4, 20)), method="Meta-SGD (seed 0)",
                              family="Navigation2D-v0", seed=0)
    mean, ci = result.mean(), result.ci95()
    line = repr(result)
    assert len(line) < 200 and "\n" not in line and "array" not in line
    assert line == ("AdaptationResult(method='Meta-SGD (seed 0)', family='Navigation2D-v0', 40 test tasks, "
                    f"20 episodes, steps 0..3, mean return {' → '.join(f'{m:.2f}' for m in mean)})")
    assert str(result) == line  # print(result) too
    summary = result.summary().splitlines()
    assert summary[0] == "Meta-SGD (seed 0) on Navigation2D-v0: 40 test tasks, 20 episodes per task and step, seed 0"
    assert len(summary) == 1 + 2 + 4 and len(result.summary()) < 500  # title, header and rule, one row per step
    for k in range(4):
        assert [c.strip() for c in summary[3 + k].split("|")[1:3]] == [str(k), f"{mean[k]:.2f} ± {ci[k]:.2f}"]
    markdown = result._repr_markdown_()
    assert markdown.startswith("**Meta-SGD (seed 0) on Navigation2D-v0") and summary[1] in markdown
    # success rates get their own column; a single task has no interval
    success = hand_result([[1.0, 2.0]], success=np.array([[0.0, 1.0]]), episodes=5)
    assert success.summary().splitlines()[1] == "| inner steps | mean return ± 95% CI | success rate ± 95% CI |"
    assert success.summary().splitlines()[-1].endswith("2.00 ± n/a |            1.00 ± n/a |")
    long = hand_result(np.tile(np.arange(8.0), (2, 1)))
    assert "mean return 0.00 → … → 7.00)" in repr(long)


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


def test_the_alpha_plot_chooses_its_axes_from_the_values_and_names_its_lines():
    model = MetaSGD("Navigation2D-v0", policy_kwargs=dict(hidden_sizes=(16,)), alpha_init=0.1)
    alphas = model.step_sizes.alphas
    near_init = np.concatenate([0.1 + 1e-7 * np.arange(24), np.linspace(0.1002, 0.1005, 8)])  # α that hardly moved
    with torch.no_grad():
        alphas["layers__0__weight"].copy_(torch.tensor(near_init.reshape(1, 16, 2)))
        alphas["layers__0__bias"].copy_(torch.tensor(np.geomspace(0.01, 1.0, 16).reshape(1, 16)))  # two decades
        alphas["layers__1__weight"].copy_(torch.tensor(np.linspace(0.8, 0.9, 32).reshape(1, 2, 16)))  # far from 0.1
        alphas["layers__1__bias"].copy_(torch.tensor([[-0.2, 0.3]]))
    fig = alpha_figure(model)
    panels = {ax.get_title().split("\n")[0]: ax for ax in fig.axes if ax.get_visible()}
    assert set(panels) == {"layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias", "log_std"}
    hardly_moved = panels["layers.0.weight"]
    lo, hi = hardly_moved.get_xlim()
    assert 0.0999 < lo < 0.1 and 0.1005 < hi < 0.1006  # around the values and α_init, not from 0
    assert hardly_moved.get_yscale() == "log"  # 24 of 32 entries in one bin: the other 8 stay visible
    assert panels["layers.0.bias"].get_xscale() == "log" and panels["layers.1.weight"].get_xscale() == "linear"
    far = panels["layers.1.weight"]
    assert far.get_xlim()[0] > 0.7 and "α_init = 0.1 is off the axis, to the left" in far.get_xlabel()
    assert [line.get_xdata()[0] for line in panels["layers.1.bias"].get_lines()] == pytest.approx([0.1, 0.0])
    assert [text.get_text() for text in fig.legends[0].get_texts()] == ["α_init = 0.1 (where α started)", "α = 0"]


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


def test_a_report_compares_every_method_with_maml_paired_over_the_shared_tasks(tmp_path):
    from scipy import stats

    rng = np.random.default_rng(0)
    maml = hand_result(rng.normal(-20, 5, (6, 3)), method="MAML")
    better = hand_result(maml.returns + rng.normal(1, 3, (6, 3)), method="Meta-SGD")
    other_tasks = AdaptationResult(tasks=[{"goal": [0.5, 0.5]}] * 6, returns=maml.returns, method="elsewhere")
    shorter = hand_result(maml.returns[:, :2] - 1.0, method="one step")  # K = 1: compared on steps 0 and 1
    results = {"Meta-SGD": better, "MAML (seed 0)": maml, "elsewhere": other_tasks, "one step": shorter}
    path = write_report(tmp_path, results, trajectory_tasks=0)
    text = path.read_text()
    assert "Each method minus MAML (seed 0), paired over the same 6 tasks" in text
    assert "Not paired (evaluated on other tasks than MAML (seed 0)): elsewhere." in text
    comparison = json.loads((tmp_path / "results.json").read_text())["comparison"]
    assert comparison["reference"] == "MAML (seed 0)" and list(comparison["differences"]) == ["Meta-SGD", "one step"]
    for k, entry in enumerate(comparison["differences"]["Meta-SGD"]):
        reference = stats.ttest_rel(better.returns[:, k], maml.returns[:, k])
        low, high = reference.confidence_interval()
        assert entry["p_value"] == pytest.approx(reference.pvalue) and entry["p_value"] > 0.001 and entry["n"] == 6
        assert entry["difference"] - entry["ci95"] == pytest.approx(low)
        assert f"{entry['difference']:+.2f} ± {entry['ci95']:.2f} (p {entry['p_value']:.3f})" in text
    one_step = comparison["differences"]["one step"]
    assert len(one_step) == 2 and one_step[0]["difference"] == pytest.approx(-1.0) and one_step[0]["p_value"] is None
    assert "| one step − MAML (seed 0)" in text and "–" in text.split("| one step − MAML (seed 0)")[1].splitlines()[0]
    # without MAML, the first method is the reference; an explicit reference wins
    write_report(tmp_path / "b", {"Meta-SGD": better, "one step": shorter}, trajectory_tasks=0)
    assert json.loads((tmp_path / "b" / "results.json").read_text())["comparison"]["reference"] == "Meta-SGD"
    write_report(tmp_path / "c", results, trajectory_tasks=0, reference="one step")
    assert "Each method minus one step" in (tmp_path / "c" / "report.md").read_text()
    with pytest.raises(ValueError, match="reference='PPO' is not allowed"):
        write_report(tmp_path / "d", results, reference="PPO")
    # one result: nothing to compare
    write_report(tmp_path / "e", {"MAML": maml}, trajectory_tasks=0)
    assert "comparison" not in json.loads((tmp_path / "e" / "results.json").read_text())


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
