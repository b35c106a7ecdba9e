"""The command a report prints: machine paths replaced by the repository's and the home folder's, quoted."""

from __future__ import annotations

import shlex
from pathlib import Path

from metasgd_rl.command_line import ROOT, shown_command, shown_path

HOME = Path("/home/someone")


def test_paths_inside_the_repository_are_relative_to_it():
    assert shown_path(str(ROOT / "docs" / "metaworld" / "study"), home=HOME) == "docs/metaworld/study"
    assert shown_path(str(ROOT), home=HOME) == "."


def test_paths_under_home_start_with_a_tilde():
    assert shown_path("/home/someone/runs/metaworld-study", home=HOME) == "~/runs/metaworld-study"
    assert shown_path("/home/someone/runs/../runs/x", home=HOME) == "~/runs/x"
    assert shown_path("/home/someone", home=HOME) == "~"
    assert shown_path("/home/someone/my runs", home=HOME) == "~/'my runs'"
    assert shown_path("--out=/home/someone/runs/x", home=HOME) == "--out ~/runs/x"  # no ~ expansion after "="
    assert shown_path(f"--report-dir={ROOT / 'docs'}", home=HOME) == "--report-dir docs"
    assert shown_path("--set=seed=1", home=HOME) == "--set=seed=1"


def test_the_repository_wins_over_home_when_it_lies_under_home():
    root = HOME / "metasgd-rl"
    assert shown_path(str(root / "docs"), root=root, home=HOME) == "docs"


def test_other_arguments_are_only_quoted():
    assert shown_path("/tmp/smoke", home=HOME) == "/tmp/smoke"
    assert shown_path("--set", home=HOME) == "--set"
    assert shown_path("family_kwargs.max_episode_steps=10", home=HOME) == "family_kwargs.max_episode_steps=10"
    assert shown_path("a b", home=HOME) == "'a b'"
    assert shown_path("/home/someoneelse/x", home=HOME) == "/home/someoneelse/x"  # not under HOME


def test_a_study_command_reads_the_same_on_every_machine():
    argv = ["--out", "/home/someone/runs/metaworld-study", "--report-dir", str(ROOT / "docs/metaworld/study"),
            "--set", "seed=1", "--publish"]
    shown = shown_command(ROOT / "scripts" / "reproduce_metaworld.py", argv, home=HOME)
    assert shown == ("python scripts/reproduce_metaworld.py --out ~/runs/metaworld-study "
                     "--report-dir docs/metaworld/study --set seed=1 --publish")
    assert shlex.split(shown)[2:] == ["--out", "~/runs/metaworld-study", "--report-dir", "docs/metaworld/study",
                                      "--set", "seed=1", "--publish"]
