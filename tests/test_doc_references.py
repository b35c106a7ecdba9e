"""Every file that the docstrings, the documentation and the README point a reader to is in the repository.

A pointer to a file outside the repository (a design note of the authors, ``../shared/...``) leaves a user of
the API reference with nothing to open. This scans the docstrings of the library, the built-in families, the
scripts and the example, and the markdown of ``docs/``, ``examples/`` and the README, for names of source and
documentation files (``.md``, ``.py``, ``.yaml``, ...) and checks that each one exists in the repository.
Outputs that a run writes (``final.pt``, ``metrics.csv``, ``tasks.jsonl``) are not source files and are not
checked, nor are paths of another project (``maml_rl/envs/mdp.py``) or patterns (``runs/.../config.yaml``).
"""

from __future__ import annotations

import ast
import os
import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# folders that hold no source: the virtual environment, build outputs, caches, runs
SKIPPED = {".git", ".venv", "venv", "build", "dist", "site", "runs", "__pycache__", ".pytest_cache", ".ruff_cache"}
SOURCE_SUFFIXES = "md|py|ya?ml|toml|cfg|ini|sh"
# a file name or a relative path to one: starts at a word boundary that is not inside another path or URL
REFERENCE = re.compile(rf"(?<![\w/.:-])((?:\.\./)*[\w.][\w.-]*(?:/[\w.*-]+)*\.(?:{SOURCE_SUFFIXES}))(?![\w/-])")
URL = re.compile(r"\b\w+://\S+")
# names that stand for the reader's own file in an example, not for a file of this repository
PLACEHOLDERS = {"my_script.py"}


def _repository_files() -> list[Path]:
    """The files of the checkout (relative to the root), without environments, outputs and caches."""
    files = []
    for folder, subfolders, names in os.walk(ROOT):
        subfolders[:] = [name for name in subfolders if name not in SKIPPED and not name.endswith(".egg-info")]
        files += [(Path(folder) / name).relative_to(ROOT) for name in names]
    return files


def _docstrings(path: Path) -> Iterator[str]:
    """The module, class and function docstrings of a Python file, read without importing it."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            if (docstring := ast.get_docstring(node, clean=False)) is not None:
                yield docstring


def _texts(files: list[Path]) -> Iterator[tuple[Path, str]]:
    """(file, text) for every docstring of the code and every markdown page that a reader sees."""
    for file in files:
        top = file.parts[0]
        if file.suffix == ".py" and top in ("metasgd_rl", "envs", "scripts", "examples"):
            yield from ((file, docstring) for docstring in _docstrings(ROOT / file))
        elif file.suffix == ".md" and (top in ("docs", "examples") or file == Path("README.md")):
            yield file, (ROOT / file).read_text(encoding="utf-8")


def _is_missing(reference: str, source: Path, names: set[str], top_level: set[str]) -> bool:
    """Whether ``reference`` (found in ``source``) names a file of this repository that does not exist.

    A bare name (``demo.py``) must be the name of some file of the repository; a path must exist relative to
    the repository's root or, in markdown, to the page; a path that leaves the repository is always missing;
    a path below a folder the repository does not have belongs to another project and is not checked.
    """
    if "*" in reference or reference in PLACEHOLDERS:
        return False
    if "/" not in reference:
        return reference not in names
    bases = [ROOT] + ([(ROOT / source).parent] if source.suffix == ".md" else [])
    inside = [target.relative_to(ROOT) for target in ((base / reference).resolve() for base in bases)
              if target.is_relative_to(ROOT)]  # a file beside the checkout is still outside the repository
    if any((ROOT / target).exists() for target in inside):
        return False
    return not inside or any(target.parts[0] in top_level for target in inside)


def missing_references(files: list[Path]) -> dict[str, list[str]]:
    """{reference: files mentioning it} for every reference to a repository file that does not exist."""
    names = {file.name for file in files}
    top_level = {file.parts[0] for file in files}
    missing: dict[str, set[str]] = {}
    for source, text in _texts(files):
        for reference in REFERENCE.findall(URL.sub(" ", text)):
            if _is_missing(reference, source, names, top_level):
                missing.setdefault(reference, set()).add(str(source))
    return {reference: sorted(sources) for reference, sources in sorted(missing.items())}


def test_docstrings_docs_and_readme_point_only_to_files_in_the_repository():
    assert missing_references(_repository_files()) == {}


def test_the_scan_flags_files_outside_the_repository_and_passes_real_ones():
    files = [Path("metasgd_rl/model.py"), Path("docs/index.md"), Path("docs/guides/ray.md"), Path("README.md")]
    names = {file.name for file in files}
    top_level = {"metasgd_rl", "docs", "README.md"}
    readme = Path("README.md")
    assert _is_missing("DESIGN.md", readme, names, top_level)
    assert _is_missing("../shared/DESIGN.md", readme, names, top_level)
    assert _is_missing("docs/guides/nowhere.md", readme, names, top_level)
    assert not _is_missing("model.py", readme, names, top_level)
    assert not _is_missing("docs/guides/ray.md", readme, names, top_level)
    assert not _is_missing("../index.md", Path("docs/guides/ray.md"), names, top_level)  # relative to the page
    assert not _is_missing("maml_rl/envs/mdp.py", readme, names, top_level)  # another project's file
    assert not _is_missing("runs/*/config.yaml", readme, names, top_level)
    text = "See ``DESIGN.md`` and docs/index.md, not https://example.org/x/NOTES.md or runs/out/final.pt."
    assert REFERENCE.findall(URL.sub(" ", text)) == ["DESIGN.md", "docs/index.md"]
