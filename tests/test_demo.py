"""``make demo``'s training can be repeated from the command line.

The demo (``scripts/demo.py``) trains the protocol config with 2 torch threads while the configs say 1, and
another thread count is another run, bit for bit. It prints the ``metasgd-rl train`` command that trains the same
model; the README and the getting-started page give it for the default demo. These tests check that this
command is the documented one and that it writes the demo's ``final.pt`` bit for bit (on a small meta-batch and
one iteration, to stay fast), and that without ``--set num_threads=2`` it would not.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from types import ModuleType

import pytest

from metasgd_rl.cli import main
from tests.script_module import load_script
from tests.tiny_config import assert_same_state, load_state

ROOT = Path(__file__).resolve().parents[1]
# a smaller meta-batch than the protocol's 20 x 20 (still a 2x100 policy, where 1 and 2 threads round differently)
SMALL = ["meta_batch_size=2", "episodes_per_task=2"]


def _bash_commands(path: Path) -> list[str]:
    """The ``metasgd-rl train`` lines of a markdown file's code blocks, continuation lines joined."""
    text = re.sub(r"\\\n\s*", "", path.read_text(encoding="utf-8"))
    return [line.split("#")[0].strip() for line in text.splitlines() if line.startswith("metasgd-rl train ")]


def _final_state(run_dir: Path, *without: str) -> dict:
    """The run's ``final.pt`` without its digest (compared in full instead) and the keys ``without``."""
    state = load_state(run_dir / "final.pt")
    for key in ("digest", *without):
        state.pop(key)
    return state


@pytest.fixture
def demo(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The demo with a small meta-batch added to its overrides (its training and its printed command alike)."""
    module = load_script("demo")
    overrides = module.overrides
    monkeypatch.setattr(module, "overrides", lambda *args: [*overrides(*args), *SMALL])
    return module


@pytest.mark.parametrize("page", ["README.md", "docs/getting-started.md"])
def test_the_docs_give_the_command_that_the_demo_prints(page):
    demo = load_script("demo")
    assert demo.cli_command(40, 0, 2, "runs/demo-cli") in _bash_commands(ROOT / page)


def test_the_printed_command_trains_the_demos_final_checkpoint_bit_for_bit(demo, tmp_path, monkeypatch):
    _, run, _ = demo.train(1, 0, 2, str(tmp_path / "demo"))
    command = shlex.split(demo.cli_command(1, 0, 2, str(tmp_path / "cli")))
    assert command[:2] == ["metasgd-rl", "train"] and "num_threads=2" in command
    monkeypatch.chdir(ROOT)  # the command names the config relative to the repository's root
    assert main(command[1:]) == 0
    assert_same_state(_final_state(tmp_path / "cli"), _final_state(run.directory))

    # the configs' own thread count trains another model: the command must say num_threads=2
    position = command.index("num_threads=2")
    assert main([*command[1:position - 1], *command[position + 1:-1], str(tmp_path / "one-thread")]) == 0
    with pytest.raises(AssertionError, match="tensors differ"):
        assert_same_state(_final_state(tmp_path / "one-thread", "config"), _final_state(run.directory, "config"))
