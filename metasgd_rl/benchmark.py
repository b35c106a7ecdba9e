"""Benchmarks: where a meta-iteration's time goes, how it scales with tasks, and sampler throughput.

- :func:`time_meta_iterations`: real ``train_step`` calls of a model, each broken into the stages the model
  logs (``time/*`` in ``metrics.csv``): ``sampling`` (all rollouts and their advantages), ``adaptation`` (the
  inner steps), ``objective`` (the post-update surrogate), ``meta_gradient`` (its backward into θ and α),
  ``conjugate_gradient`` and ``line_search`` (TRPO), ``epochs`` (PPO's re-adapting epochs, gradients
  included); medians over repeats after warm-up iterations, and the process's peak resident memory.
- Its arithmetic floor: the matrix-product FLOPs of one more (untimed) iteration, counted by
  ``torch.utils.flop_counter``, divided by this process's own dense matmul rate (:func:`matmul_peak_gflops`).
  ``floor / total`` says how close an iteration runs to what the machine's arithmetic allows, and a target
  below the floor cannot be met by any implementation of the same computation on that machine.
- :func:`raw_rate` / :func:`sampler_rate`: env transitions per second of single envs stepped in a Python loop
  (the simulator's own cost) and through a sampler (local or Ray) with a per-task policy.

Each setting runs in a fresh process (:func:`in_fresh_process`), so that peak memory belongs to it and one
setting's allocator state does not slow the next. ``metasgd-rl benchmark`` and ``scripts/benchmark.py`` drive
these and write JSON and markdown.
"""

from __future__ import annotations

import copy
import math
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any

import numpy as np
import torch

from metasgd_rl.tables import aligned_table

STAGES = ("sampling", "adaptation", "objective", "meta_gradient", "conjugate_gradient", "line_search", "epochs")


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    return {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def matmul_peak_gflops(size: int = 2048, repeats: int = 3, device: torch.device | str = "cpu") -> float:
    """This process's dense float32 matmul rate on ``device`` (best of ``repeats`` ``size``³ products),
    GFLOP/s: the practical peak of the arithmetic every meta-iteration is made of."""
    device = torch.device(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    a = torch.randn(size, size, generator=torch.Generator().manual_seed(0)).to(device)
    a @ a  # warm-up: threads and the BLAS's buffers
    sync()
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        a @ a
        sync()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def count_gflop(function: Callable[[], Any]) -> float:
    """Matrix-product GFLOP that ``function()`` executes in this process (forward and every backward)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        function()
    return counter.get_total_flops() / 1e9


def time_meta_iterations(family: str = "Navigation2D-v0", tasks: int = 20, episodes: int = 20, outer: str = "trpo",
                         repeats: int = 5, warmup: int = 1, threads: int | None = None,
                         **model_kwargs: Any) -> dict[str, Any]:
    """Median seconds per stage of ``repeats`` meta-iterations (after ``warmup``) of a fresh model.

    ``model_kwargs`` go to :class:`~metasgd_rl.model.MetaSGD` (``estimator``, ``sampler``, ``device``,
    ``policy_kwargs``, ...). Returns the setting, ``total`` and one entry per logged stage, ``env_steps`` per
    iteration, ``sampler_steps_per_s`` (env steps / sampling seconds), ``peak_memory_mb``, and the arithmetic
    floor: ``gflop`` (matrix-product GFLOP of one more, untimed iteration; with the Ray sampler only the learner's,
    rollouts run in the actors), ``peak_gflops`` (:func:`matmul_peak_gflops`, the best of before and after the
    iterations) and ``floor`` (their ratio, s).
    """
    from metasgd_rl.allocator import reuse_freed_memory
    from metasgd_rl.model import MetaSGD

    reuse_freed_memory()  # as the CLI does
    if threads is not None:
        torch.set_num_threads(int(threads))
    model_kwargs.setdefault("num_threads", threads)  # None: the process's setting
    model = MetaSGD(family, meta_batch_size=tasks, episodes_per_task=episodes, outer=outer, seed=0, **model_kwargs)
    # the machine's rate drifts: the best of before and after the timed iterations
    peak_before = matmul_peak_gflops(device=model.device)
    try:
        for _ in range(warmup):
            model.train_step()
        infos = [model.train_step() for _ in range(repeats)]
        gflop = count_gflop(model.train_step)
    finally:
        model.close()
    row: dict[str, Any] = {"family": family, "tasks": tasks, "episodes": episodes, "outer": outer,
                           "sampler": model.sampler, "estimator": model.estimator,
                           "threads": model.num_threads or torch.get_num_threads(),
                           "task_chunk_size": model.task_chunk_size}
    row["total"] = statistics.median(info["seconds"] for info in infos)
    for stage in STAGES:
        if f"time/{stage}" in infos[0]:
            row[stage] = statistics.median(info[f"time/{stage}"] for info in infos)
    row["env_steps"] = statistics.median(info["env_steps"] for info in infos)
    row["sampler_steps_per_s"] = row["env_steps"] / row["sampling"]
    row["rejected"] = sum(bool(info["update_rejected"]) for info in infos)
    row["peak_memory_mb"] = peak_memory_mb()
    row["gflop"] = gflop
    row["peak_gflops"] = max(peak_before, matmul_peak_gflops(device=model.device))
    row["floor"] = gflop / row["peak_gflops"]
    return row


def raw_rate(family: Any, tasks: Sequence[Mapping[str, Any]], episodes: int, seed: int) -> float:
    """Transitions per second of single envs (``family.make_env``) stepped in a Python loop with pre-drawn
    random actions until their episodes end (env construction not timed): the simulator's own cost."""
    envs = [family.make_env(task) for task in tasks for _ in range(episodes)]
    space = copy.deepcopy(family.action_space)
    space.seed(seed)
    actions = [[space.sample() for _ in envs] for _ in range(family.max_episode_steps)]
    for i, env in enumerate(envs):
        env.reset(seed=seed + i)
    running, steps = list(envs), 0
    start = time.perf_counter()
    for step_actions in actions:
        still = []
        for env, action in zip(running, step_actions, strict=False):
            _, _, terminated, truncated, _ = env.step(action)
            if not (terminated or truncated):
                still.append(env)
        steps += len(running)
        running = still
        if not running:
            break
    elapsed = time.perf_counter() - start
    for env in envs:
        env.close()
    return steps / elapsed


def sampler_rate(family: Any, policy: Any, tasks: Sequence[Mapping[str, Any]], episodes: int, seed: int,
                 sample_fn: Callable[..., Any] | None = None) -> float:
    """Transitions per second of one rollout through ``sample_fn`` (default: the local sampler) with θ for
    every task."""
    from metasgd_rl.sampler import sample_episodes

    sample_fn = sample_episodes if sample_fn is None else sample_fn
    params = policy.task_parameters(len(tasks))
    start = time.perf_counter()
    batch = sample_fn(family, policy, params, list(tasks), episodes, seed)
    return float(batch.mask.sum()) / (time.perf_counter() - start)


def sampling_throughput(family_id: str, tasks: int, episodes: int, repeats: int = 3, horizon: int | None = None,
                        samplers: Sequence[str] = ("local",), ray_workers: int | None = None,
                        threads: int = 1, family_kwargs: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Raw env steps/s and sampler steps/s (per sampler kind) on the same tasks, medians of ``repeats`` after a
    warm-up rollout (which also builds the envs a sampler keeps). ``family_kwargs`` go to the family (e.g.
    Meta-World ML1's ``env_name``); ``horizon`` overrides its ``max_episode_steps``."""
    from metasgd_rl.policies import make_policy
    from metasgd_rl.ray_sampler import make_sampler
    from metasgd_rl.registry import make_task_family

    torch.set_num_threads(int(threads))
    family = make_task_family(family_id, **{**(family_kwargs or {}),
                                            **({"max_episode_steps": horizon} if horizon else {})})
    task_list = family.sample_tasks(tasks, np.random.default_rng(0))
    policy = make_policy(family.observation_space, family.action_space, hidden_sizes=(100, 100),
                         generator=torch.Generator().manual_seed(0))
    row: dict[str, Any] = {"family": family_id, "tasks": tasks, "episodes": episodes,
                           "horizon": family.max_episode_steps}
    for kind in samplers:
        sample_fn = make_sampler(kind, family, ray_workers=ray_workers)
        try:
            sampler_rate(family, policy, task_list, episodes, 0, sample_fn)
            row[f"{kind}_steps_per_s"] = statistics.median(
                sampler_rate(family, policy, task_list, episodes, r + 1, sample_fn) for r in range(repeats))
        finally:
            getattr(sample_fn, "close", lambda: None)()
    row["raw_steps_per_s"] = statistics.median(raw_rate(family, task_list, episodes, r + 1) for r in range(repeats))
    return row


def in_fresh_process(function: Callable[..., dict[str, Any]], **kwargs: Any) -> dict[str, Any]:
    """``function(**kwargs)`` in a new (spawned) Python process: its own peak memory and allocator state."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(function, **kwargs).result()


def stage_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Markdown with aligned columns: one row per setting, seconds per stage (the stages of every row: "–" where
    a setting has none, e.g. TRPO's conjugate gradient under Adam), total, the arithmetic floor, sampler
    throughput and peak memory."""
    stages = [s for s in STAGES if any(s in r for r in rows)]
    head = ["outer", "sampler", "tasks", "episodes", "chunk", *(f"{s} (s)" for s in stages), "total (s)",
            "GFLOP", "floor (s)", "floor / total", "sampler steps/s", "peak MiB"]
    body = []
    for r in rows:
        chunk = r.get("task_chunk_size")
        body.append([r["outer"], r["sampler"], str(r["tasks"]), str(r["episodes"]),
                     "–" if chunk is None else str(chunk), *(f"{r[s]:.3f}" if s in r else "–" for s in stages),
                     f"**{r['total']:.3f}**", f"{r['gflop']:.1f}", f"{r['floor']:.3f}",
                     f"{r['floor'] / r['total']:.0%}", f"{r['sampler_steps_per_s']:,.0f}",
                     f"{r['peak_memory_mb']:,.0f}"])
    return aligned_table(head, body, align="ll" + "r" * (len(head) - 2))


def throughput_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Markdown with aligned columns: raw and sampler env steps/s per family and sampler kind."""
    kinds = [k.removesuffix("_steps_per_s") for k in rows[0] if k.endswith("_steps_per_s") and k != "raw_steps_per_s"]
    head = ["family", "tasks × episodes × horizon", "raw env steps/s", *(f"{k} sampler steps/s" for k in kinds),
            *(f"{k} overhead" for k in kinds)]
    body = []
    for r in rows:
        raw = r["raw_steps_per_s"]
        body.append([r["family"], f"{r['tasks']} × {r['episodes']} × {r['horizon']}", f"{raw:,.0f}",
                     *(f"{r[f'{k}_steps_per_s']:,.0f}" for k in kinds),
                     *(f"{raw / r[f'{k}_steps_per_s']:.2f}×" for k in kinds)])
    return aligned_table(head, body)


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _plural(n: int, noun: str) -> str:
    """``"1 iteration"``, ``"5 iterations"``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _medians(repeats: int, warmup: int) -> str:
    """What the timings are, in words: ``"1 timed iteration, no warm-up"``, ``"medians of 5 iterations after
    1 warm-up iteration"``."""
    what = "1 timed iteration" if repeats == 1 else f"medians of {repeats} iterations"
    return f"{what}, no warm-up" if warmup == 0 else f"{what} after {_plural(warmup, 'warm-up iteration')}"


def run_benchmark(family: str = "Navigation2D-v0", tasks: Sequence[int] = (20,), episodes: Sequence[int] = (20,),
                  outers: Sequence[str] = ("trpo", "adam", "ppo"), samplers: Sequence[str] = ("local",),
                  throughput_families: Sequence[str] = (), throughput_tasks: int = 40,
                  throughput_episodes: int = 20, repeats: int = 5, warmup: int = 1, threads: int | None = None,
                  ray_workers: int | None = None, estimator: str | None = None,
                  task_chunk_sizes: Sequence[int | None] = (None,),
                  echo: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Every (outer, sampler, tasks, episodes) setting of :func:`time_meta_iterations` and every
    :func:`sampling_throughput` family, each in a fresh process; returns JSON-able results with markdown.

    ``echo`` gets one progress line per setting as it finishes (``"[2/3] adam, local sampler, 20 tasks × 20
    episodes: 1.234 s per meta-iteration"``; default: printed to stderr), so that minutes of measuring are not
    silent; the tables themselves are only in the returned ``markdown``, for the caller to print once.
    """
    echo = _to_stderr if echo is None else echo
    stage_rows, throughput_rows = [], []
    extra = {} if estimator is None else {"estimator": estimator}
    settings = [(outer, sampler, t, e, chunk) for outer in outers for sampler in samplers for t in tasks
                for e in episodes for chunk in task_chunk_sizes]
    count = len(settings) + len(throughput_families)
    for i, (outer, sampler, t, e, chunk) in enumerate(settings, start=1):
        row = in_fresh_process(time_meta_iterations, family=family, tasks=t, episodes=e, outer=outer,
                               repeats=repeats, warmup=warmup, threads=threads, sampler=sampler,
                               ray_workers=ray_workers, task_chunk_size=chunk, **extra)
        stage_rows.append(row)
        chunked = "" if chunk is None else f", chunks of {chunk} tasks"
        echo(f"[{i}/{count}] {outer}, {sampler} sampler, {t} tasks × {e} episodes{chunked}: "
             f"{row['total']:.3f} s per meta-iteration")
    for i, family_id in enumerate(throughput_families, start=len(settings) + 1):
        row = in_fresh_process(sampling_throughput, family_id=family_id, tasks=throughput_tasks,
                               episodes=throughput_episodes, repeats=min(repeats, 3), samplers=samplers,
                               ray_workers=ray_workers)
        throughput_rows.append(row)
        echo(f"[{i}/{count}] {family_id} throughput: {row['raw_steps_per_s']:,.0f} raw env steps/s")
    markdown = []
    if stage_rows:
        markdown += [f"Seconds per meta-iteration on {family} by stage ({_medians(repeats, warmup)}), estimator "
                     f"{stage_rows[0]['estimator']}, torch threads {stage_rows[0]['threads']}; floor = the "
                     "iteration's matrix-product GFLOP at this process's dense matmul rate "
                     f"({stage_rows[0]['peak_gflops']:.0f} GFLOP/s):", "", stage_table(stage_rows), ""]
    if throughput_rows:
        markdown += ["Env transitions per second: single envs stepped in a Python loop (raw) vs the sampler with "
                     "a 2×100 policy, one set of parameters per task:", "", throughput_table(throughput_rows), ""]
    return {"machine": machine(), "stages": stage_rows, "throughput": throughput_rows,
            "markdown": "\n".join(markdown)}
