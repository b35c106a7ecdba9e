"""Peak memory of a Meta-World ML1 evaluation with and without a bound on the sub-envs stepped at a time.

    python scripts/benchmark_rollout_memory.py --out docs/metaworld          # push-v3, 50 goals x 10 episodes

Each setting runs ``metasgd-rl evaluate CHECKPOINT --tasks 50 --steps 1 --episodes 10 --seed 0 --max-envs N`` in
its own process and reads that process's peak resident memory (``ru_maxrss`` of the child). The checkpoint is an
untrained Meta-SGD model of the push config (memory does not depend on training). ``--max-envs`` of 500 or more
builds all 50 × 10 environments at once, as the sampler did before rollouts were bounded; the family's default is
50. The evaluations' JSON results must agree exactly: the bound changes memory, never a number.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from metasgd_rl.io import atomic_write_text


def peak_rss_mib(command: list[str]) -> tuple[float, float]:
    """Run ``command``; its peak resident memory in MiB (Linux reports ``ru_maxrss`` in KiB) and its seconds."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed with exit status {process.returncode}")
    return usage.ru_maxrss / 1024, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/metaworld-ml1-push-metasgd.yaml")
    parser.add_argument("--tasks", type=int, default=50)
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--max-envs", type=int, nargs="+", default=[500, 50, 20],
                        help="bounds to measure, in this order (500 = all 50 x 10 at once, as before the bound; a "
                             "bound given twice checks that two processes agree)")
    parser.add_argument("--out", type=Path, default=None, help="folder for rollout-memory.{json,md}")
    args = parser.parse_args()

    from metasgd_rl.config import load_config, model_class, model_kwargs
    from metasgd_rl.sampler import tasks_per_rollout

    config = load_config(args.config)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(tmp) / "untrained.pt"
        model_class(config["algo"])(**{**model_kwargs(config), "sampler": "local"}).save(checkpoint)
        rows, results = [], {}
        for max_envs in args.max_envs:
            result_path = Path(tmp) / f"result-{max_envs}.json"
            command = [sys.executable, "-m", "metasgd_rl", "evaluate", str(checkpoint), "--tasks", str(args.tasks),
                       "--steps", "1", "--episodes", str(args.episodes), "--seed", "0", "--max-envs", str(max_envs),
                       "--json", str(result_path)]
            peak, seconds = peak_rss_mib(command)
            result = json.loads(result_path.read_text())
            results[len(results)] = (max_envs, np.array(result["episode_returns"]),
                                     np.array(result.get("episode_success") or []))
            at_once = min(tasks_per_rollout(args.tasks, args.episodes, max_envs), args.tasks) * args.episodes
            rows.append({"max_envs": max_envs, "envs_at_once": at_once, "peak_rss_mib": round(peak, 1),
                         "seconds": round(seconds, 1)})
            print(json.dumps(rows[-1]), flush=True)
    _, returns, success = results[0]
    differences = [{"max_envs": m, "max_return_difference": float(np.abs(r - returns).max()),
                    "returns_differ_at": [int(i) for i in np.argwhere(r != returns)[:1].ravel()],
                    "success_differs": bool(not np.array_equal(s, success))}
                   for m, r, s in results.values()]
    identical = all(d["max_return_difference"] == 0 and not d["success_differs"] for d in differences)
    for d in differences:
        print(json.dumps(d))
    report = {"config": args.config, "family": config["family"], "family_kwargs": config["family_kwargs"],
              "tasks": args.tasks, "episodes": args.episodes, "steps": 1, "identical_results": identical,
              "differences_from_first": differences,
              "machine": f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()})", "rows": rows}
    print(f"results identical across bounds: {identical}")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out / "rollout-memory.json", json.dumps(report, indent=1) + "\n")
        kwargs = config["family_kwargs"]
        lines = [f"ML1 `{kwargs['env_name']}`, horizon {kwargs['max_episode_steps']}: "
                 f"`metasgd-rl evaluate` on {args.tasks} test goals x {args.episodes} episodes, 0 and 1 inner steps; "
                 f"{report['machine']}. Results identical across bounds: {identical}.", "",
                 "| --max-envs | envs at once | peak RSS (MiB) | seconds |", "|---|---|---|---|"]
        lines += [f"| {r['max_envs']} | {r['envs_at_once']} | {r['peak_rss_mib']:,.0f} | {r['seconds']:.0f} |"
                  for r in rows]
        atomic_write_text(args.out / "rollout-memory.md", "\n".join(lines) + "\n")
    if not identical:
        raise SystemExit("the results differ between bounds")


if __name__ == "__main__":
    main()
