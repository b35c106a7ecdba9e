"""Hostile inputs end in one line on stderr, fast, with nothing written: YAML alias bombs and deep nesting, binary
config files, devices and Ray addresses torch or Ray cannot use, huge floats, unknown gymnasium ids, parameter paths
through private attributes, names too long for the file system, damaged metrics files, unwritable output paths,
Ctrl-C during start-up, allocator failures, and second-order settings whose memory cannot fit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import metasgd_rl.config as config_module
from metasgd_rl.cli import main
from metasgd_rl.config import (
    MAX_MESSAGE_CHARS,
    ConfigError,
    YamlLimitError,
    load_config,
    read_yaml_file,
    resolve_config,
    yaml_load,
)
from metasgd_rl.memory import MemoryCheckError, check_memory
from metasgd_rl.model import MetaSGD
from metasgd_rl.report import ComparisonError, check_metrics, read_metrics
from tests.tiny_config import TINY, write_config

ROOT = Path(__file__).resolve().parent.parent
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def one_error_line(capsys, start: str = "metasgd-rl: error: ") -> str:
    err = capsys.readouterr().err
    assert err.startswith(start) and err.count("\n") == 1 and len(err) < MAX_MESSAGE_CHARS + 100, err[:500]
    return err


def alias_bomb(levels: int, key: str = "x") -> str:
    """YAML of ``levels`` anchors, each a list of nine aliases of the one before: 9**(levels + 1) values once
    expanded, in a few hundred bytes; the last one under ``key``."""
    names = [f"l{i}" for i in range(levels + 1)]
    lines = [f"{names[0]}: &{names[0]} [1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    lines += [f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]" for p, n in zip(names, names[1:], strict=False)]
    return "\n".join(lines) + f"\n{key}: *{names[-1]}\n"


def tiny_config(tmp_path: Path, extra: str = "") -> Path:
    path = write_config(tmp_path / "c.yaml", iterations=1, eval_every=0)
    path.write_text(path.read_text() + extra)
    return path


# -- point 3: YAML alias bombs ------------------------------------------------------------------------------------


def test_an_alias_bomb_under_a_valid_key_is_refused_fast_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config = write_config(tmp_path / "c.yaml", iterations=1, eval_every=0, policy_kwargs=None)
    config.write_text(alias_bomb(6).replace("\nx: ", "\npolicy_kwargs:\n  hidden_sizes: ") + config.read_text())
    start = time.perf_counter()
    assert main(["train", str(config)]) == 2
    err = one_error_line(capsys)
    assert "is not allowed: its aliases expand to more than 100,000 values" in err
    assert time.perf_counter() - start < 5 and files_under(tmp_path) == {"c.yaml"}


def test_alias_bombs_recursive_aliases_and_deep_nesting_are_yaml_errors():
    with pytest.raises(YamlLimitError, match="aliases expand to more than"):
        yaml_load(alias_bomb(8))
    with pytest.raises(YamlLimitError, match="refers to a value that contains it"):
        yaml_load("a: &a [1, *a]")
    with pytest.raises(YamlLimitError, match="nests more than 100 levels deep"):
        yaml_load("a: " + "[" * 10_000 + "]" * 10_000)
    chain = "a0: &a0 [1]\n" + "".join(f"a{i}: &a{i} [*a{i - 1}]\n" for i in range(1, 300))  # deep through aliases only
    with pytest.raises(YamlLimitError, match="nests more than 100 levels deep through its aliases"):
        yaml_load(chain)
    assert yaml_load(alias_bomb(3)) is not None  # 9**4 values: a legitimate use of anchors passes


def test_an_alias_bomb_given_with_set_is_refused(tmp_path):
    bomb = alias_bomb(7).strip().replace("\n", ", ")
    with pytest.raises(ConfigError, match=r"^--set family_kwargs='.*' is not allowed: its aliases expand"):
        load_config(tiny_config(tmp_path), [f"family_kwargs={{{bomb}}}"])


def test_a_huge_value_is_quoted_short_in_every_refusal():
    with pytest.raises(ConfigError) as caught:
        resolve_config({**TINY, "nonsense": list(range(1_000_000))})
    assert len(str(caught.value)) < 1000 and "[0, 1, 2, 3, 4, 5, ...]" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        resolve_config({**TINY, "family": "x" * 1_000_000})
    assert len(str(caught.value)) <= MAX_MESSAGE_CHARS
    assert len(str(ConfigError("y" * 10**6))) <= MAX_MESSAGE_CHARS


# -- point 7: tracebacks where one line is promised --------------------------------------------------------------


@pytest.mark.parametrize("case", ["png", "nested lists", "nested mappings", "5000-digit integer", "bad date"])
def test_a_config_file_that_is_no_config_is_one_line(tmp_path, capsys, case):
    path = tmp_path / "c.yaml"
    if case == "png":
        path.write_bytes(PNG)
        expect = "is not allowed: it is not UTF-8 text (byte 0 is 0x89)"
    elif case == "nested lists":
        path.write_text("seed: " + "[" * 10_000 + "]" * 10_000 + "\n")
        expect = "is not allowed: it nests more than 100 levels deep"
    elif case == "nested mappings":
        path.write_text("seed: " + "{a: " * 3000 + "1" + "}" * 3000 + "\n")
        expect = "is not allowed: it nests more than 100 levels deep"
    elif case == "5000-digit integer":
        path.write_text("seed: " + "7" * 5000 + "\n")
        expect = "is not valid YAML: a value cannot be read: Exceeds the limit (4300 digits)"
    else:
        path.write_text("seed: 2024-13-45\n")
        expect = "is not valid YAML: a value cannot be read: month must be in 1..12"
    assert main(["train", str(path), "--run-dir", str(tmp_path / "run")]) == 2
    assert f"config file '{path}' {expect}" in one_error_line(capsys)
    assert not (tmp_path / "run").exists()


def test_resuming_a_run_whose_config_yaml_is_binary_is_one_line(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_bytes(PNG)
    assert main(["train", "--resume", str(tmp_path / "run")]) == 2
    assert "config.yaml' is not allowed: it is not UTF-8 text" in one_error_line(capsys)
    with pytest.raises(ConfigError, match="is larger than 10 MiB"):
        (tmp_path / "big.yaml").write_bytes(b"# " + b"x" * (10 * 2**20) + b"\n")
        read_yaml_file(tmp_path / "big.yaml")


@pytest.mark.parametrize("key, value, expect", [
    ("device", "meta", "device='meta' is not allowed; use 'cpu'"),
    ("device", "xla", "device='xla' is not allowed; use 'cpu'"),
    ("alpha_init", 1e300, "alpha_init=1e+300 is not allowed; use a number in [-1e+06, 1e+06]"),
    ("alpha_init", float("inf"), "alpha_init=inf is not allowed"),
    ("alpha_lr", 1e300, "alpha_lr=1e+300 is not allowed; use a positive number up to 1e+06"),
    ("ray_startup_timeout", float("nan"), "ray_startup_timeout=nan is not allowed"),
    ("outer_kwargs", {"lr": 1e300}, "outer_kwargs.lr=1e+300 is not allowed"),
    ("policy_kwargs", {"init_std": 1e300}, "policy_kwargs.init_std=1e+300 is not allowed"),
    ("num_threads", 10**20, "num_threads=100000000000000000000 is not allowed; use an integer from 1 to 4096"),
    ("ray_address", "garbage", "ray_address='garbage' is not allowed; use null (a local Ray), 'auto'"),
    ("ray_address", "head:99999", "ray_address='head:99999' is not allowed"),
    ("ray_address", "http://head:6379", "ray_address='http://head:6379' is not allowed"),
])
def test_values_torch_or_ray_cannot_use_are_refused_when_the_config_is_resolved(key, value, expect):
    with pytest.raises(ConfigError) as caught:
        resolve_config({**TINY, key: value, "run_dir": "unused"})
    assert expect in str(caught.value)


@pytest.mark.parametrize("address", [None, "auto", "local", "localhost:6379", "ray://10.0.0.2:10001", "[::1]:6379"])
def test_the_ray_address_forms_ray_takes_pass_without_contacting_anything(address):
    assert resolve_config({**TINY, "ray_address": address, "run_dir": "unused"})["ray_address"] == address


@pytest.mark.parametrize("env_id, expect", [("NoSuchEnv-v0", "Environment `NoSuchEnv` doesn't exist"),
                                            ("nosuchns/Env-v0", "Namespace nosuchns not found")])
def test_an_env_id_gymnasium_does_not_know_is_one_line_and_exit_2(tmp_path, capsys, env_id, expect):
    family_kwargs = f"{{env_id: '{env_id}', parameters: {{length: {{uniform: [0.4, 0.6]}}}}}}"
    argv = ["train", str(tiny_config(tmp_path)), "--run-dir", str(tmp_path / "run"), "--set", "family=GymEnv-v0",
            "--set", f"family_kwargs={family_kwargs}"]
    assert main(argv) == 2
    assert expect in one_error_line(capsys) and not (tmp_path / "run").exists()


@pytest.mark.parametrize("path, private", [("_max_episode_steps", "_max_episode_steps"),
                                          ("unwrapped.__class__.__init__.__code__.co_argcount", "__class__")])
def test_a_parameter_path_through_a_private_attribute_is_refused(tmp_path, capsys, path, private):
    from metasgd_rl.gym_family import GymTaskFamily
    from metasgd_rl.parameters import ParameterPathError, Uniform

    with pytest.raises(ParameterPathError, match=f"parameter path '{path}' is not allowed: '{private}' starts with"):
        GymTaskFamily("CartPole-v1", {path: Uniform(1.0, 2.0)})
    family_kwargs = f"{{env_id: CartPole-v1, parameters: {{'{path}': {{uniform: [1.0, 2.0]}}}}}}"
    argv = ["train", str(tiny_config(tmp_path)), "--run-dir", str(tmp_path / "run"), "--set", "family=GymEnv-v0",
            "--set", f"family_kwargs={family_kwargs}"]
    assert main(argv) == 2
    assert "starts with '_'" in one_error_line(capsys) and not (tmp_path / "run").exists()


@pytest.mark.parametrize("run_dir", ["x" * 300, "new-parent/" + "x" * 300])
def test_a_run_dir_name_too_long_for_the_file_system_is_one_line_and_creates_nothing(tmp_path, monkeypatch, capsys,
                                                                                       run_dir):
    monkeypatch.chdir(tmp_path)
    config = tiny_config(tmp_path)
    assert main(["train", str(config), "--run-dir", run_dir]) == 2
    assert "is 300 bytes long, and file systems take at most 255; use a shorter run_dir" in one_error_line(capsys)
    assert files_under(tmp_path) == {"c.yaml"}


def test_a_long_config_file_name_still_gives_a_default_run_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = write_config(tmp_path / ("c" * 245 + ".yaml"), iterations=1)
    run_dir = Path(load_config(config)["run_dir"])
    assert run_dir.parent == Path("runs") and len(run_dir.name) <= 255 and run_dir.name.startswith("c" * 200 + "-")


# -- reports: damaged metrics.csv, unwritable outputs ---------------------------------------------------------------


def damage(metrics: Path, how: str) -> str:
    if how == "binary":
        metrics.write_bytes(b"iteration,loss\n1,\xff\xfe\n")
        return "line 2 is not UTF-8 text"
    if how == "directory":
        metrics.mkdir()
        return "it is a directory, not a file"
    metrics.write_text("iteration,loss\n1," + "9" * 5000 + "\n")  # MAX_METRICS_LINE is lowered to 1000
    return "line 2 is over"


@pytest.mark.parametrize("how", ["binary", "directory", "long line"])
def test_a_damaged_metrics_csv_is_a_comparison_error_naming_it(tmp_path, monkeypatch, how):
    import metasgd_rl.report as report

    monkeypatch.setattr(report, "MAX_METRICS_LINE", 1000)
    expect = damage(tmp_path / "metrics.csv", how)
    with pytest.raises(ComparisonError, match=f"metrics.csv cannot be read for the learning curves: {expect}"):
        read_metrics(tmp_path)
    with pytest.raises(ComparisonError):
        check_metrics(tmp_path)
    check_metrics(tmp_path / "no-such-run")  # missing: the report notes it


@pytest.fixture
def saved_model(tmp_path) -> Path:
    model = MetaSGD("Navigation2D-v0", policy_kwargs=dict(hidden_sizes=(4,)), meta_batch_size=1, episodes_per_task=1,
                    outer="adam", family_kwargs=dict(max_episode_steps=5))
    return model.save(tmp_path / "run" / "final.pt")


def no_evaluation(monkeypatch) -> None:
    """Make any evaluation fail the test: a refusal must come before the work."""
    import metasgd_rl.evaluation as evaluation

    def evaluate(*args, **kwargs):
        raise AssertionError("evaluated before refusing")

    monkeypatch.setattr(evaluation, "evaluate_adaptation", evaluate)


def test_evaluate_report_refuses_a_damaged_metrics_csv_before_evaluating(saved_model, monkeypatch, capsys):
    damage(saved_model.parent / "metrics.csv", "binary")
    no_evaluation(monkeypatch)
    assert main(["evaluate", str(saved_model), "--tasks", "1", "--report", str(saved_model.parent / "rep")]) == 2
    assert "metrics.csv cannot be read for the learning curves: line 2 is not UTF-8 text" in one_error_line(capsys)


def test_compare_refuses_a_damaged_metrics_csv_before_evaluating(saved_model, monkeypatch, capsys):
    damage(saved_model.parent / "metrics.csv", "directory")
    no_evaluation(monkeypatch)
    assert main(["compare", str(saved_model.parent), "--out", str(saved_model.parent / "rep"), "--tasks", "1"]) == 2
    assert "metrics.csv cannot be read for the learning curves: it is a directory" in one_error_line(capsys)


def deny_writes(monkeypatch, folder: Path) -> None:
    """os.access as a normal user would see a read-only ``folder`` (chmod does not stop root)."""
    real = os.access

    def access(path, mode, *args, **kwargs):
        if mode & os.W_OK and Path(path).absolute().is_relative_to(folder.absolute()):
            return False
        return real(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)


@pytest.mark.parametrize("option", ["--json", "--report", "--json long", "--report under a file"])
def test_evaluate_refuses_an_unwritable_output_before_evaluating(saved_model, tmp_path, monkeypatch, capsys, option):
    (tmp_path / "locked").mkdir()
    (tmp_path / "a-file").write_text("x")
    deny_writes(monkeypatch, tmp_path / "locked")
    no_evaluation(monkeypatch)
    flag, target, expect = {
        "--json": ("--json", tmp_path / "locked" / "r.json", "is not writable"),
        "--report": ("--report", tmp_path / "locked" / "rep", "is not writable"),
        "--json long": ("--json", tmp_path / ("j" * 300 + ".json"), "bytes long"),
        "--report under a file": ("--report", tmp_path / "a-file" / "rep", "is a file, not a directory"),
    }[option]
    assert main(["evaluate", str(saved_model), "--tasks", "1", flag, str(target)]) == 2
    err = one_error_line(capsys)
    assert f"{flag} '{target}' is not allowed: " in err and expect in err


def test_compare_and_benchmark_refuse_an_unwritable_out_before_the_work(saved_model, tmp_path, monkeypatch, capsys):
    import metasgd_rl.benchmark as benchmark

    (tmp_path / "locked").mkdir()
    deny_writes(monkeypatch, tmp_path / "locked")
    no_evaluation(monkeypatch)

    def measure(*args, **kwargs):
        raise AssertionError("measured before refusing")

    monkeypatch.setattr(benchmark, "run_benchmark", measure)
    out = tmp_path / "locked" / "out"
    assert main(["benchmark", "--out", str(out)]) == 2
    assert f"--out '{out}' is not allowed: '{tmp_path / 'locked'}' is not writable" in one_error_line(capsys)
    assert main(["compare", str(saved_model.parent), "--out", str(out), "--tasks", "1"]) == 2
    assert f"--out '{out}' is not allowed: '{tmp_path / 'locked'}' is not writable" in one_error_line(capsys)


# -- Ctrl-C during start-up, allocator failures --------------------------------------------------------------------


def test_ctrl_c_before_training_is_one_line_and_exit_130(tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(config_module, "load_config", interrupted)
    try:
        code = main(["train", str(tiny_config(tmp_path)), "--run-dir", str(tmp_path / "run")])
    except KeyboardInterrupt:
        pytest.fail("KeyboardInterrupt escaped main: a traceback")
    assert code == 130 and capsys.readouterr().err == "metasgd-rl: interrupted\n"


def default_sigint() -> None:
    """In a child before it runs: SIGINT at its default and unblocked, as a terminal starts a command (whatever an
    earlier test or library left in this test process, which the child would otherwise inherit)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("argv0, expect", [("metasgd-rl", (130, "metasgd-rl: interrupted\n")),
                                           ("python", (-signal.SIGINT, None))])
def test_ctrl_c_while_the_command_imports_the_package_is_one_line_and_exit_130(argv0, expect):
    # startup.py installs its handler when imported in the command's process; SIGINT arrives during the imports
    code = ("import importlib.util, os, signal, sys, time\n"
            f"sys.argv[0] = {argv0!r}\n"
            f"spec = importlib.util.spec_from_file_location('startup', {str(ROOT / 'metasgd_rl' / 'startup.py')!r})\n"
            "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
            "os.kill(os.getpid(), signal.SIGINT)\n"
            "time.sleep(30)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            preexec_fn=default_sigint)
    if expect[1] is None:  # a Python process that only imports the library keeps Python's own Ctrl-C
        assert result.returncode == expect[0] and "KeyboardInterrupt" in result.stderr
    else:
        assert (result.returncode, result.stderr) == expect
    # a process that imports the library (not the command) keeps Python's own handler
    library = subprocess.run([sys.executable, "-c", "import signal, metasgd_rl\n"
                              "assert signal.getsignal(signal.SIGINT) is signal.default_int_handler\n"
                              "metasgd_rl.MetaSGD  # the heavy imports too\n"
                              "assert signal.getsignal(signal.SIGINT) is signal.default_int_handler\n"],
                             capture_output=True, text=True, timeout=300, preexec_fn=default_sigint, cwd=ROOT)
    assert library.returncode == 0, library.stderr


def test_ctrl_c_while_the_command_imports_torch_is_one_line_and_exit_130():
    # the package imports its modules on first use: the command imports torch in main, after parsing its arguments,
    # still under startup's handler, which main gives back once the imports are done
    code = ("import os, signal, sys\n"
            "sys.argv[0] = 'metasgd-rl'\n"
            "from metasgd_rl import startup\n"
            "from metasgd_rl.cli import main\n"
            "assert 'torch' not in sys.modules and signal.getsignal(signal.SIGINT) is startup._interrupted\n"
            "if sys.argv[1] == 'interrupt':\n"
            "    class CtrlC:  # Ctrl-C as torch's import begins\n"
            "        def find_spec(self, name, path=None, target=None):\n"
            "            if name == 'torch':\n"
            "                os.kill(os.getpid(), signal.SIGINT)\n"
            "    sys.meta_path.insert(0, CtrlC())\n"
            "code = main(['families'])\n"
            "assert code == 0 and 'torch' in sys.modules, code\n"
            "assert signal.getsignal(signal.SIGINT) is signal.default_int_handler\n")
    for how, expect in (("interrupt", (130, "metasgd-rl: interrupted\n")), ("run", (0, ""))):
        result = subprocess.run([sys.executable, "-c", code, how], capture_output=True, text=True, timeout=300,
                                preexec_fn=default_sigint)
        assert (result.returncode, result.stderr) == expect


ALLOCATOR = ("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: not enough memory: you tried to "
             "allocate 1600000000 bytes.")


def test_a_torch_allocator_failure_in_the_first_iteration_is_one_line_and_leaves_no_run_dir(tmp_path, monkeypatch,
                                                                                            capsys):
    def allocate(self):
        raise RuntimeError(ALLOCATOR)

    monkeypatch.setattr(MetaSGD, "train_step", allocate)
    assert main(["train", str(tiny_config(tmp_path)), "--run-dir", str(tmp_path / "run")]) == 1
    err = one_error_line(capsys)
    assert "error: out of memory (an allocation of 1.6 GB failed); lower meta_batch_size" in err
    assert "task_chunk_size" in err and "--tasks" not in err and "continue it with --resume" not in err
    assert not (tmp_path / "run").exists()


def test_other_runtime_errors_still_show_in_full(tmp_path, monkeypatch):
    def broken(self):
        raise RuntimeError("a bug")

    monkeypatch.setattr(MetaSGD, "train_step", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["train", str(tiny_config(tmp_path)), "--run-dir", str(tmp_path / "run")])


# -- point 8: the memory of the second-order graph ------------------------------------------------------------------


def big_config(**changes) -> dict:
    return {**TINY, "policy_kwargs": {**TINY["policy_kwargs"], "hidden_sizes": [20000, 20000]}, **changes}


def test_the_estimate_counts_the_second_order_graph_of_20000_wide_layers():
    # 4e8 parameters (1.6 GB a copy): θ, α, their gradients and optimiser states 12.8 GB; the meta-gradient through
    # the inner step of 2 tasks 12.8 GB more. The first-order estimate alone (19.3 GB) passed a 20 GB machine, whose
    # training then died in torch's allocator
    with pytest.raises(MemoryCheckError, match=r"^policy_kwargs.hidden_sizes=\[20000, 20000\] needs at least 25.8 GB"):
        check_memory(big_config(), available=20 * 10**9)
    assert check_memory(big_config(first_order=True), available=20 * 10**9).total < 20 * 10**9


def test_a_second_order_setting_that_cannot_fit_is_refused_before_anything_is_built(tmp_path, monkeypatch, capsys):
    import metasgd_rl.memory as memory

    def build(config):
        raise AssertionError("the model was built")

    monkeypatch.setattr(memory, "available_memory", lambda: 20 * 10**9)
    monkeypatch.setattr(config_module, "build_model", build)
    config = tiny_config(tmp_path)
    config.write_text(yaml.safe_dump(big_config(iterations=1)))
    assert main(["train", str(config), "--run-dir", str(tmp_path / "run")]) == 2
    assert "needs at least 25.8 GB of memory" in one_error_line(capsys) and not (tmp_path / "run").exists()
