"""Meta-SGD vs MAML on both 2D-navigation variants over several seeds (MAML / Meta-SGD RL protocol).

    python scripts/reproduce_navigation.py                           # 2 variants x 2 methods x 5 seeds
    python scripts/reproduce_navigation.py --seeds 0 1 2 --iterations 500 --jobs 2 --out runs/repro-500

For every (variant, method, seed) it trains with ``metasgd-rl train configs/navigation2d-{metasgd,maml}.yaml``
(the papers' settings; ``--iterations`` meta-iterations, the family set to the variant), in ``--jobs`` parallel
processes of one torch thread each; finished runs (a ``final.pt``) are reused, so an interrupted reproduction
continues where it stopped. Then every model is evaluated on the *same* held-out tasks of its variant with the
same rollout seed (``--eval-tasks`` tasks from ``split="test"``, or validation tasks from the training
distribution with ``--eval-split train`` for ablations, 0..``--eval-steps`` inner steps of
``--eval-episodes`` episodes). Per run, the score after k steps is the mean over tasks; the table gives the mean
over seeds ± a 95% t-interval over seeds, and Welch's t-test of Meta-SGD against MAML over seeds at each step.
Writes ``results.md``, ``results.json``, ``adaptation.png`` and ``learning_curves.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy import stats  # noqa: E402

import metasgd_rl as msr  # noqa: E402
from metasgd_rl.evaluation import t_ci95  # noqa: E402
from metasgd_rl.io import atomic_write_text  # noqa: E402
from metasgd_rl.report import save_png  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = ("Navigation2D-v0", "Navigation2D-RandomStart-v0")
METHODS = ("metasgd", "maml")
LABELS = {"metasgd": "Meta-SGD", "maml": "MAML"}


def run_dir(out: Path, variant: str, method: str, seed: int) -> Path:
    return out / "runs" / variant / f"{method}-seed{seed}"


def train(out: Path, variant: str, method: str, seed: int, iterations: int, sets: list[str]) -> float:
    """Train one run unless its final.pt exists; returns the wall time in seconds (0 when reused)."""
    directory = run_dir(out, variant, method, seed)
    if (directory / "final.pt").exists():
        return 0.0
    command = [sys.executable, "-m", "metasgd_rl", "train", str(ROOT / "configs" / f"navigation2d-{method}.yaml"),
               "--set", f"family={variant}", "--set", f"seed={seed}", "--set", f"iterations={iterations}",
               "--set", "progress_bar=false", "--set", "eval_every=0", "--set", f"checkpoint_every={iterations}"]
    for s in sets:
        command += ["--set", s]
    if directory.exists():  # an interrupted run: continue from its checkpoint
        command = [sys.executable, "-m", "metasgd_rl", "train", "--resume", str(directory)]
    else:
        command += ["--run-dir", str(directory)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"training {variant} {method} seed {seed} failed:\n{proc.stderr[-2000:]}")
    return time.perf_counter() - start


def evaluate(out: Path, variant: str, method: str, seed: int, tasks: list, args: argparse.Namespace) -> dict:
    model = msr.MetaSGD.load(run_dir(out, variant, method, seed) / "final.pt")
    result = msr.evaluate_adaptation(model, steps=args.eval_steps, episodes=args.eval_episodes, tasks=tasks,
                                     seed=args.eval_seed)
    return {"per_step": result.mean().tolist(), "per_task": result.returns.tolist()}


def learning_curve(out: Path, variant: str, method: str, seed: int) -> np.ndarray:
    with open(run_dir(out, variant, method, seed) / "metrics.csv") as f:
        return np.array([float(row["post_return"]) for row in csv.DictReader(f)])


def mean_ci(values: np.ndarray) -> tuple[float, float]:
    """Mean and the half-width of a 95% t-interval over seeds (NaN for one value)."""
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()), float(t_ci95(values))


def summarise(scores: dict, variants: list[str], methods: list[str], steps: int) -> dict:
    summary: dict = {}
    for variant in variants:
        summary[variant] = {}
        for method in methods:
            per_seed = np.array([scores[variant][method][s]["per_step"] for s in sorted(scores[variant][method])])
            summary[variant][method] = [mean_ci(per_seed[:, k]) for k in range(steps + 1)]
        if set(METHODS) <= set(methods):
            a = np.array([v["per_step"] for v in scores[variant]["metasgd"].values()])
            b = np.array([v["per_step"] for v in scores[variant]["maml"].values()])
            summary[variant]["welch_p"] = [float(stats.ttest_ind(a[:, k], b[:, k], equal_var=False).pvalue)
                                           if len(a) > 1 and len(b) > 1 else float("nan") for k in range(steps + 1)]
    return summary


def markdown(summary: dict, variants: list[str], methods: list[str], steps: int, n_seeds: int,
             split: str = "test") -> str:
    head = "| variant | method | " + " | ".join(f"after {k} step{'s' if k != 1 else ''}" for k in range(steps + 1))
    lines = [head + " |", "|---|---|" + "---|" * (steps + 1)]
    for variant in variants:
        for method in methods:
            cells = [f"{m:.1f} ± {h:.1f}" for m, h in summary[variant][method]]
            lines.append(f"| {variant} | {LABELS[method]} | " + " | ".join(cells) + " |")
        if "welch_p" in summary[variant]:
            lines.append(f"| {variant} | Welch p (Meta-SGD vs MAML) | "
                         + " | ".join(f"{p:.3f}" for p in summary[variant]["welch_p"]) + " |")
    lines.append(f"\nMean over {n_seeds} seeds ± 95% t-interval over seeds; each seed's score is its mean return "
                 f"over the same {'held-out' if split == 'test' else 'validation (training-distribution)'} tasks.")
    return "\n".join(lines)


def plot(out: Path, summary: dict, curves: dict, variants: list[str], methods: list[str], steps: int) -> None:
    fig, axes = plt.subplots(1, len(variants), figsize=(5 * len(variants), 3.6), squeeze=False)
    for ax, variant in zip(axes[0], variants, strict=True):
        for method in methods:
            mean = np.array([m for m, _ in summary[variant][method]])
            half = np.nan_to_num(np.array([h for _, h in summary[variant][method]]))
            ax.plot(range(steps + 1), mean, marker="o", label=LABELS[method])
            ax.fill_between(range(steps + 1), mean - half, mean + half, alpha=0.2)
        ax.set(title=variant, xlabel="inner steps on the held-out task", ylabel="return", xticks=range(steps + 1))
        ax.legend()
    _save(fig, out / "adaptation.png")
    fig, axes = plt.subplots(1, len(variants), figsize=(5 * len(variants), 3.6), squeeze=False)
    for ax, variant in zip(axes[0], variants, strict=True):
        for method in methods:
            runs = np.array(list(curves[variant][method].values()))
            mean = runs.mean(0)
            ax.plot(np.arange(1, len(mean) + 1), mean, label=f"{LABELS[method]} (mean of {len(runs)} seeds)")
            ax.fill_between(np.arange(1, len(mean) + 1), runs.min(0), runs.max(0), alpha=0.15)
        ax.set(title=variant, xlabel="meta-iteration", ylabel="post-adaptation return (training tasks)")
        ax.legend()
    _save(fig, out / "learning_curves.png")


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    save_png(fig, path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=2, help="training processes at once (one torch thread each)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="extra config override for every run (e.g. estimator=lvc)")
    parser.add_argument("--eval-tasks", type=int, default=40)
    parser.add_argument("--eval-steps", type=int, default=3)
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument("--eval-seed", type=int, default=2026, help="held-out tasks and rollouts (same for all)")
    parser.add_argument("--eval-split", default="test", choices=["test", "train"],
                        help="'train' draws validation tasks from the training distribution, for ablations that "
                             "must not be tuned on the test tasks")
    parser.add_argument("--out", type=Path, default=Path("runs/reproduce-navigation"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    jobs = [(v, m, s) for v in args.variants for m in args.methods for s in args.seeds]
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        walls = list(pool.map(lambda job: train(args.out, *job, args.iterations, args.sets), jobs))
    train_wall = time.perf_counter() - start
    print(f"trained {sum(w > 0 for w in walls)} runs ({len(jobs) - sum(w > 0 for w in walls)} reused) in "
          f"{train_wall:.0f} s", flush=True)

    scores: dict = {v: {m: {} for m in args.methods} for v in args.variants}
    curves: dict = {v: {m: {} for m in args.methods} for v in args.variants}
    tasks = {}
    for variant in args.variants:
        family = msr.make_task_family(variant)
        tasks[variant] = family.sample_tasks(args.eval_tasks, np.random.default_rng(args.eval_seed),
                                             split=args.eval_split)
        for method in args.methods:
            for seed in args.seeds:
                scores[variant][method][seed] = evaluate(args.out, variant, method, seed, tasks[variant], args)
                curves[variant][method][seed] = learning_curve(args.out, variant, method, seed)
    summary = summarise(scores, args.variants, args.methods, args.eval_steps)
    table = markdown(summary, args.variants, args.methods, args.eval_steps, len(args.seeds), args.eval_split)
    command = "python scripts/reproduce_navigation.py " + " ".join(sys.argv[1:])
    total = time.perf_counter() - start
    report = (f"# Meta-SGD vs MAML on 2D navigation\n\n`{command}`\n\n{table}\n\n"
              f"{args.iterations} meta-iterations per run; training wall time {train_wall:.0f} s with {args.jobs} "
              f"parallel jobs, total {total:.0f} s.\n\n![adaptation](adaptation.png)\n\n"
              "![learning curves](learning_curves.png)\n")
    args.out.mkdir(parents=True, exist_ok=True)
    plot(args.out, summary, curves, args.variants, args.methods, args.eval_steps)
    atomic_write_text(args.out / "results.json", json.dumps(
        {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, "summary": summary,
         "scores": scores, "tasks": tasks, "train_wall_s": train_wall, "total_wall_s": total}, indent=1))
    atomic_write_text(args.out / "results.md", report)
    print(table)
    print(f"wrote {args.out}/results.md (total {total:.0f} s)")


if __name__ == "__main__":
    main()
