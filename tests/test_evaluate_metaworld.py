"""scripts/evaluate_metaworld.py: the settings it hands Meta-World's protocol, and the options it refuses."""

from __future__ import annotations

import sys

import pytest

from tests.script_module import load_script

pytest.importorskip("metaworld", reason="the metaworld extra is not installed")



@pytest.fixture()
def script():
    return load_script("evaluate_metaworld")


class Handed(Exception):
    """Raised by the stand-in protocol with the settings the script handed it."""


def settings_for(script, monkeypatch, tmp_path, *options):
    checkpoint = tmp_path / "final.pt"
    checkpoint.write_bytes(b"")

    def handed(path, settings, cache):
        raise Handed(path, settings, cache)

    monkeypatch.setattr(script, "evaluate_checkpoint", handed)
    monkeypatch.setattr(sys, "argv", ["evaluate_metaworld.py", str(checkpoint), "--out", str(tmp_path / "out"),
                                      *options])
    with pytest.raises(Handed) as raised:
        script.main()
    path, settings, cache = raised.value.args
    assert path == checkpoint and cache == tmp_path / "out" / "runs"
    return settings


def test_the_horizon_enters_the_settings_only_when_asked_for(script, monkeypatch, tmp_path):
    own = settings_for(script, monkeypatch, tmp_path)
    assert own == {"envs_per_class": 1, "adaptation_steps": 1, "adaptation_episodes": 10, "evaluation_episodes": 3,
                   "seed": 0, "deterministic": False}  # the caches made before --horizon existed stay valid
    assert settings_for(script, monkeypatch, tmp_path, "--horizon", "500") == own | {"horizon": 500}


def test_a_bad_horizon_or_a_missing_run_is_refused_in_one_line(script, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(sys, "argv", ["evaluate_metaworld.py", str(tmp_path), "--out", str(tmp_path), "--horizon",
                                      "0"])
    with pytest.raises(SystemExit):
        script.main()
    assert "--horizon 0 is not allowed; use an integer >= 1" in capsys.readouterr().err
    monkeypatch.setattr(sys, "argv", ["evaluate_metaworld.py", str(tmp_path / "nowhere"), "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="nowhere: no such run directory or checkpoint"):
        script.main()


def test_the_reports_title_names_the_benchmark_and_an_ml1_task(script):
    assert script.benchmark_title({"benchmark": "ML1", "env_name": "push-v3"}) == "ML1 push-v3"
    assert script.benchmark_title({"benchmark": "ML10", "env_name": None}) == "ML10"
    assert script.benchmark_title({"benchmark": "ML45", "env_name": ""}) == "ML45"
