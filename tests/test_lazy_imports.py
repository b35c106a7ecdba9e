"""The package imports its modules on first use: a Ray rollout actor (which imports :mod:`metasgd_rl.rollout_worker`)
starts without torch, Stable-Baselines3 or the report code, while the public names work as with eager imports.

Each check runs in a fresh interpreter: this one has imported everything already.
"""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path

import metasgd_rl

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ["torch", "stable_baselines3", "matplotlib", "tensorboard", "metasgd_rl.model", "metasgd_rl.report",
         "metasgd_rl.cli", "metasgd_rl.sampler"]


def fresh(code: str) -> dict:
    """Run ``code`` in a fresh interpreter; what it printed as its last line, as JSON."""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_rollout_worker_module_imports_nothing_heavy():
    loaded = fresh("import json, sys\n"
                   "import metasgd_rl.rollout_worker\n"
                   f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))")
    assert loaded == []


def test_importing_the_package_imports_torch_only_when_a_name_is_used():
    seen = fresh("import json, sys\n"
                 "import metasgd_rl\n"
                 "out = {'torch_on_import': 'torch' in sys.modules, 'dir': dir(metasgd_rl)}\n"
                 "out['attribute'] = metasgd_rl.MetaSGD.__module__\n"
                 "out['torch_after_use'] = 'torch' in sys.modules\n"
                 "from metasgd_rl import MetaSGD, make_task_family\n"
                 "out['from_import'] = [MetaSGD.__name__, make_task_family.__name__]\n"
                 "namespace = {}\n"
                 "exec('from metasgd_rl import *', namespace)\n"
                 "out['star'] = sorted(n for n in namespace if n != '__builtins__')\n"
                 "out['submodule'] = metasgd_rl.callbacks.BaseCallback.__module__\n"
                 "try:\n"
                 "    metasgd_rl.NoSuchName\n"
                 "except AttributeError as err:\n"
                 "    out['missing'] = str(err)\n"
                 "print(json.dumps(out))")
    assert seen["torch_on_import"] is False
    assert set(metasgd_rl.__all__) <= set(seen["dir"])
    assert seen["attribute"] == "metasgd_rl.model" and seen["torch_after_use"] is True
    assert seen["from_import"] == ["MetaSGD", "make_task_family"]
    assert seen["star"] == sorted(metasgd_rl.__all__)
    assert seen["submodule"] == "metasgd_rl.callbacks"
    assert seen["missing"] == "module 'metasgd_rl' has no attribute 'NoSuchName'"


def test_every_public_name_is_imported_from_the_same_module_for_static_tools_and_at_run_time():
    """The imports under TYPE_CHECKING (what the API pages and type checkers read) are the lazy table's names."""
    tree = ast.parse((ROOT / "metasgd_rl" / "__init__.py").read_text())
    static = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for stmt in node.body:
                assert isinstance(stmt, ast.ImportFrom)
                static.update({alias.name: stmt.module.removeprefix("metasgd_rl.") for alias in stmt.names})
    assert static == metasgd_rl._EXPORTS
    assert sorted(static) == sorted(metasgd_rl.__all__)
    for name in metasgd_rl.__all__:
        assert getattr(metasgd_rl, name) is getattr(importlib.import_module(f"metasgd_rl.{static[name]}"), name)
