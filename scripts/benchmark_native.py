"""Locomotion sampling: gymnasium's envs vs MuJoCo's batched rollout, and a MAML-TRPO meta-iteration.

    python scripts/benchmark_native.py                               # HalfCheetahVel, T=20, E=20, H=200
    python scripts/benchmark_native.py --repeats 5 --out docs/results/native-sampling
    python scripts/benchmark_native.py --skip-iteration              # sampling rates only

Rows (env steps per second through one rollout of T tasks x E episodes x horizon H, a 2 x 100 ReLU Gaussian
policy with per-task parameters computing every action; medians of ``--repeats`` after one warm-up):

- ``gymnasium``: ``sample_episodes`` on the family with ``simulator="gymnasium"`` (one ``env.step`` per sub-env);
- ``native (N threads)``: ``sample_episodes`` on the family with ``simulator="native"`` (the default);
- ``bare Rollout + policy (N threads)``: the limit on this machine: the same policy (on one torch thread, as
  in the native path) and the same number of
  ``mujoco.rollout.Rollout`` calls (one per env step, preallocated outputs, ``skip_checks=True``) with nothing
  else: no observation features, rewards, flags, episode bookkeeping or tensors out.

Then one meta-iteration of MAML with TRPO at MAML's locomotion protocol (``--iteration-tasks`` 40 x 20 episodes
x horizon 200, 2 x 100 policy, ``configs/halfcheetah-vel-maml.yaml``'s settings) per simulator, with the seconds
of each stage (sampling before and after adaptation, the adaptation, the TRPO step), medians of
``--iteration-repeats`` iterations after one warm-up. Run it on an idle machine: a training beside it halves
every number.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import metasgd_rl as msr
from metasgd_rl.benchmark import sampler_rate
from metasgd_rl.io import atomic_write_text
from metasgd_rl.policies import make_policy
from metasgd_rl.threads import torch_threads

FAMILY = "HalfCheetahVel-v0"


def bare_rollout_rate(family: Any, policy: Any, tasks: list[dict], episodes: int, threads: int, seed: int) -> float:
    """Env steps/s of MuJoCo's Rollout driven by ``policy`` alone (see the module docstring): the ceiling."""
    import mujoco
    from mujoco import rollout

    venv = family.make_vector_env(tasks, episodes)  # for its models and initial states only
    try:
        venv.reset(seed=seed)
        models, state = venv.models, venv.state.copy()
        n, skip, nu = len(models), venv.frame_skip, venv.nu
        qpos, qvel = venv._qpos, venv._qvel
        datas = [mujoco.MjData(models[0]) for _ in range(threads)]
        pool = rollout.Rollout(nthread=threads if threads > 1 else 0)
        control = np.zeros((n, skip, nu))
        out = np.zeros((n, skip, state.shape[1]))
        params = policy.task_parameters(len(tasks))
        sample = policy.action_sampler(params)
        generator = torch.Generator().manual_seed(seed)
        start = time.perf_counter()
        with torch.no_grad(), torch_threads(1):  # the policy on one torch thread, as the native env asks
            for _ in range(family.max_episode_steps):
                obs = torch.from_numpy(np.concatenate((state[:, qpos][:, 1:], state[:, qvel]), axis=1))
                noise = policy.draw_noise((len(tasks), episodes), generator)
                action = sample(obs.float().reshape(len(tasks), episodes, -1), noise)
                control[:] = action.reshape(n, 1, nu).numpy()
                pool.rollout(models, datas, state, control, skip_checks=True, nstep=skip, state=out,
                             sensordata=None, initial_warmstart=None, chunk_size=None)
                state[:] = out[:, -1]
        elapsed = time.perf_counter() - start
        pool.close()
        return n * family.max_episode_steps / elapsed
    finally:
        venv.close()


def sampling_rows(tasks: int, episodes: int, horizon: int, repeats: int, threads: list[int]) -> list[dict]:
    rows = []
    for simulator in ("gymnasium", "native", "bare"):
        family = msr.make_task_family(FAMILY, max_episode_steps=horizon,
                                      simulator="gymnasium" if simulator == "gymnasium" else "native")
        task_list = family.sample_tasks(tasks, np.random.default_rng(0))
        policy = make_policy(family.observation_space, family.action_space, hidden_sizes=(100, 100),
                             generator=torch.Generator().manual_seed(0))
        for n in [1] if simulator == "gymnasium" else threads:
            torch.set_num_threads(n)
            suffix = f"{n} thread{'s' if n > 1 else ''}"
            if simulator == "bare":
                name, rate = f"bare Rollout + policy ({suffix})", functools.partial(
                    bare_rollout_rate, family, policy, task_list, episodes, n)
            else:
                name = "gymnasium" if simulator == "gymnasium" else f"native ({suffix})"
                rate = functools.partial(sampler_rate, family, policy, task_list, episodes)
            rate(0)
            rates = [rate(r + 1) for r in range(repeats)]
            rows.append({"path": name, "threads": n, "steps_per_s": statistics.median(rates),
                         "all_steps_per_s": rates})
            print(f"{name:34s} {rows[-1]['steps_per_s']:9,.0f} env steps/s", flush=True)
        family.close()
    return rows


def iteration_rows(tasks: int, episodes: int, repeats: int, threads: int) -> list[dict]:
    """One MAML-TRPO meta-iteration per simulator, each in a fresh process (its own memory and allocator)."""
    from metasgd_rl.benchmark import STAGES, in_fresh_process, time_meta_iterations

    rows = []
    for simulator in ("gymnasium", "native"):
        row = in_fresh_process(
            time_meta_iterations, family=FAMILY, tasks=tasks, episodes=episodes, outer="trpo", repeats=repeats,
            warmup=1, threads=threads, family_kwargs={"simulator": simulator, "max_episode_steps": 200},
            alpha_granularity="scalar", learn_alpha=False, estimator="maml",
            policy_kwargs={"hidden_sizes": (100, 100), "activation": "relu", "output_init_scale": 0.01},
            outer_kwargs={"max_kl": 0.01, "fvp": "gauss-newton", "fvp_subsample": 0.1})
        row["simulator"] = simulator
        rows.append(row)
        stages = ", ".join(f"{s} {row[s]:.2f}" for s in STAGES if s in row)
        print(f"meta-iteration ({simulator}): {row['total']:.2f} s ({stages}); peak {row['peak_memory_mb']:,.0f} MiB",
              flush=True)
    return rows


def markdown(sampling: list[dict], iterations: list[dict], args: argparse.Namespace) -> str:
    gym_rate = next(r["steps_per_s"] for r in sampling if r["path"] == "gymnasium")
    bare = {r["threads"]: r["steps_per_s"] for r in sampling if r["path"].startswith("bare")}
    lines = [f"Sampling {FAMILY}: {args.tasks} tasks x {args.episodes} episodes x horizon {args.horizon}, "
             f"2 x 100 policy; medians of {args.repeats} rollouts.", "",
             "| path | env steps/s | × gymnasium | % of bare Rollout + policy (same threads) |", "|---|---|---|---|"]
    for r in sampling:
        share = "–" if r["path"] == "gymnasium" or r["path"].startswith("bare") else \
            f"{r['steps_per_s'] / bare[r['threads']]:.0%}"
        lines.append(f"| {r['path']} | {r['steps_per_s']:,.0f} | {r['steps_per_s'] / gym_rate:.1f}× | {share} |")
    if iterations:
        from metasgd_rl.benchmark import STAGES

        stages = [s for s in STAGES if any(s in r for r in iterations)]
        lines += ["", f"One MAML-TRPO meta-iteration, {args.iteration_tasks} tasks x {args.episodes} episodes x "
                  f"horizon 200, {args.iteration_threads} torch thread(s); medians of {args.iteration_repeats}.", "",
                  "| simulator | " + " | ".join(f"{s} (s)" for s in stages)
                  + " | total (s) | sampler steps/s | peak MiB |",
                  "|---|" + "---|" * (len(stages) + 3)]
        for r in iterations:
            lines.append(f"| {r['simulator']} | " + " | ".join(f"{r[s]:.2f}" for s in stages)
                         + f" | **{r['total']:.2f}** | {r['sampler_steps_per_s']:,.0f} | {r['peak_memory_mb']:,.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--horizon", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts of the native rows")
    parser.add_argument("--iteration-tasks", type=int, default=40)
    parser.add_argument("--iteration-repeats", type=int, default=2)
    parser.add_argument("--iteration-threads", type=int, default=2)
    parser.add_argument("--skip-iteration", action="store_true", help="sampling rates only")
    parser.add_argument("--out", type=Path, default=None, help="folder for native.json and native.md")
    args = parser.parse_args()
    if args.out is not None:  # fail before measuring, not after
        args.out.mkdir(parents=True, exist_ok=True)
        if not os.access(args.out, os.W_OK):
            parser.error(f"--out {args.out} is not writable")
    sampling = sampling_rows(args.tasks, args.episodes, args.horizon, args.repeats, args.threads)
    iterations = [] if args.skip_iteration else iteration_rows(args.iteration_tasks, args.episodes,
                                                               args.iteration_repeats, args.iteration_threads)
    table = markdown(sampling, iterations, args)
    print(f"\n{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), torch {torch.__version__}")
    print(table)
    if args.out is not None:
        result = {"family": FAMILY, "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                  "cpus": os.cpu_count(), "sampling": sampling, "iterations": iterations}
        atomic_write_text(args.out / "native.json", json.dumps(result, indent=2))
        atomic_write_text(args.out / "native.md", table + "\n")


if __name__ == "__main__":
    main()
