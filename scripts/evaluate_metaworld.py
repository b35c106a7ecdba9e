"""Meta-World's own meta-RL evaluation of trained runs, per environment class, mean and IQM over seeds.

    python scripts/evaluate_metaworld.py runs/metaworld/ml1-push-*-s* --out docs/metaworld/ml1-push/protocol

Each RUN (a run directory, whose final.pt or else checkpoint.pt is used, or a checkpoint file) is evaluated with
``metaworld.evaluation.metalearning_evaluation`` over every test goal of its benchmark (see
``envs/metaworld_protocol.py``: one sub-env per class and 50 rounds by default, 10 adaptation episodes, one inner
step, 3 evaluation episodes ending at success). Results are cached per checkpoint digest and settings in
``OUT/runs/``, so adding a seed re-evaluates only that run. ``OUT/results.md`` and ``OUT/results.json`` give, per
method, the success rate of each seed, their mean ± 95 % t-interval and interquartile mean (Meta-World+'s
aggregate), the per-goal success before and after adaptation, and each class's success (mean over seeds).
Episodes run at each run's own horizon; ``--horizon 500`` counts success within the 500 steps of Meta-World's
environments and papers instead (cached apart).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from metasgd_rl.command_line import shown_command, shown_path
from metasgd_rl.io import atomic_write_text
from metasgd_rl_envs.metaworld_protocol import evaluate_checkpoint, summarise_protocol_runs


def checkpoint_of(path: Path) -> Path:
    if path.is_dir():
        for name in ("final.pt", "checkpoint.pt"):
            if (path / name).is_file():
                return path / name
        raise SystemExit(f"{path}: no final.pt or checkpoint.pt in this run directory")
    if not path.is_file():
        raise SystemExit(f"{path}: no such run directory or checkpoint")
    return path


def benchmark_title(result: dict[str, Any]) -> str:
    """The benchmark a protocol result is for: ``"ML1 push-v3"`` (ML1 names its task), ``"ML10"``."""
    return " ".join(filter(None, (result["benchmark"], result["env_name"])))


def markdown(summary: dict[str, Any], results: list[dict[str, Any]], command: str) -> str:
    first = results[0]
    lines = [f"# Meta-World {benchmark_title(first)}: the benchmark's evaluation", "", "    " + command, "",
             f"`metaworld.evaluation.metalearning_evaluation` on all {len(first['classes'])} {first['split']} "
             f"class(es) × 50 goals ({first['envs_per_class']} sub-env(s) per class, {first['rounds']} rounds), "
             f"{first['adaptation_episodes']} adaptation episodes, {first['adaptation_steps']} inner step(s), "
             f"{first['evaluation_episodes']} evaluation episodes ending at success; horizon {first['horizon']}; "
             f"benchmark seed {first['benchmark_seed']}; {'mean' if first['deterministic'] else 'sampled'} actions.",
             "", "| method | seeds | success (Meta-World's count): mean ± 95 % | IQM | per goal, before adaptation "
             "| per goal, after |", "|---|---|---|---|---|---|"]
    for method, s in summary.items():
        cells = [f"{s['success']['mean']:.3f} ± {s['success']['ci95']:.3f}" if np.isfinite(s["success"]["ci95"])
                 else f"{s['success']['mean']:.3f}", f"{s['success']['iqm']:.3f}",
                 f"{s['per_goal_before']['mean']:.3f}", f"{s['per_goal_after']['mean']:.3f}"]
        lines.append(f"| {method} | {len(s['runs'])} | " + " | ".join(cells) + " |")
    classes = sorted({c for s in summary.values() for c in s["classes"]})
    if len(classes) > 1:
        lines += ["", "Success per class (Meta-World's count, mean over seeds):", "",
                  "| method | " + " | ".join(classes) + " |", "|---|" + "---|" * len(classes)]
        for method, s in summary.items():
            lines.append(f"| {method} | " + " | ".join(f"{s['classes'].get(c, float('nan')):.2f}" for c in classes)
                         + " |")
    lines += ["", "Runs:", ""] + [f"- {r['label']}: iteration {r['iteration']}, success {r['success']:.3f}, per goal "
                                   f"{r['per_goal_before']:.3f} → {r['per_goal_after']:.3f} "
                                   f"(`{shown_path(r['checkpoint'])}`)" for s in summary.values() for r in s["runs"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="run directories or checkpoint files")
    parser.add_argument("--out", type=Path, required=True, help="folder for results.{md,json} and the cache")
    parser.add_argument("--envs-per-class", type=int, default=1,
                        help="sub-envs per class, a divisor of 50 (default 1: Meta-World's count is per goal)")
    parser.add_argument("--adaptation-episodes", type=int, default=10)
    parser.add_argument("--adaptation-steps", type=int, default=1)
    parser.add_argument("--evaluation-episodes", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0, help="seed of the policy's action noise")
    parser.add_argument("--deterministic", action="store_true", help="the policy's mean in evaluation episodes")
    parser.add_argument("--horizon", type=int, default=None,
                        help="steps per episode (default: the run's own; Meta-World's papers evaluate at 500)")
    args = parser.parse_args()
    if args.horizon is not None and args.horizon < 1:
        parser.error(f"--horizon {args.horizon} is not allowed; use an integer >= 1")

    from metasgd_rl.allocator import reuse_freed_memory

    reuse_freed_memory()
    settings = {"envs_per_class": args.envs_per_class, "adaptation_steps": args.adaptation_steps,
                "adaptation_episodes": args.adaptation_episodes, "evaluation_episodes": args.evaluation_episodes,
                "seed": args.seed, "deterministic": args.deterministic}
    if args.horizon is not None:  # only when asked for, so that the caches of the runs' own horizon stay valid
        settings["horizon"] = args.horizon
    results = [evaluate_checkpoint(checkpoint_of(run), settings, args.out / "runs") for run in args.runs]
    kinds = {(r["benchmark"], r["env_name"], r["benchmark_seed"], r["horizon"]) for r in results}
    if len(kinds) > 1:
        raise SystemExit(f"the runs are on different benchmarks or horizons: {sorted(kinds, key=str)}")
    summary = summarise_protocol_runs(results)
    command = shown_command(__file__)
    text = markdown(summary, results, command)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "results.json", json.dumps({"summary": summary, "runs": results}, indent=1) + "\n")
    atomic_write_text(args.out / "results.md", text)
    print(text)


if __name__ == "__main__":
    main()
