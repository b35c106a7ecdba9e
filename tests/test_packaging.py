"""Issue 15: the built-in families install as ``metasgd_rl_envs`` (folder ``envs/``), never as a top-level ``envs``.

``envs`` is a generic name that can clash with a user's own package, so the distribution maps the folder
``envs/`` to the package ``metasgd_rl_envs`` (``[tool.setuptools.package-dir]``) and nothing imports ``envs``.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
GROUP = "metasgd_rl.task_families"


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_pyproject_maps_the_envs_folder_to_metasgd_rl_envs_and_its_entry_points_name_existing_modules():
    setuptools = _pyproject()["tool"]["setuptools"]
    assert sorted(setuptools["packages"]) == ["metasgd_rl", "metasgd_rl_envs"]
    assert setuptools["package-dir"] == {"metasgd_rl_envs": "envs"}
    folders = {"metasgd_rl": ROOT / "metasgd_rl", "metasgd_rl_envs": ROOT / "envs"}
    entry_points = _pyproject()["project"]["entry-points"][GROUP]
    for family_id, value in entry_points.items():
        module, _, attr = value.partition(":")
        package, _, submodule = module.partition(".")
        assert package in folders, (family_id, value)
        source = folders[package] / f"{submodule}.py"
        assert source.is_file(), (family_id, value)
        names = {node.name for node in ast.parse(source.read_text()).body
                 if isinstance(node, ast.ClassDef | ast.FunctionDef)}
        assert attr in names, (family_id, value)


def _imported_names(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_no_source_file_imports_a_top_level_envs_package():
    files = [path for folder in ("metasgd_rl", "envs", "tests", "scripts", "examples")
             for path in (ROOT / folder).rglob("*.py")]
    offenders = {str(path.relative_to(ROOT)): sorted(name for name in _imported_names(ast.parse(path.read_text()))
                                                     if name == "envs" or name.startswith("envs."))
                 for path in files}
    assert {path: names for path, names in offenders.items() if names} == {}


# a fresh interpreter outside the repository, as a user's program would run
INSTALLED = """
import importlib, importlib.metadata as md, json, sys
import metasgd_rl
points = md.entry_points(group="metasgd_rl.task_families")
points = [ep for ep in points if ep.dist is not None and ep.dist.name == "metasgd-rl"]
loaded = {}
for ep in points:
    module, _, attr = ep.value.partition(":")
    loaded[ep.name] = [module, getattr(importlib.import_module(module), attr).__module__]
import metasgd_rl_envs
print(json.dumps({"loaded": loaded, "metasgd_rl": metasgd_rl.__file__, "metasgd_rl_envs": metasgd_rl_envs.__file__,
                  "envs_imported": "envs" in sys.modules}))
"""


def test_installed_entry_points_resolve_to_metasgd_rl_envs_and_no_top_level_envs_is_imported(tmp_path):
    result = subprocess.run([sys.executable, "-c", INSTALLED], capture_output=True, text=True, cwd=tmp_path,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    declared = _pyproject()["project"]["entry-points"][GROUP]
    assert {family_id: value.partition(":")[0] for family_id, value in declared.items()} == {
        family_id: module for family_id, (module, _) in report["loaded"].items()
    }, "the installed metadata differs from pyproject.toml: reinstall (make install)"
    assert {module for module, _ in report["loaded"].values()} >= {"metasgd_rl_envs.navigation",
                                                                    "metasgd_rl_envs.discrete"}
    assert all(defined == module for module, defined in report["loaded"].values())
    assert report["envs_imported"] is False
    # the families come from the same tree as the library (not from another checkout's editable install)
    library = Path(report["metasgd_rl"]).parents[1]
    assert Path(report["metasgd_rl_envs"]) == library / "envs" / "__init__.py"


# Issue: `pip install -e ".[mujoco]"` (then MuJoCo 4) followed by `pip install -e ".[metaworld]"` (metaworld pins
# mujoco==3.3.0) left a MuJoCo that did not import. The extras must agree on one MuJoCo.


def _extra_requirement(extra: str, name: str) -> Requirement:
    """The requirement on ``name`` that pyproject.toml's optional dependency ``extra`` declares."""
    declared = [Requirement(text) for text in _pyproject()["project"]["optional-dependencies"][extra]]
    found = [requirement for requirement in declared if canonicalize_name(requirement.name) == name]
    assert len(found) == 1, f"[{extra}] should name {name} once: {declared}"
    return found[0]


def _metaworlds_mujoco_pins() -> list[str]:
    """The MuJoCo versions that the installed metaworld pins (``mujoco==X``), from its metadata."""
    try:
        requires = importlib.metadata.requires("metaworld") or []
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("metaworld is not installed: its MuJoCo pin is read from its metadata")
    mujoco = [requirement for requirement in map(Requirement, requires)
              if canonicalize_name(requirement.name) == "mujoco" and requirement.marker is None]
    assert mujoco, f"metaworld's requirements name no mujoco: {requires}"
    return [spec.version for requirement in mujoco for spec in requirement.specifier if spec.operator in ("==", "===")]


def test_the_mujoco_extra_admits_the_mujoco_that_metaworld_pins_and_no_other_major_version():
    ours = _extra_requirement("mujoco", "mujoco").specifier
    pins = _metaworlds_mujoco_pins()
    assert pins, "metaworld no longer pins one MuJoCo: check the [mujoco] extra against its range by hand"
    for pinned in pins:
        assert ours.contains(pinned), f"[mujoco] requires mujoco{ours}, metaworld pins mujoco=={pinned}"
        major = Version(pinned).major
        assert not ours.contains(f"{major + 1}.0.0") and not ours.contains(f"{major + 1}.0.1"), (
            f"[mujoco] admits MuJoCo {major + 1} (mujoco{ours}) while metaworld pins {pinned}")


def test_the_mujoco_extra_admits_no_mujoco_without_the_batched_rollout():
    from metasgd_rl.native_mujoco import MIN_MUJOCO

    ours = _extra_requirement("mujoco", "mujoco").specifier
    minimum = Version(".".join(map(str, MIN_MUJOCO)))
    older = [version for version in ("2.3.7", "3.0.0", "3.2.6") if Version(version) < minimum]
    assert older and not any(ours.contains(version) for version in older), f"mujoco{ours} admits one < {minimum}"


def _install_line_extras(text: str) -> list[str]:
    """The extras of every ``pip install ... -e ".[a,b]"`` in ``text``."""
    return re.findall(r'pip install[^\n]*?-e "\.\[([\w,-]+)\]"', text)


def test_the_makefile_installs_every_extra_the_readme_says_and_each_exists():
    extras = set(_pyproject()["project"]["optional-dependencies"])
    makefile = _install_line_extras((ROOT / "Makefile").read_text())
    assert len(makefile) == 1, makefile
    assert set(makefile[0].split(",")) <= extras
    assert "make test" in (ROOT / ".ci" / "run").read_text()  # CI installs through the Makefile
    for page in ("README.md", "docs/getting-started.md"):
        assert _install_line_extras((ROOT / page).read_text(encoding="utf-8")) == makefile, page
