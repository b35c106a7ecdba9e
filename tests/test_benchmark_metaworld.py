"""The Meta-World speed benchmark's report: the meta-iteration table appears only when iterations were timed."""

from __future__ import annotations

import json
from pathlib import Path

from tests.script_module import load_script

ROOT = Path(__file__).resolve().parent.parent


THROUGHPUT = dict(env_name="push-v3", tasks=10, episodes=10, horizon=150, raw_steps_per_s=689.2,
                  local_steps_per_s=661.0, ray_steps_per_s=1185.4, ray_workers=2)


def table_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("|")]


def test_no_timed_iterations_writes_no_iteration_table():
    text = load_script("benchmark_metaworld").markdown(THROUGHPUT, [])
    assert "s per meta-iteration" not in text
    assert table_lines(text)[-1] == "| sampler, Ray (2 workers) | 1,185 |"
    assert not text.endswith("\n\n")


def test_timed_iterations_are_one_row_each():
    rows = [dict(sampler="local", total=53.2, sampling=44.9, env_steps=30000),
            dict(sampler="ray", total=31.04, sampling=22.5, env_steps=30000)]
    lines = table_lines(load_script("benchmark_metaworld").markdown(THROUGHPUT, rows))
    header = lines.index("| sampler | s per meta-iteration | of which sampling | env steps per iteration |")
    assert lines[header + 2:] == ["| local | 53.2 | 44.9 | 30,000 |", "| ray | 31.0 | 22.5 | 30,000 |"]


def test_the_published_push_report_is_its_json_rendered():
    """docs/metaworld/ml1-push-speed was timed with ``--iterations 0``: its .md is what markdown() makes of its JSON."""
    folder = ROOT / "docs" / "metaworld" / "ml1-push-speed"
    saved = json.loads((folder / "metaworld-benchmark.json").read_text())
    text = load_script("benchmark_metaworld").markdown(saved["throughput"], saved["iterations"])
    assert table_lines(text) == table_lines((folder / "metaworld-benchmark.md").read_text())
