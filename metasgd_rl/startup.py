"""A Ctrl-C while the ``metasgd-rl`` command imports the package (torch alone takes a second or two): one line and
exit status 130, not a traceback through torch's import machinery.

``metasgd_rl/__init__.py`` imports this module first, which installs the handler. The package imports its other
modules only when one of its names is first used, so the command's heavy imports (torch, numpy, gymnasium) happen
in :func:`metasgd_rl.cli.main` after its arguments are parsed; it calls :func:`restore` once they are done, and
from then on catches ``KeyboardInterrupt`` itself. Python code that imports the library is left alone: the handler
is installed only in the command's own process (the console script ``metasgd-rl`` or ``python -m metasgd_rl``),
and only where SIGINT has Python's default handler (a process started with SIGINT ignored keeps ignoring it).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

PROG = "metasgd-rl"


def is_the_command() -> bool:
    """Whether this process is the ``metasgd-rl`` command (its console script, or ``python -m metasgd_rl``)."""
    if os.path.basename(sys.argv[0] if sys.argv else "").removesuffix(".exe") == PROG:
        return True
    argv = list(getattr(sys, "orig_argv", []))
    return any(a == "-m" and b == "metasgd_rl" for a, b in zip(argv, argv[1:], strict=False))


def _interrupted(signum: int, frame: Any) -> None:
    # no exception: one raised in the middle of an extension module's import can leave numpy half-loaded (a later
    # "cannot load module more than once") or abort the process from C++; nothing is written yet, so exit at once
    sys.stderr.write(f"{PROG}: interrupted\n")
    sys.stderr.flush()
    os._exit(130)


def install() -> bool:
    """Make SIGINT end the command quietly (exit 130) while it imports; whether the handler was installed."""
    if not is_the_command() or threading.current_thread() is not threading.main_thread():
        return False
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return False
    signal.signal(signal.SIGINT, _interrupted)
    return True


def restore() -> None:
    """Give SIGINT back to Python's default handler (``KeyboardInterrupt``) if :func:`install` replaced it."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is _interrupted:
        signal.signal(signal.SIGINT, signal.default_int_handler)


install()
