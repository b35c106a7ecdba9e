"""The metasgd-rl command: config validation (exit 2, one line, nothing written), a smoke run, help, configs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from metasgd_rl.cli import main
from metasgd_rl.config import ConfigError, load_config, read_yaml_file, resolve_config
from metasgd_rl.run import Run
from tests.tiny_config import TINY, load_state, metrics_rows, write_config

CONSOLE_SCRIPT = Path(sys.executable).parent / "metasgd-rl"
CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


# -- bad configs ---------------------------------------------------------------------------------------------

# (how the bad value is given, the change, strings the one-line message must contain)
BAD = [
    ("file", dict(gama=0.9), ["'gama'", "0.9", "did you mean 'gamma'"]),
    ("file", dict(meta_batch_size="two"), ["meta_batch_size='two'", "integer"]),
    ("file", dict(iterations=True), ["iterations=True", "integer >= 1"]),
    ("file", dict(gamma=1.5), ["gamma=1.5", "[0, 1]"]),
    ("file", dict(estimator="foo"), ["estimator='foo'", "'lvc'", "'dice'"]),
    ("file", dict(outer="sgd"), ["outer='sgd'", "'trpo'", "'adam'"]),
    ("file", dict(family="Navigation3D-v0"), ["family='Navigation3D-v0'", "Navigation2D-v0"]),
    ("file", dict(outer_kwargs=dict(lr=-0.1)), ["outer_kwargs.lr=-0.1", "positive"]),
    ("file", dict(outer_kwargs=dict(max_kl=0.01)), ["'outer_kwargs.max_kl'", "0.01", "lr, max_grad_norm"]),
    ("file", dict(policy_kwargs=dict(hidden_sizes=[0])), ["policy_kwargs.hidden_sizes=[0]", "integers >= 1"]),
    ("set", "gamma=1.5", ["gamma=1.5", "[0, 1]"]),
    ("set", "outer=trpo", ["'outer_kwargs.lr'", "0.01", "max_kl"]),  # Adam's kwargs do not fit TRPO
    ("set", "outer_kwargs.lr=abc", ["outer_kwargs.lr='abc'", "number"]),
    ("set", "checkpoint_every=0", ["checkpoint_every=0", "integer >= 1"]),
    ("set", "seed=-3", ["seed=-3", "integer >= 0"]),
    ("set", "nosuchkey", ["'nosuchkey'", "KEY=VALUE"]),
]


@pytest.mark.parametrize("how, change, expected", BAD, ids=[str(c) for _, c, _ in BAD])
def test_a_bad_config_exits_2_with_one_line_naming_key_and_value_and_writes_nothing(
        tmp_path, monkeypatch, capsys, how, change, expected):
    monkeypatch.chdir(tmp_path)
    config = write_config(tmp_path / "bad.yaml", **(change if how == "file" else {}))
    argv = ["train", str(config)] + (["--set", change] if how == "set" else [])
    before = files_under(tmp_path)
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith("metasgd-rl: error: ")
    for part in expected:
        assert part in err, (part, err)
    assert files_under(tmp_path) == before  # no run directory, no file


def test_a_key_given_twice_in_a_config_file_is_refused(tmp_path, capsys):
    nested = tmp_path / "nested.yaml"
    nested.write_text("policy_kwargs:\n  hidden_sizes: [8]\n  hidden_sizes: [9]\n")
    with pytest.raises(ConfigError, match=r"key 'hidden_sizes' is given twice \(line 2 and line 3\)"):
        read_yaml_file(nested)
    config = write_config(tmp_path / "twice.yaml")
    config.write_text(config.read_text() + "seed: 7\n")  # TINY has seed: 0 already
    assert main(["train", str(config), "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "key 'seed' is given twice" in err and not (tmp_path / "run").exists()
    assert read_yaml_file(write_config(tmp_path / "once.yaml"))["seed"] == 0  # each key once: read as before
    merged = tmp_path / "merge.yaml"  # YAML merge keys are not duplicates
    merged.write_text("base: &b {lr: 0.1}\nouter_kwargs:\n  <<: *b\n  max_grad_norm: 1.0\n")
    assert read_yaml_file(merged)["outer_kwargs"] == {"lr": 0.1, "max_grad_norm": 1.0}


def test_the_console_script_exits_2_on_a_bad_config(tmp_path):
    config = write_config(tmp_path / "bad.yaml")
    proc = subprocess.run([str(CONSOLE_SCRIPT), "train", str(config), "--set", "estimator=foo"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "metasgd-rl: error: estimator='foo' is not allowed; use one of ['maml', 'lvc', 'dice']"]
    assert files_under(tmp_path) == {"bad.yaml"}


def test_a_missing_config_file_is_named(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "nope.yaml"]) == 2
    assert "'nope.yaml'" in capsys.readouterr().err
    assert files_under(tmp_path) == set()


def test_set_reaches_nested_keys_and_reads_exponent_floats(tmp_path):
    config = write_config(tmp_path / "c.yaml", outer="trpo", outer_kwargs=None)
    resolved = load_config(config, ["outer_kwargs.cg_damping=1e-4", "policy_kwargs.hidden_sizes=[8, 8]",
                                    "family_kwargs.max_episode_steps=20"], run_dir=str(tmp_path / "r"))
    assert resolved["outer_kwargs"]["cg_damping"] == 1e-4 and resolved["outer_kwargs"]["max_kl"] == 0.01
    assert resolved["policy_kwargs"]["hidden_sizes"] == [8, 8] and resolved["policy_kwargs"]["activation"] == "relu"
    assert resolved["family_kwargs"] == {"max_episode_steps": 20}
    with pytest.raises(ConfigError, match=r"alpha_granularity='element' is not allowed with algo 'maml'"):
        resolve_config({**TINY, "algo": "maml", "alpha_granularity": "element"})
    assert not (tmp_path / "r").exists()


# -- shipped configs -----------------------------------------------------------------------------------------


def test_the_shipped_configs_validate(tmp_path):
    paths = sorted(CONFIGS.glob("*.yaml"))
    assert {p.name for p in paths} >= {"navigation2d-metasgd.yaml", "navigation2d-maml.yaml",
                                       "navigation2d-randomstart-metasgd.yaml"}
    for path in paths:
        raw = read_yaml_file(path)
        config = load_config(path, run_dir=str(tmp_path / path.stem))
        assert all(config[k] == v for k, v in raw.items() if not isinstance(v, dict)), path
    assert list(tmp_path.iterdir()) == []  # validating writes nothing


@pytest.mark.parametrize("name, algo", [("navigation2d-metasgd", "metasgd"), ("navigation2d-maml", "maml")])
def test_the_navigation_configs_follow_the_maml_metasgd_protocol(tmp_path, name, algo):
    config = load_config(CONFIGS / f"{name}.yaml", run_dir=str(tmp_path / "r"))
    assert config["algo"] == algo and config["family"] == "Navigation2D-v0"
    assert (config["meta_batch_size"], config["episodes_per_task"], config["inner_steps"]) == (20, 20, 1)
    assert config["alpha_init"] == 0.1 and config["iterations"] == 500
    assert config["policy_kwargs"]["hidden_sizes"] == [100, 100] and config["policy_kwargs"]["activation"] == "relu"
    assert config["outer"] == "trpo"
    assert {k: config["outer_kwargs"][k] for k in ("max_kl", "cg_iters", "cg_damping", "ls_steps", "ls_ratio")} == \
        dict(max_kl=0.01, cg_iters=10, cg_damping=1e-5, ls_steps=15, ls_ratio=0.8)
    assert (config["gamma"], config["gae_lambda"], config["baseline"]) == (0.99, 1.0, "linear")
    assert (config["checkpoint_every"], config["eval_every"]) == (50, 50)
    if algo == "metasgd":
        assert config["alpha_granularity"] == "element" and config["learn_alpha"] is True


# -- smoke run ------------------------------------------------------------------------------------------------


def test_cli_smoke_train_then_evaluate(tmp_path):
    config = write_config(tmp_path / "tiny.yaml", eval_every=0)
    proc = subprocess.run([str(CONSOLE_SCRIPT), "train", str(config), "--set", "iterations=3"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert re.fullmatch(r"tiny-\d{8}-\d{6}", run_dir.name)
    names = {p.name for p in run_dir.iterdir()}
    assert {"config.yaml", "metrics.csv", "tasks.jsonl", "checkpoint.pt", "final.pt"} <= names
    assert any(n.startswith("events.out.tfevents.") for n in names)
    assert [r["iteration"] for r in metrics_rows(run_dir)] == ["1", "2", "3"]
    assert len((run_dir / "tasks.jsonl").read_text().splitlines()) == 3
    assert load_state(run_dir / "final.pt")["iteration"] == 3
    assert read_yaml_file(run_dir / "config.yaml")["iterations"] == 3

    proc = subprocess.run([sys.executable, "-m", "metasgd_rl", "evaluate", str(run_dir / "final.pt"),
                           "--tasks", "3", "--steps", "2"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = re.findall(r"^\s*(\d+) \|\s+(-?\d+\.\d+) ± (\d+\.\d+)$", proc.stdout, flags=re.M)
    assert [int(step) for step, _, _ in rows] == [0, 1, 2], proc.stdout
    assert "step | mean return ± 95% CI" in proc.stdout


def test_evaluate_names_a_file_that_is_not_a_checkpoint(tmp_path, capsys):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    assert main(["evaluate", str(tmp_path / "junk.pt")]) == 2
    assert "junk.pt" in capsys.readouterr().err


class _Payload:
    def __reduce__(self):
        return (print, ("unpickled",))


def test_unreadable_checkpoints_are_refused_with_one_line_and_no_unsafe_advice(tmp_path, capsys):
    """Empty, short text and pickle-payload files, a NaN model: exit 2, one line naming the file and the reason."""
    from metasgd_rl.model import CheckpointError, MetaSGD

    model = MetaSGD(family="Navigation2D-v0", policy_kwargs=dict(hidden_sizes=(4,)), meta_batch_size=2,
                    episodes_per_task=2, seed=0)
    model.save(tmp_path / "good.pt")
    state = torch.load(tmp_path / "good.pt", weights_only=True)
    state["policy"]["layers.0.weight"][0, 0] = float("nan")
    torch.save(state, tmp_path / "nan.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "text.pt").write_text("hello\n")
    torch.save({"x": _Payload()}, tmp_path / "pickle.pt")
    cases = {"empty.pt": "it is empty", "text.pt": "torch cannot read its 6 bytes",
             "pickle.pt": "never unpickles", "nan.pt": "non-finite values (NaN or inf) in layers.0.weight"}
    for name, reason in cases.items():
        with pytest.raises(CheckpointError, match=re.escape(reason)):
            MetaSGD.load(tmp_path / name)
        assert main(["evaluate", str(tmp_path / name)]) == 2
        out, err = capsys.readouterr()
        assert err.count("\n") == 1 and name in err and reason in err, err
        assert "weights_only" not in err and "unpickled" not in out
    MetaSGD.load(tmp_path / "good.pt")  # the intact file still loads


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_a_ray_rollout_failure_is_one_line_and_exit_1(monkeypatch, tmp_path, capsys, command):
    from metasgd_rl import cli
    from metasgd_rl.ray_sampler import RolloutWorkerError

    def fail(args):
        raise RolloutWorkerError("rollout actor 1 died 3 times")

    monkeypatch.setattr(cli, f"_{command}", fail)
    assert main([command, str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "rollouts on Ray failed: rollout actor 1 died 3 times" in err
    assert ("--resume" in err) == (command == "train")


def test_families_lists_the_builtin_families(capsys):
    assert main(["families"]) == 0
    lines = capsys.readouterr().out.splitlines()
    ids = [line.split()[0] for line in lines]
    assert {"Navigation2D-v0", "Navigation2D-RandomStart-v0"} <= set(ids)
    assert all(len(line.split(maxsplit=1)) == 2 for line in lines)  # id and a summary


# -- evaluate --report, compare --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """A finished tiny Meta-SGD run and an unfinished tiny MAML run (checkpoint.pt only)."""
    root = tmp_path_factory.mktemp("runs")
    Run.create(resolve_config({**TINY, "iterations": 2, "eval_every": 1, "run_dir": str(root / "metasgd")})).train()
    Run.create(resolve_config({**TINY, "algo": "maml", "iterations": 1, "run_dir": str(root / "maml")})).train()
    (root / "maml" / "final.pt").unlink()  # as if still training: compare falls back to checkpoint.pt
    return root / "metasgd", root / "maml"


def referenced_files(report: Path) -> list[Path]:
    return [report.parent / link for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report.read_text())]


def test_compare_evaluates_every_run_on_the_same_tasks(tmp_path, two_runs, capsys):
    out = tmp_path / "cmp"
    argv = ["compare", *map(str, two_runs), "--out", str(out), "--tasks", "3", "--steps", "1", "--episodes", "2",
            "--seed", "5"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"report written to {out / 'report.md'}" in printed
    data = json.loads((out / "results.json").read_text())
    results = data["results"]
    metasgd, maml = "Meta-SGD (seed 0)", "MAML (seed 0)"
    # the difference from MAML (listed second, still the reference), paired over the 3 tasks, per step
    assert "Difference from MAML (seed 0), paired over the 3 tasks" in printed
    comparison = data["comparison"]
    assert comparison["reference"] == maml and list(comparison["differences"]) == [metasgd]
    for k, entry in enumerate(comparison["differences"][metasgd]):
        a, b = (np.array(results[name]["returns"])[:, k] for name in (metasgd, maml))
        assert entry["step"] == k and entry["n"] == 3
        assert entry["difference"] == pytest.approx(np.mean(a - b))
        assert entry["p_value"] == pytest.approx(stats.ttest_rel(a, b).pvalue)
        cell = f"{entry['difference']:+.2f} ± {entry['ci95']:.2f}"
        row = next(line for line in printed.splitlines() if line.startswith(f"| {metasgd} − {maml}"))
        assert cell in row and cell in (out / "report.md").read_text()
    assert len(comparison["differences"][metasgd]) == 2  # before adaptation and after 1 step
    assert list(results) == [metasgd, maml]  # labelled by method and seed, not by directory name
    assert results[metasgd]["tasks"] == results[maml]["tasks"] and len(results[maml]["tasks"]) == 3
    assert results[metasgd]["seed"] == results[maml]["seed"] == 5
    assert [r["method"] for r in results.values()] == [metasgd, maml]
    assert results[maml]["family"] == "Navigation2D-v0"
    assert len(results[maml]["episode_returns"][0][0]) == 2
    text = (out / "report.md").read_text()
    assert "metasgd-rl compare " + " ".join(map(str, two_runs)) in text and "| MAML (seed 0) |" in text
    names = {p.name for p in referenced_files(out / "report.md")}
    assert names == {"adaptation.png", "learning_curves.png", "alpha-Meta-SGD-seed-0.png",
                     "trajectories-Meta-SGD-seed-0.png", "trajectories-MAML-seed-0.png"}
    for png in referenced_files(out / "report.md"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_refuses_runs_of_different_families(tmp_path, two_runs, capsys):
    other = Run.create(resolve_config({**TINY, "family": "Navigation2D-RandomStart-v0",
                                       "run_dir": str(tmp_path / "random-start")}))
    other.save_checkpoint()
    assert main(["compare", str(two_runs[0]), str(other.directory), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("metasgd-rl: error: RUN_DIR=")
    assert "Navigation2D-RandomStart-v0" in err and "Navigation2D-v0" in err and "one task family" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", ["missing", "no checkpoint", "out is a file"])
def test_compare_refuses_bad_input_with_one_line(tmp_path, two_runs, capsys, case):
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("x")
    run, out, expected = {
        "missing": (tmp_path / "nope", tmp_path / "out", "no such directory"),
        "no checkpoint": (tmp_path / "empty", tmp_path / "out", "no final.pt or checkpoint.pt"),
        "out is a file": (two_runs[0], tmp_path / "file", "--out"),
    }[case]
    assert main(["compare", str(run), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("metasgd-rl: error: ") and expected in err, err


def test_evaluate_writes_json_and_a_report(tmp_path, two_runs, capsys):
    checkpoint = two_runs[0] / "final.pt"
    argv = ["evaluate", str(checkpoint), "--tasks", "2", "--steps", "1", "--episodes", "2",
            "--json", str(tmp_path / "r.json"), "--report", str(tmp_path / "rep")]
    assert main(argv) == 0
    saved = json.loads((tmp_path / "r.json").read_text())
    seed = read_yaml_file(two_runs[0] / "config.yaml")["seed"]
    label = f"Meta-SGD (seed {seed})"  # method and seed, as compare labels runs (not the directory name)
    assert saved["method"] == label and len(saved["tasks"]) == 2 and saved["split"] == "test"
    report = tmp_path / "rep" / "report.md"
    assert f"| {label} |" in report.read_text()
    assert {p.name for p in referenced_files(report)} >= {"adaptation.png", "learning_curves.png"}
    assert all(p.is_file() and p.stat().st_size > 0 for p in referenced_files(report))


@pytest.mark.parametrize("command", [[], ["train"], ["evaluate"], ["compare"], ["families"]])
def test_help_everywhere(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: metasgd-rl {' '.join(command)}".rstrip())
