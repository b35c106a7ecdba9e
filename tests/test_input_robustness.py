"""Issue 14: what a user feeds the loaders and the CLI ends in one clear line, never a traceback or a silent wrong
result: module imports named by checkpoint files, checkpoints whose config does not match their tensors, run
directories that cannot be used, settings whose memory cannot fit."""

from __future__ import annotations

import io
import json
import os
import re
import sys
from pathlib import Path

import pytest
import torch

from metasgd_rl.cli import main
from metasgd_rl.config import ConfigError, load_config, resolve_config
from metasgd_rl.memory import MemoryCheckError, available_memory, check_memory, estimate_memory
from metasgd_rl.model import CheckpointError, EnvImportError, MetaSGD, checkpoint_digest
from metasgd_rl.run import Run, RunError
from tests.tiny_config import TINY, write_config

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
CARTPOLE = {"length": {"uniform": [0.4, 0.6]}}


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("metasgd-rl: error: ") and err.count("\n") == 1, err
    return err


# -- point 1: a file does not get to import a module -----------------------------------------------------------


@pytest.fixture
def sentinel_module(tmp_path, monkeypatch):
    """A module on sys.path that records its import in a file; returns (module name, marker path)."""
    name = f"sentinel_env_{os.getpid()}_{tmp_path.name}".replace("-", "_")
    marker = tmp_path / "imported"
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / f"{name}.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))
    yield name, marker
    sys.modules.pop(name, None)


def set_env_id(path: Path, env_id: str) -> None:
    """Rewrite the family's env_id inside a saved checkpoint."""
    state = torch.load(path, weights_only=True)
    config = json.loads(state["config"])
    config["family_kwargs"]["env_id"] = env_id
    state["config"] = json.dumps(config)
    state["digest"] = checkpoint_digest(state)  # as a model trained on that env_id would have saved it
    torch.save(state, path)


def cartpole_model() -> MetaSGD:
    return MetaSGD("GymEnv-v0", family_kwargs=dict(env_id="CartPole-v1", parameters=CARTPOLE, max_episode_steps=5),
                   policy_kwargs=dict(hidden_sizes=(4,)), meta_batch_size=1, episodes_per_task=1, outer="adam")


def test_a_checkpoint_naming_a_module_env_id_is_refused_unless_allowed(tmp_path, sentinel_module, capsys):
    name, marker = sentinel_module
    path = cartpole_model().save(tmp_path / "m.pt")
    set_env_id(path, f"{name}:CartPole-v1")
    with pytest.raises(EnvImportError, match=rf"env_id='{name}:CartPole-v1'.*import the Python module '{name}'"
                                             r".*--allow-env-imports \(Python: allow_env_imports=True\)"):
        MetaSGD.load(path)
    assert main(["evaluate", str(path), "--tasks", "1", "--steps", "0"]) == 2
    err = one_error_line(capsys)
    assert f"'{name}:CartPole-v1'" in err and "--allow-env-imports" in err
    assert not marker.exists() and name not in sys.modules  # nothing was imported
    model = MetaSGD.load(path, allow_env_imports=True)  # the opt-in does what it says
    assert marker.exists() and model.family.make_kwargs["env_id"] == f"{name}:CartPole-v1"


def test_resuming_a_run_whose_config_names_a_module_env_id_needs_the_flag(tmp_path, sentinel_module, capsys):
    name, marker = sentinel_module
    config = {**TINY, "family": "GymEnv-v0", "iterations": 1, "eval_every": 0, "meta_batch_size": 1,
              "episodes_per_task": 1, "policy_kwargs": dict(hidden_sizes=[4]),
              "family_kwargs": dict(env_id="CartPole-v1", parameters=CARTPOLE, max_episode_steps=5)}
    run_dir = tmp_path / "run"
    Run.create(resolve_config({**config, "run_dir": str(run_dir)}))
    text = (run_dir / "config.yaml").read_text()
    (run_dir / "config.yaml").write_text(text.replace("env_id: CartPole-v1", f"env_id: {name}:CartPole-v1"))
    with pytest.raises(ConfigError, match=rf"--resume .*config.yaml names env_id='{name}:CartPole-v1'"):
        Run.resume(run_dir)
    assert main(["train", "--resume", str(run_dir)]) == 2
    assert "--allow-env-imports" in one_error_line(capsys)
    assert not marker.exists()
    Run.resume(run_dir, allow_env_imports=True)
    assert marker.exists()
    # the user's own config file may name one: train imports it without the flag
    own = tmp_path / "own.yaml"
    own.write_text(json.dumps({**config, "family_kwargs": {**config["family_kwargs"],
                                                           "env_id": f"{name}:CartPole-v1"}}))
    assert load_config(own, run_dir=str(tmp_path / "r2"))["family_kwargs"]["env_id"] == f"{name}:CartPole-v1"


def test_allow_env_imports_is_in_the_help(capsys):
    for command in ("train", "evaluate", "compare"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "--allow-env-imports" in capsys.readouterr().out


# -- point 2: a checkpoint's tensors must have the shapes its config implies -------------------------------------


def test_a_checkpoint_declaring_huge_sizes_is_refused_before_the_model_is_built(tmp_path, monkeypatch, capsys):
    model = MetaSGD("Navigation2D-v0", policy_kwargs=dict(hidden_sizes=(4,)), meta_batch_size=1, episodes_per_task=1)
    path = model.save(tmp_path / "small.pt")
    state = torch.load(path, weights_only=True)
    config = json.loads(state["config"])
    config["policy_kwargs"]["hidden_sizes"] = [20000, 20000]
    state["config"] = json.dumps(config)
    torch.save(state, path)

    def no_build(self, *args, **kwargs):
        raise AssertionError("the model was built before its tensors were checked")

    monkeypatch.setattr(MetaSGD, "__init__", no_build)
    message = (r"small.pt is inconsistent: tensor policy.layers.0.weight has shape \[4, 2\] in the file but the "
               r"checkpoint's config \(family Navigation2D-v0, policy_kwargs.hidden_sizes=\[20000, 20000\]\) implies "
               r"shape \[20000, 2\]; it is not loaded")
    with pytest.raises(CheckpointError, match=message):
        MetaSGD.load(path)
    assert main(["evaluate", str(path)]) == 2
    assert "tensor policy.layers.0.weight has shape [4, 2] in the file" in one_error_line(capsys)


def test_a_checkpoint_with_a_missing_or_extra_tensor_is_refused(tmp_path):
    model = MetaSGD("Navigation2D-v0", policy_kwargs=dict(hidden_sizes=(4,)), meta_batch_size=1, episodes_per_task=1)
    path = model.save(tmp_path / "m.pt")
    state = torch.load(path, weights_only=True)
    del state["step_sizes"]["alphas.layers__1__bias"]
    torch.save(state, tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match=r"tensor step_sizes.alphas.layers__1__bias is missing from the file"):
        MetaSGD.load(tmp_path / "missing.pt")
    state = torch.load(path, weights_only=True)
    state["policy"]["layers.9.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "extra.pt")
    with pytest.raises(CheckpointError, match=r"tensor policy.layers.9.weight is in the file but not in the model"):
        MetaSGD.load(tmp_path / "extra.pt")
    assert MetaSGD.load(path).policy.hidden_sizes == (4,)  # the intact file still loads


@pytest.mark.parametrize("case", ["truncated", "no config", "config not JSON", "directory"])
def test_a_broken_checkpoint_file_is_one_line_naming_what_is_wrong(tmp_path, capsys, case):
    model = MetaSGD("Navigation2D-v0", policy_kwargs=dict(hidden_sizes=(4,)), meta_batch_size=1, episodes_per_task=1)
    path = model.save(tmp_path / "m.pt")
    state = torch.load(path, weights_only=True)
    bad = tmp_path / "bad.pt"
    if case == "truncated":  # torch reads a zip cut near its end as an OSError (EINVAL)
        bad.write_bytes(path.read_bytes()[: path.stat().st_size * 9 // 10])
        expect = "is not a metasgd-rl checkpoint: torch cannot read its"
    elif case == "no config":
        torch.save({k: v for k, v in state.items() if k != "config"}, bad)
        expect = "is not a complete metasgd-rl checkpoint: it has no config"
    elif case == "config not JSON":
        torch.save({**state, "config": "{not json"}, bad)
        expect = "its config is not JSON"
    else:
        bad.mkdir()
        expect = "it is a directory; give a checkpoint file"
    assert main(["evaluate", str(bad), "--tasks", "1", "--episodes", "1", "--steps", "1"]) == 2
    err = one_error_line(capsys)
    assert expect in err and "(CheckpointError" not in err and "[Errno" not in err


# -- checkpoints damaged on disk: a digest, and no NaN or inf anywhere in the state ------------------------------


def trained_tiny_model() -> MetaSGD:
    """One iteration of Adam for θ and α's own Adam, so both optimisers have moments in their state."""
    model = MetaSGD("Navigation2D-v0", policy_kwargs=dict(hidden_sizes=(4,)), meta_batch_size=2, episodes_per_task=2,
                    outer="adam", outer_kwargs=dict(lr=0.01))
    return model.learn(1, progress_bar=False)


def test_each_checkpoint_carries_a_digest_of_every_tensor_and_value():
    state = trained_tiny_model().state_dict()
    assert state["digest"].startswith("sha256:") and checkpoint_digest(state) == state["digest"]
    changes = {
        "a weight's sign": lambda s: s["policy"]["layers.0.weight"].view(-1)[0].neg_(),
        "an α": lambda s: s["step_sizes"]["alphas.layers__0__weight"].view(-1)[0].add_(1e-7),
        "Adam's moment": lambda s: s["outer"]["state"][0]["exp_avg_sq"].view(-1)[0].mul_(2),
        "α's Adam step": lambda s: s["alpha_optimizer"]["state"][0]["step"].add_(1),
        "a learning rate": lambda s: s["outer"]["param_groups"][0].update(lr=0.02),
        "the iteration": lambda s: s.update(iteration=2),
        "the config": lambda s: s.update(config=s["config"].replace('"seed": 0', '"seed": 1')),
        "a dtype": lambda s: s["policy"].update({"log_std": s["policy"]["log_std"].double()}),
    }
    for name, change in changes.items():
        changed = torch.load(_saved(state), weights_only=True)
        change(changed)
        assert checkpoint_digest(changed) != state["digest"], name


def _saved(state: dict) -> io.BytesIO:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return buffer


@pytest.mark.parametrize("bit", [31, 30, 3], ids=["sign", "exponent", "mantissa"])
def test_a_flipped_bit_in_a_tensor_is_refused_by_load_and_evaluate(tmp_path, capsys, bit):
    model = trained_tiny_model()
    path = model.save(tmp_path / "m.pt")
    data = bytearray(path.read_bytes())
    at = data.find(model.policy.state_dict()["layers.0.weight"].numpy().tobytes())
    data[at + bit // 8] ^= 1 << (bit % 8)
    path.write_bytes(bytes(data))
    flipped = torch.load(path, weights_only=True)["policy"]["layers.0.weight"]  # torch's reader notices nothing
    assert not torch.equal(flipped, model.policy.state_dict()["layers.0.weight"])
    message = f"{path} is damaged: its contents do not match the sha256 digest stored with them"
    with pytest.raises(CheckpointError, match=message):
        MetaSGD.load(path)
    assert main(["evaluate", str(path), "--tasks", "1", "--episodes", "1", "--steps", "1"]) == 2
    assert message in one_error_line(capsys)


@pytest.mark.parametrize("part, entry, label", [
    ("outer", "exp_avg_sq", "state.0.exp_avg_sq of the outer optimiser's state"),
    ("alpha_optimizer", "exp_avg", "state.1.exp_avg of α's optimiser's state"),
])
@pytest.mark.parametrize("digest", ["recomputed", "from before digests"])
def test_nan_or_inf_in_an_optimisers_state_is_refused(tmp_path, capsys, part, entry, label, digest):
    state = trained_tiny_model().state_dict()
    index = 0 if part == "outer" else 1
    state[part]["state"][index][entry].view(-1)[0] = float("nan") if part == "outer" else float("inf")
    if digest == "recomputed":  # the digest matches: only the finiteness check can see it
        state["digest"] = checkpoint_digest(state)
    else:
        del state["digest"]
    torch.save(state, tmp_path / "m.pt")
    message = f"holds non-finite values (NaN or inf) in {label}"
    with pytest.raises(CheckpointError, match=re.escape(message)):
        MetaSGD.load(tmp_path / "m.pt")
    assert main(["evaluate", str(tmp_path / "m.pt"), "--tasks", "1", "--episodes", "1", "--steps", "1"]) == 2
    assert message in one_error_line(capsys)


def test_a_checkpoint_from_before_digests_still_loads(tmp_path):
    model = trained_tiny_model()
    state = model.state_dict()
    del state["digest"]
    torch.save(state, tmp_path / "old.pt")
    loaded = MetaSGD.load(tmp_path / "old.pt")
    assert loaded.iteration == 1 and loaded.state_dict()["digest"] == model.state_dict()["digest"]


# -- point 3: run directories ------------------------------------------------------------------------------------


def deny_writes_as_root(monkeypatch, folder: Path) -> None:
    """chmod does not stop root: make os.access answer as it would for a normal user on ``folder``."""
    from tests.test_hostile_inputs import deny_writes

    if os.geteuid() == 0:
        deny_writes(monkeypatch, folder)


@pytest.mark.parametrize("case", ["existing file", "parent is a file", "not writable", "not empty, no run"])
def test_an_unusable_run_dir_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys, case):
    monkeypatch.chdir(tmp_path)
    config = write_config(tmp_path / "c.yaml", iterations=1, eval_every=0)
    (tmp_path / "afile").write_text("x")
    (tmp_path / "locked").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    run_dir, expected = {
        "existing file": ("afile", "run_dir='afile' is not allowed: it is a file; use a new directory path "
                                   "(--run-dir DIR)"),
        "parent is a file": ("afile/run", f"run_dir='afile/run' is not allowed: '{tmp_path / 'afile'}' is a file, "
                                          "not a directory; use a run_dir whose parent is a directory (--run-dir)"),
        "not writable": ("locked/run", f"run_dir='locked/run' is not allowed: '{tmp_path / 'locked'}' is not "
                                       "writable (permission denied); use a run_dir in a writable directory"),
        "not empty, no run": ("other", "run_dir='other' is not allowed: it already exists and is not empty (and "
                                       "holds no run); use a new or empty directory (--run-dir)"),
    }[case]
    os.chmod(tmp_path / "locked", 0o555)
    deny_writes_as_root(monkeypatch, tmp_path / "locked")
    before = files_under(tmp_path)
    try:
        assert main(["train", str(config), "--run-dir", run_dir]) == 2
    finally:
        os.chmod(tmp_path / "locked", 0o755)
    err = one_error_line(capsys)
    assert expected in err and "--resume" not in err, err
    assert files_under(tmp_path) == before


def test_a_failed_write_of_a_new_run_dir_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    import metasgd_rl.run as run_module

    def full(path, text):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(run_module, "atomic_write_text", full)
    config = write_config(tmp_path / "c.yaml", iterations=1, eval_every=0)
    assert main(["train", str(config), "--run-dir", str(tmp_path / "run")]) == 1
    err = one_error_line(capsys)
    assert f"cannot create the run directory {tmp_path / 'run'}: No space left on device" in err
    assert not (tmp_path / "run").exists()


def test_resuming_a_read_only_run_is_one_line(tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "run"
    Run.create(resolve_config({**TINY, "iterations": 1, "eval_every": 0, "run_dir": str(run_dir)}))
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    os.chmod(run_dir, 0o555)
    deny_writes_as_root(monkeypatch, run_dir)
    try:
        assert main(["train", "--resume", str(run_dir)]) == 2
    finally:
        os.chmod(run_dir, 0o755)
    err = one_error_line(capsys)
    assert f"--resume '{run_dir}' is not allowed: the run directory is not writable (permission denied)" in err
    assert f"chmod -R u+w {run_dir}" in err and "copy the run directory to a writable place" in err
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before


def test_a_failed_write_while_resuming_is_one_line_and_exit_1(tmp_path, monkeypatch, capsys):
    from metasgd_rl.run import CsvLog

    run_dir = tmp_path / "run"
    Run.create(resolve_config({**TINY, "iterations": 1, "eval_every": 0, "run_dir": str(run_dir)}))

    def denied(self, iteration):
        raise PermissionError(13, "Permission denied", str(self.path))

    monkeypatch.setattr(CsvLog, "truncate", denied)
    with pytest.raises(RunError, match=r"cannot resume .*: writing .*metrics.csv failed \(Permission denied\)"):
        Run.resume(run_dir)
    assert main(["train", "--resume", str(run_dir)]) == 1
    one_error_line(capsys)


def test_resume_of_a_file_says_it_is_not_a_run_directory(tmp_path, capsys):
    (tmp_path / "final.pt").write_bytes(b"x")
    assert main(["train", "--resume", str(tmp_path / "final.pt")]) == 2
    assert "is a file, not a run directory; give the run directory" in one_error_line(capsys)


# -- point 4: settings whose memory cannot fit ---------------------------------------------------------------------


def test_estimate_memory_follows_its_documented_formula():
    config = resolve_config({**TINY, "run_dir": "unused"})
    estimate = estimate_memory(config)
    # Navigation2D: obs 2, act 2, horizon 100; policy 2-16-2 + log_std: P = 48 + 34 + 2 = 84, element α: A = P
    p, horizon, steps = 84, 100, 1
    t, e, step_numbers = config["meta_batch_size"], config["episodes_per_task"], 2 + 2 + 4
    first_order = {
        "parameters": 4 * (4 * p + 4 * p),
        "adapted": 4 * 2 * steps * t * p,
        "rollouts": 4 * (steps + 1) * horizon * t * e * step_numbers,
        "activations": 4 * horizon * t * e * 16,
        "evaluation": 4 * config["eval_tasks"] * (p + (steps + 1) * horizon * e * step_numbers),
    }
    assert estimate_memory({**config, "first_order": True}).parts == first_order
    # second order (TINY's): two more copies of θ per task, and the inner batches' activations and their gradients
    assert estimate.parts == {**first_order, "adapted": 4 * (2 * steps * t + 2 * t) * p,
                              "activations": 4 * horizon * t * e * 16 * (1 + 2 * steps)}
    training = estimate.parts["adapted"] + estimate.parts["rollouts"] + estimate.parts["activations"]
    assert estimate.total == estimate.parts["parameters"] + max(training, estimate.parts["evaluation"])
    with pytest.raises(MemoryCheckError, match=r"^policy_kwargs.hidden_sizes=\[16\] needs at least 107.8 kB of "
                                               r"memory \(activations 76.8 kB, .*\) but 1.0 kB is available; lower "
                                               r"policy_kwargs.hidden_sizes$"):
        check_memory(config, available=1000)
    assert available_memory() is None or available_memory() > 0


@pytest.mark.parametrize("name", ["navigation2d-metasgd", "navigation2d-maml", "bandit-metasgd",
                                  "tabular-mdp-metasgd", "cartpole-randparams-metasgd"])
def test_the_shipped_configs_need_far_less_than_a_small_machine(tmp_path, name):
    # every shipped config also passes the check in resolve_config (test_cli's test_the_shipped_configs_validate)
    config = load_config(CONFIGS / f"{name}.yaml", run_dir=str(tmp_path / "r"))
    assert estimate_memory(config).total < 2**30


HUGE = [
    (["meta_batch_size=1000000000"], "error: meta_batch_size=1000000000 needs at least 52.5 TB of memory"),
    (["episodes_per_task=1000000000"], "error: episodes_per_task=1000000000 needs at least 51.2 TB of memory"),
    (["eval_every=1", "eval_tasks=1000000000"], "error: eval_tasks=1000000000 needs at least 13.1 TB of memory"),
    (["policy_kwargs.hidden_sizes=[1000000000]"],
     "error: policy_kwargs.hidden_sizes=[1000000000] needs at least 5.1 TB of memory"),
]


@pytest.mark.parametrize("sets, expected", HUGE, ids=[s[-1] for s, _ in HUGE])
def test_a_setting_whose_memory_cannot_fit_is_refused_before_the_run_dir(tmp_path, monkeypatch, capsys, sets,
                                                                          expected):
    monkeypatch.chdir(tmp_path)
    config = write_config(tmp_path / "c.yaml")
    argv = ["train", str(config)] + [a for s in sets for a in ("--set", s)]
    assert main(argv) == 2
    err = one_error_line(capsys)
    assert expected in err and " is available; lower " in err, err
    assert files_under(tmp_path) == {"c.yaml"}


def test_run_create_checks_memory_too(tmp_path):
    config = resolve_config({**TINY, "run_dir": str(tmp_path / "run")})
    with pytest.raises(ConfigError, match=r"meta_batch_size=1000000000.* needs at least .* is available"):
        Run.create({**config, "meta_batch_size": 10**9})
    assert not (tmp_path / "run").exists()


def test_a_folder_left_by_a_kill_during_start_up_takes_the_same_command_again(tmp_path):
    """A SIGKILL while ``train`` writes the new run's config.yaml leaves only the write's temporary file."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / ".config.yaml.k1ll3d.tmp").write_text("algo: meta")
    Run.create(resolve_config({**TINY, "iterations": 1, "run_dir": str(run_dir)})).train()
    assert sorted(p.name for p in run_dir.iterdir() if p.name.startswith(".")) == []
    assert (run_dir / "final.pt").is_file()


def test_a_full_disk_mid_training_is_one_line_and_the_run_resumes_to_the_same_result(tmp_path, monkeypatch, capsys):
    import errno

    import metasgd_rl.run as run_module
    from tests.tiny_config import assert_same_state, load_state, metrics_rows

    config = write_config(tmp_path / "c.yaml", iterations=4, checkpoint_every=1, eval_every=0)
    assert main(["train", str(config), "--run-dir", str(tmp_path / "whole")]) == 0
    real_save, saves = run_module.Run.save_checkpoint, []

    def full_disk_at_the_third(self):
        saves.append(self.model.iteration)
        if len(saves) == 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.checkpoint_path))
        return real_save(self)

    monkeypatch.setattr(run_module.Run, "save_checkpoint", full_disk_at_the_third)
    capsys.readouterr()
    assert main(["train", str(config), "--run-dir", str(tmp_path / "cut")]) == 1
    err = one_error_line(capsys)
    assert "the disk refused writing" in err and "No space left on device" in err and "--resume" in err
    monkeypatch.setattr(run_module.Run, "save_checkpoint", real_save)
    assert main(["train", "--resume", str(tmp_path / "cut")]) == 0
    assert metrics_rows(tmp_path / "cut") == metrics_rows(tmp_path / "whole")
    assert_same_state(load_state(tmp_path / "cut" / "final.pt"), load_state(tmp_path / "whole" / "final.pt"))


def test_other_os_errors_are_not_disguised_as_disk_errors(tmp_path, monkeypatch):
    import metasgd_rl.run as run_module

    def bug(self):
        raise FileNotFoundError(2, "No such file or directory", "somewhere")

    monkeypatch.setattr(run_module.Run, "save_checkpoint", bug)
    config = write_config(tmp_path / "c.yaml", iterations=1, eval_every=0)
    with pytest.raises(FileNotFoundError):
        main(["train", str(config), "--run-dir", str(tmp_path / "run")])
