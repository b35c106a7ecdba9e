"""Source-tree alias: ``import metasgd_rl_envs`` from a checkout takes that checkout's ``envs/`` folder.

The built-in families live in the folder ``envs/`` and install as the package ``metasgd_rl_envs``
(``[tool.setuptools.package-dir]`` in ``pyproject.toml``). An editable install resolves that name with a finder
that setuptools appends to ``sys.meta_path``, bound to the checkout that was installed, so a folder on
``sys.path`` cannot shadow it the way this tree's ``metasgd_rl/`` shadows the installed one. This module (not
installed: ``packages`` in ``pyproject.toml`` names only the two packages) fills that gap for a Python that has
this tree on ``sys.path`` (``PYTHONPATH=<tree>``, the working directory, pytest's rootdir): it loads
``envs/__init__.py`` as the package ``metasgd_rl_envs``, whose submodules then come from the same folder.
"""

import importlib.util
import sys
from pathlib import Path

_folder = Path(__file__).resolve().with_name("envs")
_spec = importlib.util.spec_from_file_location(__name__, _folder / "__init__.py",
                                               submodule_search_locations=[str(_folder)])
_package = importlib.util.module_from_spec(_spec)
sys.modules[__name__] = _package  # the import statement returns what sys.modules holds: the package
_spec.loader.exec_module(_package)
