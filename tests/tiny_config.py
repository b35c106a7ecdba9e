"""A tiny training config for the run and CLI tests (a few tenths of a second per iteration)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import torch
import yaml

TINY: dict[str, Any] = dict(
    algo="metasgd",
    iterations=4,
    checkpoint_every=2,
    eval_every=2,
    eval_tasks=2,
    progress_bar=False,
    family="Navigation2D-v0",
    policy_kwargs=dict(hidden_sizes=[16]),
    meta_batch_size=2,
    episodes_per_task=2,
    estimator="lvc",
    outer="adam",
    outer_kwargs=dict(lr=0.01),
    seed=0,
)


def write_config(path: Path, **changes: Any) -> Path:
    """Write TINY with ``changes`` (a value of None removes the key) as YAML to ``path``."""
    config = {**TINY, **changes}
    path.write_text(yaml.safe_dump({k: v for k, v in config.items() if v is not None}, sort_keys=False))
    return path


def metrics_rows(run_dir: Path, drop: tuple[str, ...] = ("seconds",)) -> list[dict[str, str]]:
    """metrics.csv as dicts, without the wall-clock columns (``seconds``, ``time/*``: the only ones allowed to
    differ between runs)."""
    with open(run_dir / "metrics.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k not in drop and not k.startswith("time/")}
                for row in csv.DictReader(f)]


def assert_same_state(a: Any, b: Any, where: str = "state") -> None:
    """Exact equality of two nested checkpoint states (dicts, lists, tensors, plain values)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{where}: keys {sorted(a)} != {sorted(b)}"
        for key in a:
            assert_same_state(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), f"{where}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_state(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), f"{where}: tensors differ"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def load_state(path: Path) -> dict[str, Any]:
    """A checkpoint loaded the safe way: tensors and plain values only."""
    return torch.load(path, map_location="cpu", weights_only=True)
