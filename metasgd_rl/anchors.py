"""The papers' numbers as printed, and where a result of ours stands beside one: above, level or below.

A reproduction study puts its numbers beside published ones, and a reader first asks which side of the paper a
result falls on. Published numbers come in several forms, each written here as the paper gives it:

- ``"31.6"``: printed in a table; taken as exact.
- ``"≈ −75"``: read from a plot, so known to a reading tolerance: ± ``tolerance`` (20 %) of its magnitude, and
  at least ± ``floor`` (a plot's reading resolution, so that ``"≈ 0"`` is not a single point).
- ``"320 – 400"``: a range read from a plot (a curve that moves between the two).
- ``"< −200"``, ``"> 10"``: a bound (a baseline's curve that stays under a line).

An empty text means the paper gives no number there. A trailing ``%`` is ignored (success rates).

Where a result stands is decided by its mean: *level* inside the paper's interval, *above* or *below* outside.
With several seeds the result's own 95 % interval says whether that side is clear: a mean outside the paper's
interval whose seed interval still reaches it is reported as not clear ("below, within the seeds' interval"); a
single seed has no interval ("below (one seed)"). :func:`beside_papers` writes a study's table of these.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: a plot read to ±20 % (the papers' figures are small and their curves noisy)
READ_TOLERANCE = 0.2

_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)"
_FORMS = (
    ("approx", re.compile(rf"^≈\s*({_NUMBER})$")),
    ("range", re.compile(rf"^({_NUMBER})\s*[–-]\s*({_NUMBER})$")),
    ("below", re.compile(rf"^<\s*({_NUMBER})$")),
    ("above", re.compile(rf"^>\s*({_NUMBER})$")),
    ("exact", re.compile(rf"^({_NUMBER})$")),
)


@dataclass(frozen=True)
class Anchor:
    """A paper's number as the interval ``[low, high]`` it stands for (``±inf`` for a bound) and its text."""

    low: float
    high: float
    text: str

    @property
    def interval(self) -> str:
        """The interval in words: ``"-90 … -60"``, ``"≤ -200"``, ``"≥ 10"`` or the exact value."""
        if self.low == self.high:
            return f"{self.low:g}"
        if self.low == -math.inf:
            return f"≤ {self.high:g}"
        if self.high == math.inf:
            return f"≥ {self.low:g}"
        return f"{self.low:g} … {self.high:g}"


@dataclass(frozen=True)
class Standing:
    """Where a result stands beside an :class:`Anchor`: ``position`` is ``"above"``, ``"level"`` or ``"below"``;
    ``clear`` says whether the result's 95 % interval stays off the anchor's (None: a single seed, no interval)."""

    position: str
    clear: bool | None

    def __str__(self) -> str:
        if self.position == "level" or self.clear:
            return self.position
        return f"{self.position} (one seed)" if self.clear is None else f"{self.position}, within the seeds' interval"


def parse_anchor(text: str, tolerance: float = READ_TOLERANCE, floor: float = 0.0) -> Anchor | None:
    """The interval a paper's number stands for (see the module's forms); None for an empty text.

    Raises ValueError, naming the text, for a form this module does not know (so a typo in a study's table of
    papers' numbers fails when the report is written, not silently as "no number")."""
    cleaned = text.strip().replace("−", "-").removesuffix("%").strip()
    if not cleaned:
        return None
    for form, pattern in _FORMS:
        match = pattern.match(cleaned)
        if match is None:
            continue
        values = [float(v) for v in match.groups()]
        if form == "approx":
            half = max(tolerance * abs(values[0]), floor)
            return Anchor(values[0] - half, values[0] + half, text)
        if form == "range":
            return Anchor(min(values), max(values), text)
        if form == "below":
            return Anchor(-math.inf, values[0], text)
        if form == "above":
            return Anchor(values[0], math.inf, text)
        return Anchor(values[0], values[0], text)
    raise ValueError(f"cannot read the paper's number {text!r}: write it as '31.6', '≈ -75', '320 – 400', "
                     "'< -200' or '> 10'")


def standing(mean: float, half_width: float, anchor: Anchor) -> Standing:
    """Where ``mean`` (± ``half_width``, its 95 % interval; NaN for a single seed) stands beside ``anchor``."""
    if not math.isfinite(mean):
        raise ValueError(f"a result to place beside {anchor.text!r} must be finite, got {mean}")
    if anchor.low <= mean <= anchor.high:
        return Standing("level", True)
    position = "above" if mean > anchor.high else "below"
    if not math.isfinite(half_width):
        return Standing(position, None)
    return Standing(position, not (mean - half_width <= anchor.high and mean + half_width >= anchor.low))


#: a study's papers' numbers: per group (family, benchmark), rows of (label, numbers after 0, 1, ... inner steps as
#: printed, the keys of our rows each is compared with; none: shown for context only)
PaperRows = Mapping[str, Sequence[tuple[str, Sequence[str], Sequence[str]]]]
#: the header of :func:`beside_papers`' rows
BESIDE_HEADER = ["| group | paper | after steps | paper's number (interval) | ours | mean ± 95 % | where we stand |",
                 "|---|---|---|---|---|---|---|"]


def beside_papers(group: str, papers: PaperRows, ours: Mapping[str, Sequence[tuple[float, float]]],
                  labels: Mapping[str, str], floor: float = 0.0,
                  digits: int = 1) -> tuple[list[str], list[dict[str, Any]]]:
    """Each of ``ours`` (``{key: [(mean, 95 % half-width) after each step]}``) beside each paper's number of
    ``group`` it is compared with: markdown rows under :data:`BESIDE_HEADER` and the same as JSON-able records.
    Keys missing from ``ours`` (a baseline not run) are skipped."""
    rows: list[str] = []
    records: list[dict[str, Any]] = []
    for label, numbers, compared in papers.get(group, []):
        for step, text in enumerate(numbers):
            anchor = parse_anchor(text, floor=floor)
            if anchor is None:
                continue
            for key in compared:
                if key not in ours or step >= len(ours[key]):
                    continue
                mean, half = ours[key][step]
                where = standing(mean, half, anchor)
                value = f"{mean:.{digits}f} ± {half:.{digits}f}" if math.isfinite(half) else f"{mean:.{digits}f}"
                rows.append(f"| {group} | {label} | {step} | {text} ({anchor.interval}) | {labels.get(key, key)} | "
                            f"{value} | {where} |")
                records.append({"group": group, "paper": label, "step": step, "paper_number": text,
                                "paper_interval": [anchor.low, anchor.high], "ours": key, "mean": mean,
                                "ci95": half, "position": where.position, "clear": where.clear})
    return rows, records

