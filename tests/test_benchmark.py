"""The benchmark harness: per-stage timings that add up, settings in fresh processes, the CLI. No test here
depends on how fast anything is."""

from __future__ import annotations

import json

import pytest
import torch

from metasgd_rl import MetaSGD
from metasgd_rl.benchmark import STAGES, in_fresh_process, sampling_throughput, stage_table, time_meta_iterations
from metasgd_rl.cli import main

TINY = dict(policy_kwargs=dict(hidden_sizes=(8,)))


def table_rows(markdown: str) -> list[list[str]]:
    """The cells of every line of the markdown tables in ``markdown`` (header and rule included), stripped."""
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in markdown.splitlines()
            if line.startswith("|")]


@pytest.mark.parametrize("outer, alpha_optimizer, stages", [
    ("trpo", "adam", {"sampling", "adaptation", "objective", "meta_gradient", "conjugate_gradient", "line_search"}),
    ("adam", "adam", {"sampling", "adaptation", "objective", "meta_gradient"}),
    ("ppo", "joint", {"sampling", "adaptation", "objective", "epochs"}),
    # α's own optimiser needs the meta-gradient, which PPO's epochs alone do not compute
    ("ppo", "adam", {"sampling", "adaptation", "objective", "meta_gradient", "epochs"}),
])
def test_every_iteration_logs_its_stages_and_they_fit_in_the_total(outer, alpha_optimizer, stages):
    model = MetaSGD("MultiArmedBandit-v0", meta_batch_size=3, episodes_per_task=2, inner_steps=2, outer=outer,
                    alpha_optimizer=alpha_optimizer, seed=0, **TINY)
    info = model.train_step()
    logged = {k.removeprefix("time/") for k in info if k.startswith("time/")}
    assert logged == stages
    assert all(info[f"time/{s}"] >= 0 for s in stages)
    assert sum(info[f"time/{s}"] for s in stages) <= info["seconds"]
    horizon = model.family.max_episode_steps  # bandit episodes never end early
    assert info["env_steps"] == (2 + 1) * 3 * 2 * horizon


def test_time_meta_iterations_reports_medians_memory_and_throughput():
    row = in_fresh_process(time_meta_iterations, family="Navigation2D-v0", tasks=2, episodes=2, outer="adam",
                           repeats=2, warmup=0, threads=1, **TINY)
    assert (row["tasks"], row["episodes"], row["outer"], row["sampler"], row["threads"]) == (2, 2, "adam", "local", 1)
    assert set(STAGES) & set(row) == {"sampling", "adaptation", "objective", "meta_gradient"}
    assert row["total"] >= row["sampling"] > 0 and row["peak_memory_mb"] > 50
    assert row["sampler_steps_per_s"] == pytest.approx(row["env_steps"] / row["sampling"])
    assert table_rows(stage_table([row]))[2][:4] == ["adam", "local", "2", "2"]


def test_the_arithmetic_floor_is_an_iterations_flops_at_the_matmul_rate():
    # every product of rollouts, adaptation and meta-gradient has the steps of all episodes as its rows (the
    # bandit's episodes never end early), so twice the episodes is exactly twice the FLOPs
    rows = {e: time_meta_iterations(family="MultiArmedBandit-v0", tasks=3, episodes=e, outer="adam", repeats=1,
                                    warmup=0, policy_kwargs=dict(hidden_sizes=(8,)))  # threads: left as they are
            for e in (2, 4)}
    assert rows[4]["gflop"] == pytest.approx(2 * rows[2]["gflop"], rel=1e-6)
    assert rows[2]["peak_gflops"] > 0.1
    assert rows[2]["floor"] == pytest.approx(rows[2]["gflop"] / rows[2]["peak_gflops"])
    assert "floor / total" in stage_table([rows[2]])


def test_counted_flops_match_the_closed_form_of_a_forward_pass():
    from metasgd_rl.benchmark import count_gflop
    from metasgd_rl.policies import make_policy

    family = MetaSGD("Navigation2D-v0", seed=0).family
    policy = make_policy(family.observation_space, family.action_space, hidden_sizes=(100, 100))
    params = policy.task_parameters(4)
    obs = torch.zeros(4, 50, 2)
    gflop = count_gflop(lambda: policy.distribution_params(obs, params))
    assert gflop == pytest.approx(2 * 4 * 50 * (2 * 100 + 100 * 100 + 100 * 2) / 1e9)


def test_settings_with_different_stages_share_one_aligned_table():
    common = dict(sampler="local", tasks=20, episodes=20, task_chunk_size=None, sampling=1.0, adaptation=0.1,
                  objective=0.1, meta_gradient=0.2, gflop=1.0, floor=0.1, sampler_steps_per_s=4e4,
                  peak_memory_mb=400.0)
    trpo = dict(common, outer="trpo", conjugate_gradient=0.3, line_search=0.2, total=2.0)
    adam = dict(common, outer="adam", total=1.5)
    lines = stage_table([trpo, adam]).splitlines()
    separators = {tuple(i for i, c in enumerate(line) if c == "|") for line in lines}
    assert len(lines) == 4 and len(separators) == 1  # every line has its column borders at the same places
    header, _, trpo_cells, adam_cells = table_rows("\n".join(lines))
    assert len(trpo_cells) == len(adam_cells) == len(header)
    assert adam_cells[header.index("conjugate_gradient (s)")] == "–"


def test_medians_are_described_in_plain_words():
    from metasgd_rl.benchmark import _medians

    assert _medians(1, 0) == "1 timed iteration, no warm-up"
    assert _medians(5, 1) == "medians of 5 iterations after 1 warm-up iteration"
    assert _medians(3, 2) == "medians of 3 iterations after 2 warm-up iterations"


def test_sampling_throughput_measures_raw_and_sampler_rates():
    row = sampling_throughput("Navigation2D-v0", tasks=2, episodes=2, repeats=1, horizon=5)
    assert row["horizon"] == 5 and row["raw_steps_per_s"] > 0 and row["local_steps_per_s"] > 0


def test_the_benchmark_command_writes_json_and_markdown(tmp_path, capsys):
    argv = ["benchmark", "--tasks", "2", "--episodes", "2", "--outer", "adam", "--repeats", "1", "--warmup", "0",
            "--threads", "1", "--out", str(tmp_path)]
    assert main(argv) == 0
    data = json.loads((tmp_path / "benchmark.json").read_text())
    assert data["command"] == "metasgd-rl " + " ".join(argv)
    assert [(r["outer"], r["tasks"]) for r in data["stages"]] == [("adam", 2)]
    assert data["machine"]["cpus"] >= 1
    assert table_rows((tmp_path / "benchmark.md").read_text())[2][:5] == ["adam", "local", "2", "2", "–"]
    printed = capsys.readouterr()
    assert "meta_gradient (s)" in printed.out
    # the table once, on stdout; the progress line on stderr; the header in plain words
    assert printed.out.count("| outer") == 1 and printed.out.count("| adam") == 1
    assert printed.err.startswith("[1/1] adam, local sampler, 2 tasks × 2 episodes: ")
    assert "(1 timed iteration, no warm-up)" in printed.out and "medians of 1" not in printed.out


def test_the_benchmark_command_times_chunked_and_unchunked_settings(tmp_path):
    argv = ["benchmark", "--tasks", "3", "--episodes", "2", "--outer", "adam", "--repeats", "1", "--warmup", "0",
            "--threads", "1", "--task-chunk-size", "2", "--out", str(tmp_path)]
    assert main(argv) == 0
    data = json.loads((tmp_path / "benchmark.json").read_text())
    assert [r["task_chunk_size"] for r in data["stages"]] == [2]
    assert table_rows((tmp_path / "benchmark.md").read_text())[2][:5] == ["adam", "local", "3", "2", "2"]


def test_the_benchmark_command_refuses_an_unknown_family(capsys):
    assert main(["benchmark", "--family", "Navigation3D-v0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "family='Navigation3D-v0' is not registered; did you mean 'Navigation2D-v0'" in err
