"""A/B speed comparison of two commits: their meta-iterations timed alternately, each in a fresh process.

This machine's speed drifts by tens of per cent from hour to hour, so two benchmark runs made at different
times cannot be compared; alternating the two code versions round by round can. Each commit is checked out
into a temporary git worktree; every (round, outer, commit) runs ``metasgd_rl.benchmark.time_meta_iterations``
from that tree in a new Python process (the standard Navigation2D setting). Prints the median over rounds of
each stage and of the total.

    python scripts/benchmark_ab.py 2eb0021 HEAD --outer adam trpo ppo --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("sampling", "adaptation", "objective", "meta_gradient", "conjugate_gradient", "line_search", "epochs",
          "total")
CODE = ("import json, sys; from metasgd_rl.benchmark import time_meta_iterations; "
        "print(json.dumps(time_meta_iterations(outer=sys.argv[1], repeats=int(sys.argv[2]), warmup=1)))")


def time_in_tree(tree: Path, outer: str, repeats: int) -> dict:
    # the tree's metasgd_rl and (through its metasgd_rl_envs.py) metasgd_rl_envs shadow the installed ones
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run([sys.executable, "-c", CODE, outer, str(repeats)], cwd=tree, env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("commits", nargs=2, help="two commits (A and B)")
    parser.add_argument("--outer", nargs="+", default=["adam", "trpo", "ppo"], choices=["adam", "trpo", "ppo"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3, help="timed iterations per process (median)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        trees = {}
        for i, commit in enumerate(args.commits):
            trees[commit] = Path(tmp) / f"tree{i}"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(trees[commit]), commit],
                           check=True)
        try:
            rows: dict[tuple[str, str], list[dict]] = {(c, o): [] for c in trees for o in args.outer}
            for r in range(args.rounds):
                for outer in args.outer:
                    for commit, tree in trees.items():
                        rows[(commit, outer)].append(time_in_tree(tree, outer, args.repeats))
                print(f"round {r + 1}/{args.rounds} done", flush=True)
        finally:
            for tree in trees.values():
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
    print("\n| outer | commit | " + " | ".join(f"{s} (s)" for s in STAGES) + " | peak MiB |")
    print("|---|---|" + "---|" * (len(STAGES) + 1))
    for outer in args.outer:
        for commit in trees:
            runs = rows[(commit, outer)]
            cells = [f"{statistics.median(x[s] for x in runs):.3f}" if s in runs[0] else "–" for s in STAGES]
            peak = statistics.median(x["peak_memory_mb"] for x in runs)
            print(f"| {outer} | {commit} | " + " | ".join(cells) + f" | {peak:,.0f} |")


if __name__ == "__main__":
    main()
