"""The example plugin package (examples/custom_family), installed for real, as a user outside this repo would.

pip builds it and installs it with ``--target`` into a temporary folder (offline: ``--no-index --no-deps
--no-build-isolation``, setuptools comes from this environment); fresh interpreters with that folder on
``PYTHONPATH`` then see its ``.dist-info/entry_points.txt`` exactly as they would after ``pip install``. The
package is copied first, so that the build leaves nothing (``build/``, ``*.egg-info``) in the repository.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.tiny_config import load_state

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "custom_family"
CONFIG = EXAMPLE / "configs" / "point-reach-metasgd.yaml"
ENTRY_POINT_ID = "PointReach-v0"  # registered only by the entry point
DECORATOR_ID = "AcrobotRandLinks-v0"  # registered by @register_task_family (and declared as an entry point)
IGNORE = shutil.ignore_patterns("build", "*.egg-info", "__pycache__")


def run_python(args: list[str], cwd: Path, pythonpath: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python ARGS`` in a fresh interpreter with ``pythonpath`` first on its path; fails with its output."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(pythonpath), *filter(None, [env.get("PYTHONPATH")])])
    proc = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"python {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if "__pycache__" not in p.parts}


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The example package installed into a fresh folder, as ``pip install`` would install it."""
    tmp = tmp_path_factory.mktemp("example")
    source, target = tmp / "custom_family", tmp / "site"
    before = files_under(EXAMPLE)
    shutil.copytree(EXAMPLE, source, ignore=IGNORE)
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "--no-cache-dir",
         "--target", str(target), str(source)],
        cwd=tmp, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, f"pip install failed:\n{proc.stdout}\n{proc.stderr}"
    (dist_info,) = target.glob("metasgd_rl_example_families-*.dist-info")
    entry_points = (dist_info / "entry_points.txt").read_text()
    assert "[metasgd_rl.task_families]" in entry_points
    assert ENTRY_POINT_ID in entry_points and DECORATOR_ID in entry_points
    assert files_under(EXAMPLE) == before  # the build ran on the copy: no build/ or *.egg-info in the repo
    return target


def test_both_example_families_pass_check_task_family(site, tmp_path):
    script = f"""
import json, metasgd_rl as msr
from metasgd_rl.registry import _REGISTRY
for family_id in {[ENTRY_POINT_ID, DECORATOR_ID]!r}:
    family = msr.make_task_family(family_id)
    msr.check_task_family(family)
import point_families
print(json.dumps({{"module": point_families.__file__,
                  "sources": {{i: _REGISTRY[i].source for i in {[ENTRY_POINT_ID, DECORATOR_ID]!r}}}}}))
"""
    proc = run_python(["-c", script], cwd=tmp_path, pythonpath=site)
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(info["module"]).resolve().is_relative_to(site.resolve())  # the installed copy, not the repo's
    # both came from the installed entry points; importing the package afterwards (which runs the decorator)
    # re-registers AcrobotRandLinks-v0 as the same target, without a conflict
    assert info["sources"] == {i: "entry point of metasgd-rl-example-families" for i in (ENTRY_POINT_ID, DECORATOR_ID)}
    assert "conflicting" not in proc.stderr


def test_metasgd_rl_families_lists_both_example_families(site, tmp_path):
    proc = run_python(["-m", "metasgd_rl", "families"], cwd=tmp_path, pythonpath=site)
    lines = {line.split()[0]: line for line in proc.stdout.splitlines() if line.strip()}
    assert "1-D point mass with inertia" in lines[ENTRY_POINT_ID]
    assert "Acrobot-v1 (discrete torques)" in lines[DECORATOR_ID]
    assert "Navigation2D-v0" in lines  # the built-in families are still there
    assert "cannot be imported" not in proc.stdout


def test_metasgd_rl_trains_on_the_example_family_and_evaluates_the_checkpoint(site, tmp_path):
    run_dir = tmp_path / "run"
    proc = run_python(["-m", "metasgd_rl", "train", str(CONFIG), "--run-dir", str(run_dir),
                       "--set", "iterations=2", "--set", "meta_batch_size=2", "--set", "episodes_per_task=2",
                       "--set", "eval_every=0", "--set", "progress_bar=false"], cwd=tmp_path, pythonpath=site)
    assert f"training metasgd on {ENTRY_POINT_ID} for 2 iterations" in proc.stdout
    final = run_dir / "final.pt"
    assert final.is_file() and (run_dir / "checkpoint.pt").is_file()
    assert load_state(final)  # tensors and plain values only
    # a fresh process rebuilds the family from the checkpoint through the installed entry point
    proc = run_python(["-m", "metasgd_rl", "evaluate", str(final), "--tasks", "2", "--steps", "1",
                       "--episodes", "2"], cwd=tmp_path, pythonpath=site)
    assert f"at iteration 2 ({final}) on {ENTRY_POINT_ID}" in proc.stdout
    assert list(tmp_path.iterdir()) == [run_dir]  # nothing written outside the run directory


def test_the_decorator_alone_registers_its_family_once_the_package_is_imported(tmp_path):
    """Without an install (no entry points), importing the package is what registers AcrobotRandLinks-v0."""
    try:
        importlib.metadata.distribution("metasgd-rl-example-families")
        pytest.skip("the example package is installed in this environment: its entry points are always visible")
    except importlib.metadata.PackageNotFoundError:
        pass
    plain = tmp_path / "plain"
    shutil.copytree(EXAMPLE / "point_families", plain / "point_families", ignore=IGNORE)
    script = f"""
import metasgd_rl as msr
before = set(msr.list_task_families())
import point_families
after = set(msr.list_task_families())
print(sorted(after - before), {ENTRY_POINT_ID!r} in after)
print(msr.make_task_family({DECORATOR_ID!r}))
"""
    proc = run_python(["-c", script], cwd=tmp_path, pythonpath=plain)
    added, repr_line = proc.stdout.strip().splitlines()[-2:]
    assert added == f"[{DECORATOR_ID!r}] False"  # PointReach-v0 has only its entry point: not registered here
    assert repr_line.startswith(f"AcrobotRandLinksFamily(id={DECORATOR_ID!r}, env_id='Acrobot-v1'")
