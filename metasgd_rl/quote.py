"""Quoting a user's value in a one-line message: short, and cheap to compute however large the value is.

A config value can be megabytes once printed (a list of a million numbers, a YAML alias bomb's expansion); an error
message quotes at most about 80 characters of it. This module imports nothing of the package, so that every module
(config, memory, limits, ...) may use it.
"""

from __future__ import annotations

import reprlib
from typing import Any

_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxdict, _SHORT.maxlist, _SHORT.maxtuple = 4, 6, 6, 6
_SHORT.maxstring, _SHORT.maxlong, _SHORT.maxother = 60, 40, 60


def short_repr(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to about ``limit`` characters, for quoting a user's value in a one-line message; its
    cost is bounded too (reprlib looks at a few items of each container, not at all of them)."""
    try:
        text = _SHORT.repr(value)
    except ValueError:  # an int beyond Python's digit limit for str()
        text = f"<{type(value).__name__}>"
    return short_text(text, limit)


def short_text(text: str, limit: int = 80) -> str:
    """``text`` cut to ``limit`` characters (the last three ``...``)."""
    return text if len(text) <= limit else text[: limit - 3] + "..."
