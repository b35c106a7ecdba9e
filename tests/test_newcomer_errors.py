"""The errors a newcomer meets first: a typo in a family id, a gymnasium id given as a family, a GymTaskFamily without
parameters or with a misspelt one, a mistyped checkpoint or run directory, a checkpoint whose family is not installed.
Each is one line that leads with what the user likely meant."""

from __future__ import annotations

import json
import re
import sys

import pytest
import torch
import yaml

import metasgd_rl as msr
from metasgd_rl.cli import main
from metasgd_rl.gym_family import tunable_parameters
from metasgd_rl.model import CheckpointError, MetaSGD, MissingFamilyError
from metasgd_rl.parameters import ParameterPathError
from metasgd_rl.registry import _REGISTRY
from tests.tiny_config import write_config

ACROBOT_PARAMETERS = ("LINK_LENGTH_1=1", "LINK_LENGTH_2=1", "LINK_MASS_1=1", "LINK_MASS_2=1", "LINK_MOI=1")


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err.removeprefix("metasgd-rl: error: ").rstrip("\n")


def train_with_family(tmp_path, family: str) -> int:
    return main(["train", str(write_config(tmp_path / "c.yaml")), "--run-dir", str(tmp_path / "run"),
                 "--set", f"family={family}"])


# -- family ids ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("typo", ["Navigaton2D-v0", "navigation2d-v0", "NAVIGATION2D-V0"])
def test_a_mistyped_family_id_leads_with_the_close_id_in_a_short_line(tmp_path, capsys, typo):
    assert train_with_family(tmp_path, typo) == 2
    message = one_error_line(capsys)
    assert message.startswith(f"family={typo!r} is not registered; did you mean 'Navigation2D-v0'")
    assert message.endswith("(metasgd-rl families lists them)") and len(message) < 250
    assert "entry point" not in message and "your_package" not in message  # a typo is no family to register
    assert not (tmp_path / "run").exists()


def test_a_gymnasium_id_points_to_gymenv_with_the_envs_own_parameters(tmp_path, capsys):
    assert train_with_family(tmp_path, "Acrobot-v1") == 2
    message = one_error_line(capsys)
    assert message.startswith("family='Acrobot-v1' is a gymnasium env, not a task family: use it through "
                              "family=GymEnv-v0 with family_kwargs={env_id: Acrobot-v1, parameters: {LINK_LENGTH_1: ")
    assert "AcrobotEnv's numeric attributes: " in message
    assert all(parameter in message for parameter in ACROBOT_PARAMETERS)
    assert "your_package" not in message and "register" not in message


@pytest.mark.parametrize("given", ["Acrobot-v2", "acrobot-v1", "Acrobot"])
def test_a_near_gymnasium_id_suggests_it(given):
    with pytest.raises(KeyError) as info:
        msr.make_task_family(given)
    message = str(info.value)
    assert message.startswith(f"task family {given!r} is not registered; did you mean gymnasium's 'Acrobot-v1'? "
                              "If so, use it through family=GymEnv-v0")
    assert "LINK_MASS_1=1" in message


def test_a_gymnasium_id_close_to_a_builtin_family_names_both():
    with pytest.raises(KeyError) as info:
        msr.make_task_family("CartPole-v1")
    message = str(info.value)
    assert message.startswith("task family 'CartPole-v1' is a gymnasium env, not a task family: did you mean "
                              "'CartPoleRandParams-v0'? Or use it through family=GymEnv-v0")
    assert "length=0.5" in message and "masspole=0.1" in message


def test_the_suggested_gymenv_declaration_builds_a_family():
    """The family_kwargs the advice quotes are valid YAML that make a working family."""
    with pytest.raises(KeyError) as info:
        msr.make_task_family("Pendulum-v1")
    quoted = re.search(r"family_kwargs=(\{.*?\}\}\})", str(info.value)).group(1)
    family = msr.make_task_family("GymEnv-v0", **yaml.safe_load(quoted))
    try:
        assert family.env_id == "Pendulum-v1" and len(family.sample_tasks(2, 0)) == 2
    finally:
        family.close()


def test_an_unknown_id_with_nothing_close_still_says_how_to_register_one():
    with pytest.raises(KeyError) as info:
        msr.make_task_family("QuiteUnrelatedThing-v3")
    message = str(info.value)
    assert message.startswith("task family 'QuiteUnrelatedThing-v3' is not registered in this process: ")
    assert '"QuiteUnrelatedThing-v3" = "your_package.module:YourFamily"' in message
    assert "did you mean" not in message and "gymnasium" not in message and "\n" not in message


# -- GymTaskFamily parameters -----------------------------------------------------------------------------------


@pytest.mark.parametrize("parameters", [None, {}])
def test_a_gym_family_without_parameters_lists_those_the_env_has(parameters):
    with pytest.raises(ValueError) as info:
        msr.GymTaskFamily("Acrobot-v1", parameters)
    message = str(info.value)
    assert message.startswith("GymTaskFamily('Acrobot-v1'): declare which parameters vary, e.g. "
                              "parameters={'LINK_LENGTH_1': Uniform(0.5, 2.0, scale=True)}")
    assert all(parameter in message for parameter in ACROBOT_PARAMETERS) and "\n" not in message


@pytest.mark.parametrize(("given", "meant"), [("link_length_1", "'LINK_LENGTH_1'"), ("Link_Mass_2", "'LINK_MASS_2'")])
def test_a_parameter_name_in_another_case_gets_a_did_you_mean(given, meant):
    with pytest.raises(ParameterPathError, match=f"Did you mean {meant}"):
        msr.GymTaskFamily("Acrobot-v1", {given: msr.Uniform(0.5, 1.5)})


def test_a_parameter_with_nothing_close_lists_the_envs_parameters():
    with pytest.raises(ParameterPathError) as info:
        msr.GymTaskFamily("Acrobot-v1", {"wingspan": msr.Uniform(0.5, 1.5)})
    message = str(info.value)
    assert "has no parameter 'wingspan'" in message and "Did you mean" not in message
    assert all(parameter in message for parameter in ACROBOT_PARAMETERS)


def test_tunable_parameters_are_public_numbers_read_without_side_effects():
    import gymnasium as gym

    env = gym.make("HalfCheetah-v5")
    try:
        found = tunable_parameters(env)
    finally:
        env.close()
    assert {"model.body_mass", "model.dof_damping", "frame_skip"} <= set(found)
    assert not any(name.startswith("_") for name in found)
    assert "np_random" not in found and "render_mode" not in found  # a property and a non-number


# -- paths -----------------------------------------------------------------------------------------------------


@pytest.fixture
def run_dir(tmp_path):
    """A directory holding an untrained tiny model as final.pt and checkpoint.pt, as a run leaves them."""
    model = MetaSGD(family="Navigation2D-v0", policy_kwargs=dict(hidden_sizes=(4,)), meta_batch_size=2,
                    episodes_per_task=2, seed=0)
    directory = tmp_path / "runs" / "metasgd-seed0"
    model.save(directory / "final.pt")
    model.save(directory / "checkpoint.pt")
    return directory


@pytest.mark.parametrize(("given", "meant"), [("fnal.pt", "final.pt"), ("Final.pt", "final.pt"),
                                              ("chekpoint.pt", "checkpoint.pt")])
def test_evaluate_of_a_mistyped_checkpoint_names_the_file_beside_it(run_dir, capsys, given, meant):
    assert main(["evaluate", str(run_dir / given)]) == 2
    assert one_error_line(capsys) == (f"CHECKPOINT={str(run_dir / given)!r} is not allowed: no such file; did you "
                                      f"mean {str(run_dir / meant)!r}?")


def test_a_relative_path_gets_a_relative_suggestion_even_for_a_mistyped_folder(run_dir, capsys, monkeypatch):
    monkeypatch.chdir(run_dir.parent.parent)
    assert main(["evaluate", "runs/metasgd-sed0/final.pt"]) == 2
    assert one_error_line(capsys).endswith("no such file; did you mean 'runs/metasgd-seed0/final.pt'?")
    assert main(["evaluate", "runs/other/final.pt"]) == 2
    assert one_error_line(capsys).endswith("no such file (no folder 'runs/other' either)")


@pytest.mark.parametrize("keep", ["final.pt", "checkpoint.pt"])
def test_evaluate_of_a_run_directory_names_its_checkpoint(run_dir, capsys, keep):
    for name in {"final.pt", "checkpoint.pt"} - {keep}:
        (run_dir / name).unlink()
    assert main(["evaluate", str(run_dir)]) == 2
    assert one_error_line(capsys).endswith(f"it is a directory; did you mean its checkpoint {str(run_dir / keep)!r}?")


def test_resume_of_a_missing_directory_says_it_does_not_exist(run_dir, capsys, monkeypatch):
    monkeypatch.chdir(run_dir.parent.parent)
    assert main(["train", "--resume", "runs/metasgd-sed0"]) == 2
    assert one_error_line(capsys) == ("--resume 'runs/metasgd-sed0' is not allowed: it does not exist; did you mean "
                                      "'runs/metasgd-seed0'?")
    assert main(["train", "--resume", "runs/zzzzzzzzzz"]) == 2
    assert one_error_line(capsys) == ("--resume 'runs/zzzzzzzzzz' is not allowed: it does not exist; give the "
                                      "directory of a run written by 'metasgd-rl train'")
    assert not (run_dir.parent / "zzzzzzzzzz").exists()


def test_compare_of_a_mistyped_run_directory_names_the_close_one(run_dir, tmp_path, capsys):
    typo = run_dir.parent / "metasgd-sed0"
    assert main(["compare", str(typo), str(run_dir), "--out", str(tmp_path / "out")]) == 2
    assert one_error_line(capsys).endswith(f"no such directory; did you mean {str(run_dir)!r}?")


# -- checkpoints whose family is not installed -----------------------------------------------------------------


def with_family(source, target, family: str, family_kwargs: dict) -> None:
    """``source`` with its saved config naming ``family`` instead (the family is built before the digest is
    checked, so the refusal tested is the family's)."""
    state = torch.load(source, weights_only=True)
    config = json.loads(state["config"])
    state["config"] = json.dumps({**config, "family": family, "family_kwargs": family_kwargs})
    torch.save(state, target)


def test_a_checkpoint_whose_family_needs_a_missing_extra_names_it(run_dir, tmp_path, capsys, monkeypatch):
    with_family(run_dir / "final.pt", tmp_path / "mw.pt", "MetaWorld-ML1-v0", {"env_name": "reach-v3"})
    monkeypatch.setitem(sys.modules, "metaworld", None)  # as if metaworld were not installed
    with pytest.raises(MissingFamilyError) as info:
        MetaSGD.load(tmp_path / "mw.pt")
    assert isinstance(info.value, ImportError) and isinstance(info.value, CheckpointError)
    assert main(["evaluate", str(tmp_path / "mw.pt")]) == 2
    message = one_error_line(capsys)
    assert "was saved with task family 'MetaWorld-ML1-v0', which cannot be built here" in message
    assert message.endswith('pip install "metasgd-rl[metaworld]"') and "not a loadable" not in message


def test_a_checkpoint_of_a_family_no_installed_package_declares_says_so(tmp_path, capsys, monkeypatch):
    family_id = "PluginOnlyFamily-v0"
    msr.register_task_family(family_id, entry_point="metasgd_rl_envs.navigation:Navigation2DFamily")
    try:
        MetaSGD(family=family_id, policy_kwargs=dict(hidden_sizes=(4,)), meta_batch_size=2,
                episodes_per_task=2).save(tmp_path / "plugin.pt")
    finally:
        _REGISTRY.pop(family_id)  # as if the package declaring it were uninstalled
    assert main(["evaluate", str(tmp_path / "plugin.pt")]) == 2
    message = one_error_line(capsys)
    assert message == (f"CHECKPOINT={str(tmp_path / 'plugin.pt')!r} is not allowed: {tmp_path / 'plugin.pt'} was "
                       f"saved with task family {family_id!r}, which is not installed here: install the package that "
                       f"provides it (it declares {family_id!r} in the entry-point group 'metasgd_rl.task_families') "
                       "or, in Python, import the module that registers it")
