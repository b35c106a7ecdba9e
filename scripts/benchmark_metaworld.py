"""Meta-World ML1 sampling speed: raw env steps/s vs the sampler (local and Ray), and seconds per meta-iteration.

    python scripts/benchmark_metaworld.py                                  # reach-v3, 10 tasks x 10 episodes x 150
    python scripts/benchmark_metaworld.py --env-name push-v3 --out docs/metaworld

*Raw*: ``family.make_env(task)`` envs stepped in a Python loop with pre-drawn random actions (the simulator's
cost). *Local* / *Ray*: ``sample_episodes`` in this process / a :class:`~metasgd_rl.RaySampler` with
``--ray-workers`` actors, with a 2 x 100 policy holding per-task parameters. Medians over ``--repeats`` after a
warm-up rollout. Then the seconds of a whole meta-iteration (Meta-SGD, TRPO, MAML's estimator) with each sampler,
the median of ``--iterations`` after one warm-up iteration. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

from metasgd_rl.benchmark import in_fresh_process, sampling_throughput, time_meta_iterations
from metasgd_rl.io import atomic_write_text


def markdown(throughput: dict, iterations: list[dict]) -> str:
    t = throughput
    lines = [f"ML1 `{t['env_name']}`: {t['tasks']} tasks x {t['episodes']} episodes x horizon {t['horizon']}, "
             f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), 1 torch thread per process",
             "", "| what | env steps/s |", "|---|---|",
             f"| raw env stepping (one process) | {t['raw_steps_per_s']:,.0f} |",
             f"| sampler, local | {t['local_steps_per_s']:,.0f} |",
             f"| sampler, Ray ({t['ray_workers']} workers) | {t['ray_steps_per_s']:,.0f} |"]
    if iterations:  # ``--iterations 0`` times none: no table rather than a header without rows
        lines += ["", "| sampler | s per meta-iteration | of which sampling | env steps per iteration |",
                  "|---|---|---|---|"]
        lines += [f"| {row['sampler']} | {row['total']:.1f} | {row['sampling']:.1f} | {row['env_steps']:,.0f} |"
                  for row in iterations]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env-name", default="reach-v3")
    parser.add_argument("--tasks", type=int, default=10)
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--horizon", type=int, default=150)
    parser.add_argument("--ray-workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="timed rollouts per sampler")
    parser.add_argument("--iterations", type=int, default=3, help="timed meta-iterations per sampler (0: none)")
    parser.add_argument("--out", type=Path, default=None, help="folder for metaworld-benchmark.{json,md}")
    args = parser.parse_args()

    family_kwargs = {"env_name": args.env_name, "max_episode_steps": args.horizon}
    throughput = sampling_throughput("MetaWorld-ML1-v0", args.tasks, args.episodes, repeats=args.repeats,
                                     samplers=("local", "ray"), ray_workers=args.ray_workers,
                                     family_kwargs=family_kwargs)
    throughput.update(env_name=args.env_name, ray_workers=args.ray_workers)
    print(json.dumps(throughput, indent=1))
    iterations = []
    for sampler in ("local", "ray") if args.iterations > 0 else ():
        row = in_fresh_process(time_meta_iterations, family="MetaWorld-ML1-v0", family_kwargs=family_kwargs,
                               tasks=args.tasks, episodes=args.episodes, repeats=args.iterations, threads=1,
                               sampler=sampler, ray_workers=args.ray_workers, estimator="maml",
                               policy_kwargs={"hidden_sizes": (100, 100), "activation": "tanh"})
        iterations.append(row)
        print(json.dumps(row, indent=1, default=str))
    table = markdown(throughput, iterations)
    print(table)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out / "metaworld-benchmark.json",
                          json.dumps({"throughput": throughput, "iterations": iterations}, indent=1, default=str))
        atomic_write_text(args.out / "metaworld-benchmark.md", table)


if __name__ == "__main__":
    main()
