"""Time one meta-gradient iteration, stage by stage, and its scaling with the number of tasks.

    python scripts/benchmark.py                        # standard setting: 20 tasks x 20 episodes x 100 steps
    python scripts/benchmark.py --tasks 10 20 40 80    # scaling curve
    python scripts/benchmark.py --out bench_results    # also write JSON and a markdown table

Stages: the pre-update rollout, the inner step (advantages + one second-order policy-gradient step for all
tasks), the post-update rollout, and the meta-gradient (post-update surrogate + backward through the
adaptation into θ and α). Medians over ``--repeats`` runs after one warm-up run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from metasgd_rl import MetaSGD
from metasgd_rl.adaptation import batch_log_probs, inner_step, pg_surrogate
from metasgd_rl.estimators import INNER_FORM
from metasgd_rl.sampler import sample_episodes

STAGES = ("pre_rollout", "inner_step", "post_rollout", "meta_gradient")


def time_iteration(model: MetaSGD, tasks: list, seed: int) -> dict[str, float]:
    """Wall time of each stage of one meta-iteration (mirrors ``estimators.meta_objective``)."""
    times = {}
    ss = np.random.SeedSequence(seed).spawn(2)
    t0 = time.perf_counter()
    params = model.policy.task_parameters(len(tasks))
    pre = sample_episodes(model.family, model.policy, params, tasks, model.episodes_per_task, ss[0])
    t1 = time.perf_counter()
    adapted = inner_step(model.policy, params, model.step_sizes.for_step(0), pre, model.advantages(pre),
                         form=INNER_FORM[model.estimator], create_graph=not model.first_order)
    t2 = time.perf_counter()
    post = sample_episodes(model.family, model.policy, adapted, tasks, model.episodes_per_task, ss[1])
    t3 = time.perf_counter()
    loss = -pg_surrogate(batch_log_probs(model.policy, adapted, post), model.advantages(post), post.mask,
                         "ratio").mean()
    model.policy.zero_grad(set_to_none=True)
    model.step_sizes.zero_grad(set_to_none=True)
    loss.backward()
    t4 = time.perf_counter()
    times.update(pre_rollout=t1 - t0, inner_step=t2 - t1, post_rollout=t3 - t2, meta_gradient=t4 - t3)
    times["total"] = t4 - t0
    transitions = float(pre.mask.sum() + post.mask.sum())
    times["transitions_per_s"] = transitions / (times["pre_rollout"] + times["post_rollout"])
    return times


def benchmark(family: str, tasks: int, episodes: int, hidden: tuple[int, ...], repeats: int, estimator: str,
              first_order: bool) -> dict[str, float]:
    model = MetaSGD(family, policy_kwargs=dict(hidden_sizes=hidden), meta_batch_size=tasks,
                    episodes_per_task=episodes, estimator=estimator, first_order=first_order, seed=0)
    task_list = model.sample_train_tasks(0)
    time_iteration(model, task_list, seed=0)  # warm-up
    runs = [time_iteration(model, task_list, seed=r + 1) for r in range(repeats)]
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def markdown(rows: list[dict]) -> str:
    head = "| tasks | episodes | " + " | ".join(f"{s} (s)" for s in (*STAGES, "total")) + " | env steps/s |"
    sep = "|" + "---|" * (len(STAGES) + 4)
    body = [
        f"| {r['tasks']} | {r['episodes']} | " + " | ".join(f"{r[s]:.3f}" for s in (*STAGES, "total"))
        + f" | {r['transitions_per_s']:,.0f} |"
        for r in rows
    ]
    return "\n".join([head, sep, *body])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", default="Navigation2D-v0")
    parser.add_argument("--tasks", type=int, nargs="+", default=[20])
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--hidden", type=int, nargs="*", default=[100, 100])
    parser.add_argument("--estimator", default="lvc", choices=["maml", "lvc", "dice"])
    parser.add_argument("--first-order", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=None, help="folder for benchmark.json and benchmark.md")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for tasks in args.tasks:
        row = benchmark(args.family, tasks, args.episodes, tuple(args.hidden), args.repeats, args.estimator,
                        args.first_order)
        rows.append({"tasks": tasks, "episodes": args.episodes, **row})
    table = markdown(rows)
    print(f"{args.family}, policy {tuple(args.hidden)}, estimator {args.estimator}, "
          f"{'first' if args.first_order else 'second'} order, torch threads {torch.get_num_threads()}, "
          f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}); medians of {args.repeats} runs")
    print(table)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        meta = {"family": args.family, "hidden": args.hidden, "estimator": args.estimator,
                "first_order": args.first_order, "threads": torch.get_num_threads(), "cpus": os.cpu_count()}
        for name, text in (("benchmark.json", json.dumps({"setting": meta, "rows": rows}, indent=2)),
                           ("benchmark.md", table + "\n")):
            tmp = args.out / (name + ".tmp")
            tmp.write_text(text)
            tmp.replace(args.out / name)


if __name__ == "__main__":
    main()
