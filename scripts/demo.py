"""``make demo``: a short, real Meta-SGD training on Navigation2D, then fast adaptation on held-out goals.

    python scripts/demo.py                       # about a minute on 2 CPU cores
    python scripts/demo.py --iterations 100 --run-dir runs/demo-long

Trains with the protocol config (``configs/navigation2d-metasgd.yaml``: 20 tasks x 20 episodes, 2x100 policy,
TRPO) for a few iterations into a run directory, then evaluates the untrained and the trained
meta-initialisation on the same 40 held-out tasks and rollout seeds: mean return (± 95% CI over tasks) before
adaptation and after 1, 2 and 3 inner steps. Writes ``adaptation.png`` (adaptation curves and the training
curve) into the run directory.

The training is the CLI's, bit for bit: the demo prints the ``metasgd-rl train`` command that gives the same
``final.pt``. It differs from the config in ``--set num_threads=2`` besides the iterations (the configs' default
is 1 thread, and another thread count is another run):

    metasgd-rl train configs/navigation2d-metasgd.yaml --set iterations=40 --set seed=0 --set eval_every=0 \
        --set checkpoint_every=40 --set num_threads=2 --run-dir runs/demo-cli
"""

from __future__ import annotations

import argparse
import csv
import shlex
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from metasgd_rl import AdaptationResult, MetaSGD, evaluate_adaptation, reuse_freed_memory  # noqa: E402
from metasgd_rl.config import build_model, load_config  # noqa: E402
from metasgd_rl.run import Run  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "navigation2d-metasgd.yaml"


def overrides(iterations: int, seed: int, num_threads: int) -> list[str]:
    """The demo's changes to the protocol config, as ``KEY=VALUE`` strings (the CLI's ``--set`` takes the same)."""
    return [f"iterations={iterations}", f"seed={seed}", "eval_every=0", f"checkpoint_every={iterations}",
            f"num_threads={num_threads}"]


def cli_command(iterations: int, seed: int, num_threads: int, run_dir: str) -> str:
    """The ``metasgd-rl train`` command (run from the repository's root) that trains the demo's model bit for bit:
    printed by the demo so that its training can be repeated, resumed or extended from the command line."""
    sets = [word for override in overrides(iterations, seed, num_threads) for word in ("--set", override)]
    return shlex.join(["metasgd-rl", "train", str(CONFIG.relative_to(ROOT)), *sets, "--run-dir", run_dir])


def train(iterations: int, seed: int, num_threads: int, run_dir: str) -> tuple[MetaSGD, Run, float]:
    """The untrained model, the finished training run into ``run_dir`` and its seconds (what ``cli_command``
    trains: the same config and overrides through the same :class:`Run`)."""
    config = load_config(CONFIG, overrides(iterations, seed, num_threads), run_dir=run_dir)
    untrained = build_model(config)
    run = Run.create(config)
    start = time.perf_counter()
    run.train()
    return untrained, run, time.perf_counter() - start


def plot(results: dict[str, AdaptationResult], metrics: Path, out: Path) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for label, result in results.items():
        steps = range(result.steps + 1)
        mean, ci = result.mean(), result.ci95()
        left.plot(steps, mean, marker="o", label=label)
        left.fill_between(steps, mean - ci, mean + ci, alpha=0.2)
    left.set(xlabel="inner steps on the held-out task", ylabel="mean return", xticks=list(steps),
             title="Fast adaptation, 40 held-out goals")
    left.legend()
    with metrics.open() as f:
        rows = list(csv.DictReader(f))
    iterations = [int(r["iteration"]) for r in rows]
    right.plot(iterations, [float(r["pre_return"]) for r in rows], label="before adaptation")
    right.plot(iterations, [float(r["post_return"]) for r in rows], label="after 1 inner step")
    right.set(xlabel="meta-iteration", ylabel="mean return (training tasks)", title="Meta-training")
    right.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main() -> None:
    reuse_freed_memory()  # as the CLI does: freed tensors' memory is reused (faster)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run-dir", default=None, help="default: runs/demo-<timestamp>")
    parser.add_argument("--num-threads", type=int, default=2,
                        help="torch threads (default 2: the demo is one run on an otherwise idle machine, where 2 "
                             "threads are 1.7x faster than the configs' 1; the numbers are those of 2 threads)")
    args = parser.parse_args()

    run_dir = args.run_dir or f"runs/demo-{time.strftime('%Y%m%d-%H%M%S')}"
    untrained, run, seconds = train(args.iterations, args.seed, args.num_threads, run_dir)
    trained = run.model

    results = {name: evaluate_adaptation(model, n_tasks=40, steps=3, episodes=20, split="test", seed=12_345)
               for name, model in (("untrained init", untrained), ("Meta-SGD", trained))}
    print(f"\nNavigation2D-v0, Meta-SGD with TRPO: {args.iterations} meta-iterations in {seconds:.0f} s "
          f"({seconds / args.iterations:.2f} s/iteration); run directory {run.directory}")
    print("Mean return on 40 held-out goals (± 95% CI over tasks), 20 episodes per inner step:\n")
    print("| meta-initialisation | " + " | ".join((f"after {k} step" + "s" * (k > 1)) if k else "before adaptation"
                                                  for k in range(4)) + " |")
    print("|---|---|---|---|---|")
    for name, result in results.items():
        cells = " | ".join(f"{m:.1f} ± {c:.1f}" for m, c in zip(result.mean(), result.ci95(), strict=True))
        print(f"| {name} | {cells} |")
    png = run.directory / "adaptation.png"
    plot(results, run.directory / "metrics.csv", png)
    print(f"\nplot: {png}")
    print("the same training from the command line (the same final.pt, bit for bit):\n  "
          + cli_command(args.iterations, args.seed, args.num_threads, f"{run_dir}-cli"))


if __name__ == "__main__":
    main()
