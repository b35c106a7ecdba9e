"""Fast-adaptation baselines on 2D navigation, on the same held-out tasks and rollout seeds as the meta-learners.

    python scripts/baselines_navigation.py                                   # baselines only
    python scripts/baselines_navigation.py --model runs/nav-metasgd-500/final.pt --model runs/nav-maml-500/final.pt
    python scripts/baselines_navigation.py --ppo-tasks 2 --ppo-multipliers 1 10 --pretrain-iterations 20  # quick

Methods, each evaluated with ``evaluate_adaptation`` on ``--eval-tasks`` held-out tasks sampled once
(``family.sample_tasks(n, np.random.default_rng(--seed), split="test")``, the tasks of
``scripts/reproduce_navigation.py`` with the same seed) and the same rollout seed:
- every ``--model`` checkpoint (Meta-SGD or MAML ``final.pt``);
- "pretrained": θ trained for ``--pretrain-iterations`` on the average pre-update return of training tasks
  (``metasgd_rl.baselines.pretrain_multitask``, TRPO by default), fine-tuned with vanilla policy gradient;
- "random init": an untrained θ, fine-tuned the same way.
Fine-tuning uses α = ``--step-size`` and the first model's policy size, episodes and advantage settings
(the MAML protocol's when no model is given). Then SB3 PPO from scratch on the first ``--ppo-tasks`` of those
tasks with ``--ppo-multipliers`` × the transitions that ``--budget-steps`` adaptation steps use per task
(episodes × horizon × steps: 20 × 100 × 1 = 2,000 by default, so 2k / 20k / 200k steps). SB3 PPO runs at
about 370 env steps/s here (one torch thread, 2×100 ReLU nets, n_steps 2000, batch 50, 10 epochs; measured
while another job shared the CPU): 1×/10×/100× is 222,000 steps, about 10 minutes per task.

Prints two markdown tables (returns ± 95% t-intervals over tasks) and the PPO budget that matches each
method's return, and writes a report into ``--out`` (``report.md`` with the adaptation curves of all methods,
α and trajectories, ``results.json``) and the PPO numbers and timings (``baselines.json``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

import metasgd_rl as msr
from metasgd_rl.baselines import (
    FINE_TUNE_KEYS,
    adaptation_samples,
    budget_to_match,
    ppo_from_scratch,
    pretrain_multitask,
    random_init,
)
from metasgd_rl.command_line import shown_command
from metasgd_rl.io import atomic_write_text
from metasgd_rl.report import adaptation_table, write_report
from metasgd_rl.stats import mean_ci95


def cell(values: np.ndarray) -> str:
    mean, half = mean_ci95(values)
    return f"{mean:.1f} ± {half:.1f}" if np.isfinite(half) else f"{mean:.1f}"


def budget_cell(match: float | None, budgets: list[int]) -> str:
    """A matching budget: "> largest" when PPO never reached it, "≤ smallest" when it did at once."""
    if match is None:
        return f"> {budgets[-1]:,}"
    return f"≤ {budgets[0]:,}" if match <= budgets[0] else f"{match:,.0f}"


def main() -> None:
    msr.reuse_freed_memory()  # as the CLI does: freed tensors' memory is reused (faster)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, action="append", default=[], help="a trained final.pt (repeatable)")
    parser.add_argument("--family", default="Navigation2D-v0")
    parser.add_argument("--eval-tasks", type=int, default=40)
    parser.add_argument("--steps", type=int, default=3, help="fine-tuning steps evaluated (0..steps)")
    parser.add_argument("--episodes", type=int, default=20, help="episodes per task and step")
    parser.add_argument("--seed", type=int, default=2026, help="held-out tasks and rollouts (same for all methods)")
    parser.add_argument("--step-size", type=float, default=0.1, help="α of the baselines' vanilla PG steps")
    parser.add_argument("--pretrain-iterations", type=int, default=100)
    parser.add_argument("--pretrain-outer", default="trpo", choices=["trpo", "adam"])
    parser.add_argument("--pretrain-seed", type=int, default=0, help="θ's init and pretraining (and random init)")
    parser.add_argument("--ppo-tasks", type=int, default=5, help="held-out tasks for PPO (0: skip PPO)")
    parser.add_argument("--ppo-multipliers", type=float, nargs="+", default=[1, 10, 100])
    parser.add_argument("--budget-steps", type=int, default=1,
                        help="PPO's 1x budget = the transitions of this many adaptation steps")
    parser.add_argument("--ppo-deterministic", action="store_true", help="evaluate PPO with its mean action")
    parser.add_argument("--out", type=Path, default=Path("runs/baselines-navigation"),
                        help="report folder: report.md, plots, results.json, baselines.json (PPO, timings)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()

    family = msr.make_task_family(args.family)
    tasks = family.sample_tasks(args.eval_tasks, np.random.default_rng(args.seed), split="test")
    models: dict[str, msr.MetaSGD] = {}
    for path in args.model:
        model = msr.MetaSGD.load(path)
        if model.family.id != family.id:
            sys.exit(f"{path} was trained on {model.family.id}, not {family.id}")
        models[f"{type(model).__name__} ({path.parent.name})"] = model
    settings = {k: models[next(iter(models))].config[k] for k in FINE_TUNE_KEYS} if models else {}
    timings: dict[str, float] = {}

    t = time.perf_counter()
    models["pretrained + VPG"] = pretrain_multitask(
        family, iterations=args.pretrain_iterations, outer=args.pretrain_outer, step_size=args.step_size,
        seed=args.pretrain_seed, progress_bar=True, **settings)
    timings["pretrain_s"] = time.perf_counter() - t
    models["random init + VPG"] = random_init(family, step_size=args.step_size, seed=args.pretrain_seed, **settings)

    results = {}
    for name, model in models.items():
        t = time.perf_counter()
        results[name] = msr.evaluate_adaptation(model, steps=args.steps, episodes=args.episodes, tasks=tasks,
                                                seed=args.seed)
        timings[f"evaluate {name} s"] = time.perf_counter() - t

    print(f"{args.family}: return on {len(tasks)} held-out tasks ({args.episodes} episodes per task and step), "
          f"mean ± 95% t-interval over tasks\n\n{adaptation_table(results, digits=1)}")
    sections: list[str] = []  # what report.md gets beyond its adaptation table
    report = {"args": {k: json.loads(json.dumps(v, default=str)) for k, v in vars(args).items()},
              "command": shown_command(__file__), "tasks": tasks,
              "pretrain": {"iterations": args.pretrain_iterations, "outer": args.pretrain_outer,
                           "seed": args.pretrain_seed, "step_size": args.step_size, **settings}}

    if args.ppo_tasks > 0:
        n = min(args.ppo_tasks, len(tasks))
        base = adaptation_samples(args.episodes, args.budget_steps, family)
        budgets = [int(round(m * base)) for m in args.ppo_multipliers]
        t = time.perf_counter()
        ppo = ppo_from_scratch(family, tasks[:n], budgets, eval_episodes=args.episodes, seed=args.seed,
                               deterministic=args.ppo_deterministic, progress_bar=True)
        timings["ppo_s"] = time.perf_counter() - t
        lines = ["| method | data per task (env steps) | return |", "|---|---|---|"]
        for name, result in results.items():
            for k in range(args.steps + 1):
                used = adaptation_samples(args.episodes, k, family)
                lines.append(f"| {name}, {k} step{'' if k == 1 else 's'} | {used:,} | {cell(result.returns[:n, k])} |")
        for j in range(len(budgets)):
            lines.append(f"| PPO from scratch, {args.ppo_multipliers[j]:g}× | {ppo.timesteps[j]:,} | "
                         f"{cell(ppo.returns[:, j])} |")
        matches = {}
        for name, result in results.items():
            matches[name] = [budget_to_match(budgets, ppo.mean(), float(result.returns[:n, k].mean()))
                             for k in range(args.steps + 1)]
        match_lines = ["| method | " + " | ".join(f"after {k}" for k in range(args.steps + 1)) + " |",
                       "|---|" + "---|" * (args.steps + 1)]
        for name, row in matches.items():
            match_lines.append(f"| {name} | " + " | ".join(budget_cell(m, budgets) for m in row) + " |")
        ppo_sections = [
            f"On the first {n} of those tasks, with SB3 PPO from scratch ({args.ppo_multipliers}× the {base:,} "
            f"transitions of {args.budget_steps} adaptation step(s); {ppo.steps_per_second():.0f} env steps/s, "
            f"{timings['ppo_s']:.0f} s)", "\n".join(lines),
            f"PPO env steps to match each method's mean return on those tasks (log-linear between budgets; "
            f"'> {budgets[-1]:,}': not within the budgets; '≤ {budgets[0]:,}': already at the smallest)",
            "\n".join(match_lines)]
        print("\n\n" + "\n\n".join(ppo_sections))
        sections += ppo_sections
        report["ppo"] = ppo.to_dict()
        report["ppo_budget_base"] = base
        report["ppo_budget_to_match"] = matches
    timings["total_s"] = time.perf_counter() - start
    report["timings"] = timings
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "baselines.json", json.dumps(report, indent=1))
    notes = "## PPO from scratch\n\n" + "\n\n".join(sections) if sections else None
    path = write_report(args.out, results, models=models, command=report["command"],
                        title=f"Baselines on {args.family}", notes=notes)
    print(f"\nwrote {path} and {args.out / 'baselines.json'} ({timings['total_s']:.0f} s)")


if __name__ == "__main__":
    main()
