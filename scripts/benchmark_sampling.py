"""Env transitions per second through the sampler vs raw stepping of the same envs, per task family.

    python scripts/benchmark_sampling.py                                  # every built-in family, 40 x 20
    python scripts/benchmark_sampling.py --families HalfCheetahVel-v0 --tasks 40 --episodes 20
    python scripts/benchmark_sampling.py --out bench_results              # also JSON and a markdown table

*Raw*: the family's single-task envs (``family.make_env(task)``, one per sub-env) stepped in a plain Python
loop with pre-drawn random actions until their episodes end: the cost of the simulator alone.
*Sampler*: ``sample_episodes`` on the same tasks with a 2 x 100 ReLU policy with per-task parameters (the
MAML protocol's policy): vector env, one batched policy call per time step, tensors out.
``overhead`` = raw rate / sampler rate (1.0 = sampling costs nothing beyond the simulator; below 1 when a
family's native vector env beats stepping single envs). Medians over ``--repeats`` after one warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import torch

import metasgd_rl as msr
from metasgd_rl.benchmark import sampling_throughput
from metasgd_rl.io import atomic_write_text

SKIP = {"GymEnv-v0"}  # needs a declaration, not a family of its own


def benchmark(family_id: str, tasks: int, episodes: int, horizon: int | None, repeats: int, threads: int) -> dict:
    row = sampling_throughput(family_id, tasks, episodes, repeats=repeats, horizon=horizon, threads=threads)
    row["sampler_steps_per_s"] = row.pop("local_steps_per_s")
    row["overhead"] = row["raw_steps_per_s"] / row["sampler_steps_per_s"]
    return row


def markdown(rows: list[dict]) -> str:
    lines = ["| family | tasks x episodes x horizon | raw env steps/s | sampler steps/s | overhead |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['family']} | {r['tasks']} x {r['episodes']} x {r['horizon']} | {r['raw_steps_per_s']:,.0f} | "
              f"{r['sampler_steps_per_s']:,.0f} | {r['overhead']:.2f}x |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", nargs="+", default=None, help="family ids (default: all registered)")
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--horizon", type=int, default=None, help="override the families' horizons")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--out", type=Path, default=None, help="folder for sampling.json and sampling.md")
    args = parser.parse_args()
    families = args.families or [f for f in msr.list_task_families() if f not in SKIP]
    rows = []
    for family_id in families:
        rows.append(benchmark(family_id, args.tasks, args.episodes, args.horizon, args.repeats, args.threads))
        print(markdown(rows[-1:]).splitlines()[-1], flush=True)
    table = markdown(rows)
    print(f"\ntorch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs "
          f"({platform.processor() or platform.machine()}); medians of {args.repeats} runs")
    print(table)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out / "sampling.json", json.dumps({"rows": rows}, indent=2))
        atomic_write_text(args.out / "sampling.md", table + "\n")


if __name__ == "__main__":
    main()
