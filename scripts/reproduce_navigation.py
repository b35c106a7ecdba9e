"""Meta-SGD vs MAML on both 2D-navigation variants over several seeds (MAML / Meta-SGD RL protocol).

    python scripts/reproduce_navigation.py                           # 2 variants x 2 methods x 5 seeds
    python scripts/reproduce_navigation.py --seeds 0 1 2 --iterations 500 --jobs 2 --out runs/repro-500
    # ablations of Meta-SGD, scored on validation tasks of the training distribution (never the test tasks):
    python scripts/reproduce_navigation.py --variants Navigation2D-v0 --seeds 0 1 2 --eval-split train \\
        --ablation lvc=estimator=lvc --ablation tensor=alpha_granularity=tensor --report-dir runs/ablation

For every (variant, method, seed) it trains with ``metasgd-rl train configs/navigation2d-{metasgd,maml}.yaml``
(the papers' settings; ``--iterations`` meta-iterations, the family set to the variant), in ``--jobs`` parallel
processes of one torch thread each. ``--ablation NAME=KEY=VALUE[,KEY=VALUE...]`` adds a method: the Meta-SGD
config with those overrides. Runs live in ``--out``/runs/VARIANT/METHOD-seedS; a finished run (``final.pt``) is
reused, an interrupted one resumed, so a reproduction continues where it stopped and ablations reuse the
Meta-SGD and MAML runs.

Then every model is evaluated on the *same* tasks of its variant with the same rollout seed (``--eval-tasks``
held-out tasks from ``split="test"``, or validation tasks from the training distribution with
``--eval-split train``, 0..``--eval-steps`` inner steps of ``--eval-episodes`` episodes). Per run, the score after
k steps is the mean over tasks; the table gives the mean over seeds ± a 95% t-interval over seeds, and for every
method but MAML Welch's t-test against MAML over seeds at each step (difference of means, its 95% interval,
p-value). Writes ``results.md``, ``results.json``, ``adaptation.png`` and ``learning_curves.png`` into
``--report-dir`` (default ``--out``).
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
import yaml  # noqa: E402

import metasgd_rl as msr  # noqa: E402
from metasgd_rl.command_line import shown_command
from metasgd_rl.io import atomic_write_text  # noqa: E402
from metasgd_rl.report import save_png  # noqa: E402
from metasgd_rl.study import plot_seed_adaptation, seed_arrays, seed_rows, step_header, summarise_seeds  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = ("Navigation2D-v0", "Navigation2D-RandomStart-v0")
METHODS = ("metasgd", "maml")
LABELS = {"metasgd": "Meta-SGD", "maml": "MAML"}


def parse_ablation(text: str) -> tuple[str, list[str]]:
    """``NAME=KEY=VALUE[,KEY=VALUE...]`` -> (NAME, ["KEY=VALUE", ...])."""
    name, _, overrides = text.partition("=")
    sets = [s for s in overrides.split(",") if s]
    if not name or name in METHODS or not sets or not all("=" in s for s in sets):
        raise argparse.ArgumentTypeError(f"--ablation {text!r} is not allowed; use NAME=KEY=VALUE[,KEY=VALUE...] "
                                         f"with a NAME other than {list(METHODS)}")
    return name, sets


def run_dir(out: Path, variant: str, method: str, seed: int) -> Path:
    return out / "runs" / variant / f"{method}-seed{seed}"


def train(out: Path, variant: str, method: str, seed: int, iterations: int, sets: list[str]) -> float:
    """Train one run unless its final.pt exists; returns the wall time in seconds (0 when reused).

    ``method`` is "metasgd", "maml" or an ablation name; ``sets`` its config overrides.
    """
    directory = run_dir(out, variant, method, seed)
    if (directory / "final.pt").exists():
        trained = yaml.safe_load((directory / "config.yaml").read_text())["iterations"]
        if trained != iterations:
            raise SystemExit(f"{directory} was trained for {trained} iterations, not --iterations {iterations}; "
                             "use another --out")
        return 0.0
    config = "maml" if method == "maml" else "metasgd"
    command = [sys.executable, "-m", "metasgd_rl", "train", str(ROOT / "configs" / f"navigation2d-{config}.yaml"),
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
                                     seed=args.eval_seed, split=args.eval_split)
    return {"per_step": result.mean().tolist(), "per_task": result.returns.tolist()}


def learning_curve(out: Path, variant: str, method: str, seed: int) -> tuple[np.ndarray, float]:
    """Post-adaptation return on the training tasks per iteration, and the summed seconds per iteration."""
    with open(run_dir(out, variant, method, seed) / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    return np.array([float(row["post_return"]) for row in rows]), sum(float(row["seconds"]) for row in rows)


def summarise(scores: dict, variants: list[str], methods: list[str]) -> dict:
    """Per variant: :func:`~metasgd_rl.study.summarise_seeds` of its methods' per-seed scores."""
    return {v: summarise_seeds(seed_arrays({m: {s: r["per_step"] for s, r in scores[v][m].items()}
                                            for m in methods})) for v in variants}


def markdown(summary: dict, variants: list[str], labels: dict, steps: int, n_seeds: int, split: str = "test") -> str:
    lines = ["| variant | method | " + " | ".join(step_header(steps)) + " |", "|---|---|" + "---|" * (steps + 1)]
    for variant in variants:
        lines += seed_rows(variant, summary[variant], labels)
    tasks = "held-out" if split == "test" else "validation (training-distribution)"
    lines.append(f"\nMean over {n_seeds} seeds ± 95% t-interval over seeds; each seed's score is its mean return "
                 f"over the same {tasks} tasks. A difference row: the method's mean minus MAML's ± its 95% Welch "
                 "interval, and the two-sided p-value of Welch's t-test over seeds.")
    return "\n".join(lines)


def plot(out: Path, summary: dict, curves: dict, variants: list[str], methods: list[str], labels: dict) -> None:
    fig, axes = plt.subplots(1, len(variants), figsize=(5 * len(variants), 3.6), squeeze=False)
    for ax, variant in zip(axes[0], variants, strict=True):
        plot_seed_adaptation(ax, summary[variant], labels, title=variant)
    _save(fig, out / "adaptation.png")
    fig, axes = plt.subplots(1, len(variants), figsize=(5 * len(variants), 3.6), squeeze=False)
    for ax, variant in zip(axes[0], variants, strict=True):
        for method in methods:
            runs = np.array(list(curves[variant][method].values()))
            mean = runs.mean(0)
            ax.plot(np.arange(1, len(mean) + 1), mean, label=f"{labels[method]} (mean of {len(runs)} seeds)")
            ax.fill_between(np.arange(1, len(mean) + 1), runs.min(0), runs.max(0), alpha=0.15)
        ax.set(title=variant, xlabel="meta-iteration", ylabel="post-adaptation return (training tasks)")
        ax.legend(fontsize="small")
    _save(fig, out / "learning_curves.png")


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    save_png(fig, path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--ablation", type=parse_ablation, action="append", default=[],
                        metavar="NAME=KEY=VALUE[,KEY=VALUE]", help="a Meta-SGD variant with config overrides")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=2, help="training processes at once (one torch thread each)")
    parser.add_argument("--eval-tasks", type=int, default=40)
    parser.add_argument("--eval-steps", type=int, default=3)
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument("--eval-seed", type=int, default=2026, help="evaluation tasks and rollouts (same for all)")
    parser.add_argument("--eval-split", default="test", choices=["test", "train"],
                        help="'train' draws validation tasks from the training distribution, for ablations that "
                             "must not be tuned on the test tasks")
    parser.add_argument("--out", type=Path, default=Path("runs/reproduce-navigation"), help="runs live here")
    parser.add_argument("--report-dir", type=Path, default=None, help="where the tables and plots go (--out)")
    args = parser.parse_args()
    report_dir = args.out if args.report_dir is None else args.report_dir
    torch.set_num_threads(1)
    sets = {m: [] for m in args.methods} | {name: overrides for name, overrides in args.ablation}
    labels = LABELS | {name: f"Meta-SGD, {', '.join(overrides)}" for name, overrides in args.ablation}
    methods = list(sets)
    jobs = [(v, m, s) for v in args.variants for m in methods for s in args.seeds]
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        walls = list(pool.map(lambda job: train(args.out, *job, args.iterations, sets[job[1]]), jobs))
    train_wall = time.perf_counter() - start
    print(f"trained {sum(w > 0 for w in walls)} runs ({len(jobs) - sum(w > 0 for w in walls)} reused) in "
          f"{train_wall:.0f} s", flush=True)

    scores: dict = {v: {m: {} for m in methods} for v in args.variants}
    curves: dict = {v: {m: {} for m in methods} for v in args.variants}
    run_seconds: dict = {v: {m: {} for m in methods} for v in args.variants}
    tasks = {}
    for variant in args.variants:
        family = msr.make_task_family(variant)
        tasks[variant] = family.sample_tasks(args.eval_tasks, np.random.default_rng(args.eval_seed),
                                             split=args.eval_split)
        for method in methods:
            for seed in args.seeds:
                scores[variant][method][seed] = evaluate(args.out, variant, method, seed, tasks[variant], args)
                curves[variant][method][seed], run_seconds[variant][method][seed] = learning_curve(
                    args.out, variant, method, seed)
    summary = summarise(scores, args.variants, methods)
    table = markdown(summary, args.variants, labels, args.eval_steps, len(args.seeds), args.eval_split)
    command = shown_command(__file__)
    total = time.perf_counter() - start
    seconds = [s for v in run_seconds.values() for m in v.values() for s in m.values()]
    report = (f"# Meta-SGD vs MAML on 2D navigation\n\n`{command}`\n\n{table}\n\n"
              f"{args.iterations} meta-iterations per run; {len(seconds)} runs took {np.mean(seconds):.0f} s each "
              f"on average ({np.mean(seconds) / args.iterations:.2f} s per iteration, one torch thread, "
              f"{args.jobs} runs at a time); this invocation trained for {train_wall:.0f} s, total {total:.0f} s."
              "\n\n![adaptation](adaptation.png)\n\n![learning curves](learning_curves.png)\n")
    report_dir.mkdir(parents=True, exist_ok=True)
    plot(report_dir, summary, curves, args.variants, methods, labels)
    atomic_write_text(report_dir / "results.json", json.dumps(
        {"command": command, "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
         "labels": labels, "summary": summary, "scores": scores, "tasks": tasks, "run_seconds": run_seconds,
         "train_wall_s": train_wall, "total_wall_s": total}, indent=1))
    atomic_write_text(report_dir / "results.md", report)
    print(table)
    print(f"wrote {report_dir}/results.md (total {total:.0f} s)")


if __name__ == "__main__":
    main()
