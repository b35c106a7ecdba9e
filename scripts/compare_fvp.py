"""Does subsampling TRPO's Fisher-vector products change learning? Same seeds, only ``fvp_subsample`` varies.

    python scripts/compare_fvp.py --iterations 60 --seeds 0 1 --subsample 1.0 0.25 0.1

For every setting: seconds per meta-iteration and the mean return before / after one adaptation step on 40
held-out Navigation2D tasks (fixed rollout seed) at the end, plus the training post-update return averaged
over the last 10 iterations. Standard setting otherwise: 20 tasks x 20 episodes, 2x100 ReLU, LVC, TRPO.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from metasgd_rl import MetaSGD


def run(subsample: float, seed: int, iterations: int) -> dict[str, float]:
    model = MetaSGD("Navigation2D-v0", outer="trpo", outer_kwargs=dict(fvp_subsample=subsample), seed=seed)
    history = []
    start = time.perf_counter()
    model.learn(iterations, callback=history.append, progress_bar=False)
    seconds = (time.perf_counter() - start) / iterations
    tasks = model.family.sample_tasks(40, np.random.default_rng(10_000 + seed), split="test")
    held_out = model.meta_objective(tasks, 10_000 + seed)
    return {
        "s_per_iteration": seconds,
        "train_post_last10": float(np.mean([h["post_return"] for h in history[-10:]])),
        "test_pre": held_out.pre_return,
        "test_post": held_out.post_return,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=60)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--subsample", type=float, nargs="+", default=[1.0, 0.25, 0.1])
    args = parser.parse_args()
    print(f"Navigation2D-v0, TRPO, {args.iterations} meta-iterations per run")
    print("| fvp_subsample | seed | s / iteration | train post-update (last 10) | held-out before | held-out after |")
    print("|---|---|---|---|---|---|")
    for subsample in args.subsample:
        for seed in args.seeds:
            r = run(subsample, seed, args.iterations)
            print(f"| {subsample} | {seed} | {r['s_per_iteration']:.2f} | {r['train_post_last10']:.1f} | "
                  f"{r['test_pre']:.1f} | {r['test_post']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
