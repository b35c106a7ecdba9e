"""The command line a report prints: the same on every machine, and pasteable into a shell.

A study's report opens with the command that made it. ``sys.argv`` holds the paths as this machine spells them
(``/root/runs/...``, ``/home/me/metasgd-rl/docs/...``), so a published report would show another user a path they
do not have. :func:`shown_command` writes paths inside the repository relative to its root and paths under the
home folder as ``~/...``, and quotes every argument for the shell. This module imports nothing of the package.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

#: the repository's root: the folder that holds the ``metasgd_rl`` package
ROOT = Path(__file__).resolve().parent.parent


def shown_path(text: str, root: Path = ROOT, home: Path | None = None) -> str:
    """``text`` shell-quoted; an absolute path inside ``root`` relative to it, one under ``home`` (default: the
    user's home folder) as ``~/...``; ``--option=PATH`` as ``--option PATH`` (the shell expands no ``~`` after
    ``=``, argparse reads both alike); anything else (options, values, relative paths) unchanged."""
    option, equals, value = text.partition("=")
    if text.startswith("--") and equals and os.path.isabs(value):
        return f"{shlex.quote(option)} {shown_path(value, root, home)}"
    if not os.path.isabs(text):
        return shlex.quote(text)
    path = Path(os.path.normpath(text))
    home = Path.home() if home is None else home
    for base, prefix in ((root, ""), (home, "~/")):
        try:
            relative = path.relative_to(base)
        except ValueError:
            continue
        if str(relative) == ".":
            return "." if not prefix else "~"
        return prefix + shlex.quote(str(relative))
    return shlex.quote(text)


def shown_command(script: str | os.PathLike, argv: Sequence[str] | None = None, root: Path = ROOT,
                  home: Path | None = None) -> str:
    """``python SCRIPT ARGS`` for a report: ``script`` (e.g. ``__file__``) and ``argv`` (default
    ``sys.argv[1:]``) through :func:`shown_path`."""
    args = sys.argv[1:] if argv is None else argv
    return " ".join(["python", shown_path(os.path.abspath(script), root, home),
                     *(shown_path(a, root, home) for a in args)])
