"""Meta-SGD vs MAML on Meta-World ML1 push-v3 and ML10, beside the Meta-World papers' numbers (issue 24).

    python scripts/reproduce_metaworld.py --out ~/runs/metaworld-study --report-dir docs/metaworld/study \\
        --publish                                             # the whole study, resumable
    python scripts/reproduce_metaworld.py --benchmarks ML1-push-v3 --out ~/runs/metaworld-study  # ML1 only
    python scripts/reproduce_metaworld.py --out docs/metaworld/study --evaluate-only   # the published checkpoints
    python scripts/reproduce_metaworld.py --push-seeds 0 --push-iterations 1 --ml10-iterations 1 \\
        --set meta_batch_size=2 --set episodes_per_task=2 --set family_kwargs.max_episode_steps=10 \\
        --set eval_every=0 --eval-tasks 2 --eval-episodes 2 --protocol-adaptation-episodes 1 \\
        --protocol-evaluation-episodes 1 --out /tmp/smoke                       # a smoke run (minutes)

Stages, each resumable (run the same command again after a stop or a crash):

1. **Training** (``metasgd_rl.training_jobs``), ``--jobs`` runs at a time, each ``metasgd-rl train`` with one
   thread and ``sampler=local`` (then ``--set``) in ``--out``/runs/BENCHMARK/METHOD-seedS, its log beside it:
   ML1 push-v3 with ``configs/metaworld-ml1-push-{metasgd,maml}.yaml`` for each of ``--push-seeds`` at the reach
   protocol of docs/metaworld/README.md (``--push-iterations`` 120), then ML10 with
   ``configs/metaworld-ml10-{metasgd,maml}.yaml``, ``--ml10-seeds`` (seed 0), for ``--ml10-iterations`` (default:
   enough for 15 M environment steps, the Meta-World+ MAML run's length, at the config's meta-batch × episodes
   per task × horizon × 2 rollouts per iteration; printed). The two methods of a setting train side by side, so
   their wall-clocks compare. A run with a ``final.pt`` at its iterations is reused, any other run directory
   continued (``--resume``). SIGINT/SIGTERM stop every run after its current iteration with a checkpoint. To end
   ML10 where it is, stop it and run again with ``--ml10-iterations`` at its checkpoint's iteration (the report
   lists runs without ``final.pt`` and their checkpoint): that writes its ``final.pt`` without training more.
2. **Evaluation** of every ``final.pt``, ``--jobs`` runs at a time in child processes (one core each), cached per
   checkpoint sha256 and settings in ``--out``/evaluation:
   (a) exactly what ``metasgd-rl evaluate CKPT --tasks 50 --steps 1 --episodes 10 --seed 0`` computes (success
   and return before and after one inner step on the 50 test goals; per test class for ML10), and (b) Meta-World's
   own protocol, ``metaworld.evaluation.metalearning_evaluation`` (``metasgd_rl_envs.metaworld_protocol``: one
   sub-env per class, 50 rounds, 10 adaptation episodes, one inner step, 3 evaluation episodes ending at success).
3. **Report** in ``--report-dir`` (default ``--out``): ``results.md`` and ``results.json``: success after 0 and 1
   step (mean over seeds ± 95 % t-interval over seeds, IQM), Welch's test Meta-SGD − MAML where both have two or
   more seeds, Meta-World's protocol (mean and IQM over seeds, per class for ML10), the papers' anchors, how our
   protocol differs, wall-clock and environment steps per run, and the time a paper-size run (15 M environment
   steps) would take here and on Ray with 2, 4, 8, 16 workers. ``--publish`` copies every run's ``final.pt``,
   ``config.yaml`` and ``metrics.csv`` and the evaluations into ``--report-dir``/runs and /evaluation, the layout
   of ``--out``, so that ``--out REPORT_DIR --evaluate-only`` evaluates the published checkpoints again.

Wall-clock on 2 cores, two runs side by side (one core each), measured on the published runs
(docs/metaworld/study/results.md). push-v3 steps at ~690 env steps/s in one process (reach-v3: ~1.46k;
docs/metaworld/ml1-push-speed), and the local sampler keeps 96 % of that. An ML1 push run (10 tasks × 10 episodes
× horizon 150 × 2 = 30k env steps per iteration) takes a median 34–35 s per iteration on an otherwise idle machine
(52–54 s beside other work), so each pair of seeds' 120 iterations takes 1.1–1.2 h. An ML10 iteration is 20 × 10
× 150 × 2 = 60k env steps, a median 48–51 s; 15 M steps are 250 iterations, 3.5–3.9 h with the two methods side
by side. The evaluations, two runs at a time, take 2.5–3 min for (a) per run and 2.5 min (push) or 8 min (ML10's
five classes) for (b).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import metasgd_rl as msr
from metasgd_rl.anchors import BESIDE_HEADER, PaperRows, beside_papers
from metasgd_rl.command_line import shown_command
from metasgd_rl.config import load_config
from metasgd_rl.io import atomic_write_text
from metasgd_rl.stats import interquartile_mean
from metasgd_rl.study import seed_arrays, seed_rows, step_header, summarise_seeds
from metasgd_rl.training_jobs import (
    add_study_arguments,
    file_digest,
    install_stop_handlers,
    publish_run,
    resolve_study_paths,
    run_jobs,
    stop_requested,
    train_run,
    unfinished_note,
)

ROOT = Path(__file__).resolve().parent.parent
ML1, ML10 = "ML1-push-v3", "ML10"
BENCHMARKS = {ML1: "metaworld-ml1-push", ML10: "metaworld-ml10"}
METHODS = ("metasgd", "maml")
LABELS = {"metasgd": "Meta-SGD", "maml": "MAML"}
#: the papers' numbers: success (%) on ML10's test classes after adaptation (ML1 is reported in figures only),
#: each compared with our runs under Meta-World's own protocol (b), the evaluation the papers report
ANCHORS: PaperRows = {
    ML10: [("MAML, Meta-World Table 1 (horizon 500, 10 seeds; training classes 44.4 %)", ["", "31.6"],
            tuple(LABELS.values())),
           ("MAML, Meta-World+ (15 M steps, meta-batch 20; IQM over 10 seeds)", ["", "≈ 35"], tuple(LABELS.values()))],
    ML1: [],
}
#: the length of a paper-size run (Meta-World+'s reference MAML-TRPO on ML10), in environment steps
PAPER_STEPS = 15_000_000
RAY_WORKERS = (2, 4, 8, 16)
CHECKPOINT_EVERY = 10
EVAL_STEPS = 1


# -- layout ---------------------------------------------------------------------------------------------------
def run_dir(out: Path, benchmark: str, name: str) -> Path:
    return out / "runs" / benchmark / name


def config_path(benchmark: str, method: str) -> Path:
    return ROOT / "configs" / f"{BENCHMARKS[benchmark]}-{method}.yaml"


def config_sets(args: argparse.Namespace) -> list[str]:
    """The overrides of every config: the local sampler (one core per run), then ``--set``."""
    return ["sampler=local", *args.set]


def config_of(args: argparse.Namespace, benchmark: str, method: str) -> dict[str, Any]:
    return load_config(config_path(benchmark, method), config_sets(args))


def seeds_of(args: argparse.Namespace, benchmark: str) -> list[int]:
    return list(args.push_seeds if benchmark == ML1 else args.ml10_seeds)


def runs_of(args: argparse.Namespace, benchmark: str) -> list[tuple[str, int]]:
    """``(method, seed)`` of every run of ``benchmark``: seed by seed, both methods of a seed side by side."""
    return [(m, s) for s in seeds_of(args, benchmark) for m in METHODS]


def steps_per_iteration(config: dict[str, Any]) -> int:
    """Environment steps of one meta-iteration at most: meta-batch × episodes per task × horizon × (inner steps + 1)
    rollouts (Meta-World's episodes run to the horizon: the training envs do not end at success)."""
    horizon = config.get("family_kwargs", {}).get("max_episode_steps")
    if horizon is None:
        raise SystemExit(f"{config.get('name', 'the config')}: family_kwargs.max_episode_steps is not set; the "
                         "ML10 iterations are computed from it (or pass --ml10-iterations)")
    return int(config["meta_batch_size"]) * int(config["episodes_per_task"]) * int(horizon) * (
        int(config["inner_steps"]) + 1)


def iterations_of(args: argparse.Namespace, benchmark: str) -> int:
    if benchmark == ML1:
        return args.push_iterations
    if args.ml10_iterations is not None:
        return args.ml10_iterations
    return max(math.ceil(PAPER_STEPS / steps_per_iteration(config_of(args, ML10, m))) for m in METHODS)


# -- training -------------------------------------------------------------------------------------------------
def train(args: argparse.Namespace, benchmark: str, method: str, seed: int) -> str:
    """Train (or continue, or reuse) one run to its iterations; returns what was done."""
    name = f"{method}-seed{seed}"
    return train_run(run_dir(args.out, benchmark, name), config_path(benchmark, method),
                     iterations_of(args, benchmark), [*config_sets(args), f"seed={seed}"], f"{benchmark} {name}",
                     CHECKPOINT_EVERY)


# -- evaluation -----------------------------------------------------------------------------------------------
def per_class(tasks: list[dict[str, Any]], values: np.ndarray) -> dict[str, list[float]]:
    """Mean of ``values[i, k]`` over the tasks of each class (a task's ``"env_name"``), per step k."""
    classes: dict[str, list[int]] = {}
    for i, task in enumerate(tasks):
        classes.setdefault(str(task.get("env_name", "")), []).append(i)
    return {c: values[idx].mean(0).tolist() for c, idx in sorted(classes.items())}


def evaluation_cache(args: argparse.Namespace, benchmark: str, name: str) -> Path:
    """Where evaluation (a) of a run is cached."""
    return args.out / "evaluation" / benchmark / f"{name}.json"


def protocol_cache(args: argparse.Namespace, benchmark: str) -> Path:
    """The folder where Meta-World's protocol (b) caches a benchmark's runs, one file per checkpoint digest."""
    return args.out / "evaluation" / benchmark / "protocol"


def evaluation_settings(args: argparse.Namespace, final: Path) -> dict[str, Any]:
    return {"tasks": args.eval_tasks, "steps": EVAL_STEPS, "episodes": args.eval_episodes, "seed": args.eval_seed,
            "checkpoint_sha256": file_digest(final)}


def cached_evaluation(args: argparse.Namespace, benchmark: str, name: str) -> dict[str, Any] | None:
    """The cached evaluation (a) of a run's ``final.pt`` at these settings; None without one or with
    ``--reevaluate``."""
    cache = evaluation_cache(args, benchmark, name)
    if args.reevaluate or not cache.is_file():
        return None
    cached = json.loads(cache.read_text())
    final = run_dir(args.out, benchmark, name) / "final.pt"
    return cached if cached.get("settings") == evaluation_settings(args, final) else None


def evaluate(args: argparse.Namespace, benchmark: str, name: str) -> dict[str, Any]:
    """``metasgd-rl evaluate final.pt --tasks --steps 1 --episodes --seed`` of one run, cached per checkpoint."""
    from metasgd_rl.report import load_checkpoint

    final = run_dir(args.out, benchmark, name) / "final.pt"
    cache = evaluation_cache(args, benchmark, name)
    cached = cached_evaluation(args, benchmark, name)
    if cached is not None:
        return cached
    settings = evaluation_settings(args, final)
    model = load_checkpoint(final)
    start = time.perf_counter()
    result = msr.evaluate_adaptation(model, n_tasks=args.eval_tasks, steps=EVAL_STEPS, episodes=args.eval_episodes,
                                     split="test", seed=args.eval_seed)
    if result.success is None:
        raise SystemExit(f"{final}: its family reports no success flag; is it a Meta-World run?")
    record: dict[str, Any] = {
        "settings": settings, "iteration": model.iteration, "success": result.success.mean(0).tolist(),
        "returns": result.returns.mean(0).tolist(), "per_task_success": result.success.tolist(),
        "per_task_returns": result.returns.tolist(), "tasks": result.tasks,
        "success_per_class": per_class(result.tasks, result.success)}
    record["seconds"] = time.perf_counter() - start
    getattr(model.family, "close", lambda: None)()
    cache.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(cache, json.dumps(record))
    print(f"evaluated {benchmark} {name}: success {[round(x, 3) for x in record['success']]} "
          f"({record['seconds']:.0f} s)", flush=True)
    return record


def protocol_settings(args: argparse.Namespace) -> dict[str, Any]:
    return {"envs_per_class": args.protocol_envs_per_class, "adaptation_steps": 1,
            "adaptation_episodes": args.protocol_adaptation_episodes,
            "evaluation_episodes": args.protocol_evaluation_episodes, "seed": args.protocol_seed,
            "deterministic": False}


def protocol(args: argparse.Namespace, benchmark: str, name: str) -> dict[str, Any]:
    """Meta-World's own evaluation of one run's ``final.pt``, cached per checkpoint digest and settings."""
    from metasgd_rl_envs.metaworld_protocol import evaluate_checkpoint

    final = run_dir(args.out, benchmark, name) / "final.pt"
    cache = protocol_cache(args, benchmark)
    if args.reevaluate:
        (cache / f"{file_digest(final)[:16]}.json").unlink(missing_ok=True)
    return evaluate_checkpoint(final, protocol_settings(args), cache)


def is_evaluated(args: argparse.Namespace, benchmark: str, name: str) -> bool:
    """Whether both evaluations of a run's ``final.pt`` are cached at these settings."""
    if args.reevaluate or cached_evaluation(args, benchmark, name) is None:
        return False
    from metasgd_rl_envs.metaworld_protocol import cached_protocol_result

    final = run_dir(args.out, benchmark, name) / "final.pt"
    return cached_protocol_result(final, protocol_settings(args), protocol_cache(args, benchmark)
                                  ) is not None


def evaluate_in_child(args: argparse.Namespace, benchmark: str, name: str) -> str:
    """Both evaluations of one run in a child process with one torch thread (this script with the same options
    and ``--evaluate-run``), which fills their caches; returns the child's output."""
    command = [sys.executable, str(Path(__file__).resolve()), *args.argv, "--evaluate-run", benchmark, name]
    done = subprocess.run(command, env=os.environ | {"OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines() or ["(no output)"]
        raise RuntimeError(f"evaluating {benchmark} {name} failed (exit {done.returncode}): {lines[-1]}")
    return done.stdout.strip()


def evaluate_runs(args: argparse.Namespace) -> list[str]:
    """Evaluate every finished run not yet evaluated, ``--jobs`` at a time, each in its own process: the
    simulator's Python holds one core per evaluation, so two processes halve the wall-clock on 2 cores. The
    report then reads the caches. Returns the failures' lines."""
    pending = [(b, f"{m}-seed{s}") for b in args.benchmarks for m, s in runs_of(args, b)
               if (run_dir(args.out, b, f"{m}-seed{s}") / "final.pt").is_file()]
    pending = [(b, n) for b, n in pending if not is_evaluated(args, b, n)]
    if args.jobs < 2 or len(pending) < 2:
        return []  # the report evaluates them in this process
    failures = run_jobs(args.jobs, [lambda b=b, n=n: evaluate_in_child(args, b, n) for b, n in pending])
    args.reevaluate = False  # the children did: the report reads what they cached
    return failures


# -- wall-clock -----------------------------------------------------------------------------------------------
def wall_clock(directory: Path) -> dict[str, Any] | None:
    """From a run's ``metrics.csv``: iterations, training seconds (the sum of ``seconds``: the iterations only,
    without held-out evaluations and checkpoints), the median seconds per iteration, environment steps, steps per
    second, the share of the iterations' time spent sampling (``time/sampling``; None without that column), and
    the seconds :data:`PAPER_STEPS` steps would take at this pace, here and on Ray (:func:`ray_seconds`)."""
    metrics = directory / "metrics.csv"
    if not metrics.is_file():
        return None
    with open(metrics) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return None
    seconds = np.array([float(r["seconds"]) for r in rows])
    env_steps = float(sum(float(r["env_steps"]) for r in rows))
    sampling = None
    if "time/sampling" in rows[0] and all(r.get("time/sampling") not in (None, "") for r in rows):
        sampling = float(sum(float(r["time/sampling"]) for r in rows)) / float(seconds.sum())
    rate = env_steps / float(seconds.sum())
    local = PAPER_STEPS / rate
    return {"iterations": len(rows), "seconds": float(seconds.sum()), "median_seconds": float(np.median(seconds)),
            "env_steps": env_steps, "steps_per_second": rate, "sampling_share": sampling,
            "paper_seconds_local": local,
            "paper_seconds_ray": {str(n): ray_seconds(local, sampling, n) for n in RAY_WORKERS}}


def ray_seconds(local: float, sampling_share: float | None, workers: int) -> float | None:
    """``local`` seconds with sampling ``workers`` times faster and the rest (adaptation, meta-gradient, TRPO)
    unchanged: the sampling share scales with the workers, nothing else does. None without a sampling share."""
    if sampling_share is None:
        return None
    return local * (sampling_share / workers + (1.0 - sampling_share))


def hours(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds / 3600:.1f} h"


# -- report ---------------------------------------------------------------------------------------------------
def differences(benchmark: str, config: dict[str, Any], iterations: int, seeds: int,
                evaluation_episodes: int) -> str:
    """How our protocol differs from the Meta-World paper's MAML protocol (Table 9) for ``benchmark``."""
    horizon = config["family_kwargs"]["max_episode_steps"]
    sizes = [int(h) for h in config["policy_kwargs"]["hidden_sizes"]]
    hidden = f"{len(sizes)} × {sizes[0]}" if len(set(sizes)) == 1 else " × ".join(map(str, sizes))
    steps = iterations * steps_per_iteration(config)
    return (f"**How our protocol differs ({benchmark}).** The Meta-World paper's MAML (revised paper, Table 9): "
            "meta-batches of 20 tasks, 10 roll-outs per task, horizon 500, one inner step (lr 1e-4), TRPO with max KL "
            f"0.01, a 2 × 128 tanh policy, the v1/v2 environments, 10 seeds. Ours: meta-batches of "
            f"{config['meta_batch_size']} tasks, {config['episodes_per_task']} episodes per task, horizon {horizon}, "
            f"one inner step of {config['alpha_init']} (learned per parameter for Meta-SGD), TRPO with max KL "
            f"{config['outer_kwargs']['max_kl']}, a {hidden} {config['policy_kwargs']['activation']} policy, the v3 "
            f"environments (`metaworld` 3.1), MAML's estimator with a linear baseline, {iterations} iterations "
            f"(≤ {steps / 1e6:.1f} M environment steps; Meta-World+ trains 15 M), {seeds} seed(s) per method. "
            "Evaluation (a) adapts every test goal at once on the first episodes and counts success in as many "
            "full-length episodes after the step; Meta-World's protocol (b) adapts one goal per class at a time and "
            f"counts {evaluation_episodes} evaluation episodes that end at success.")


def report(args: argparse.Namespace, wall: dict[str, float], start: float) -> None:
    """The report of every finished run, evaluating what is not cached; ``wall['total']`` is set from ``start``
    (this invocation's start) once the evaluations are done, so that it counts them."""
    evaluations: dict[str, dict[str, dict[int, dict[str, Any]]]] = {}
    protocols: dict[str, dict[str, Any]] = {}
    walls: dict[str, dict[str, dict[int, dict[str, Any] | None]]] = {}
    unfinished: list[str] = []
    lines = []
    json_summary: dict[str, Any] = {}
    standings: list[dict[str, Any]] = []
    header = "| benchmark | method | " + " | ".join(f"success (%) {h}" for h in step_header(EVAL_STEPS)) + " |"
    for benchmark in args.benchmarks:
        evaluations[benchmark] = {m: {} for m in METHODS}
        walls[benchmark] = {m: {} for m in METHODS}
        results = []
        for method, seed in runs_of(args, benchmark):
            name = f"{method}-seed{seed}"
            directory = run_dir(args.out, benchmark, name)
            if not (directory / "final.pt").is_file():
                unfinished.append(unfinished_note(directory, f"{benchmark} {name}"))
                continue
            evaluations[benchmark][method][seed] = evaluate(args, benchmark, name)
            results.append(protocol(args, benchmark, name))
            walls[benchmark][method][seed] = wall_clock(directory)
        protocols[benchmark] = _protocol_summary(results)
        present = {m: by_seed for m, by_seed in evaluations[benchmark].items() if by_seed}
        if not present:
            continue
        success = seed_arrays({m: {s: [100 * x for x in r["success"]] for s, r in by_seed.items()}
                               for m, by_seed in present.items()})
        returns = seed_arrays({m: {s: r["returns"] for s, r in by_seed.items()} for m, by_seed in present.items()})
        tested = ["metasgd"] if all(len(present.get(m, {})) >= 2 for m in METHODS) else []
        summary = summarise_seeds(success, tested=tested)
        return_summary = summarise_seeds(returns, tested=tested)
        iqm = {m: [interquartile_mean(a[:, k]) for k in range(a.shape[1])] for m, a in success.items()}
        # the iterations the evaluated checkpoints trained (not the ones asked for: --evaluate-only asks for none)
        iterations = max(r["iteration"] for by_seed in present.values() for r in by_seed.values())
        json_summary[benchmark] = {"success_percent": summary, "returns": return_summary, "success_iqm_percent": iqm,
                                   "protocol": protocols[benchmark], "iterations": iterations}
        config = config_of(args, benchmark, "maml")
        lines += [f"## {benchmark}", "",
                  f"Held-out evaluation (a), as `metasgd-rl evaluate CKPT --tasks {args.eval_tasks} --steps 1 "
                  f"--episodes {args.eval_episodes} --seed {args.eval_seed}`: mean over seeds ± 95 % t-interval over "
                  "seeds (one seed: its value); a difference row is Meta-SGD − MAML ± its 95 % Welch interval and "
                  "the p-value of Welch's t-test over seeds (only where both methods have two or more seeds).", "",
                  header, "|---|---|" + "---|" * (EVAL_STEPS + 1),
                  *seed_rows(benchmark, summary, LABELS),
                  *[f"| {benchmark} | {label} | " + " | ".join(values) + " |"
                    for label, values, _ in ANCHORS[benchmark]], "",
                  "Interquartile mean over seeds (Meta-World+'s aggregate; below four seeds it is the mean), success "
                  "(%), and the return, mean over seeds:", "",
                  "| method | seeds | IQM after 0 steps | IQM after 1 step | return after 0 steps | "
                  "return after 1 step |", "|---|---|---|---|---|---|"]
        for method, values in iqm.items():
            ret = return_summary["methods"][method]
            lines.append(f"| {LABELS[method]} | {len(present[method])} | {values[0]:.1f} | {values[1]:.1f} | "
                         f"{ret[0][0]:.1f} | {ret[1][0]:.1f} |")
        lines += ["", protocol_section(protocols[benchmark], results), ""]
        beside, found = beside_papers(benchmark, ANCHORS, {
            method: [(100 * s["per_goal_before"]["mean"], 100 * s["per_goal_before"]["ci95"]),
                     (100 * s["success"]["mean"], 100 * s["success"]["ci95"])]
            for method, s in protocols[benchmark].items()}, {})
        standings += found
        if beside:
            lines += ["Meta-World's protocol (b) beside the papers' success after adaptation (a number printed in a "
                      "table is taken as exact, one with ≈ as ± 20 %; *within the seeds' interval*: our 95 % "
                      "interval over seeds reaches the paper's; with one seed there is no interval):", "",
                      BESIDE_HEADER[0].replace("group", "benchmark"), BESIDE_HEADER[1], *beside, ""]
        if benchmark == ML10:
            lines += [*class_table(present), ""]
        lines += [differences(benchmark, config, iterations, len(seeds_of(args, benchmark)),
                              args.protocol_evaluation_episodes), ""]

    wall = wall | {"total": time.perf_counter() - start}  # the evaluations above included
    lines += wall_section(walls, wall)
    if unfinished:
        lines += ["", "Runs without `final.pt` (not evaluated): " + "; ".join(unfinished) + "."]
    command = shown_command(__file__)
    text = "\n".join(["# Meta-SGD vs MAML on Meta-World ML1 push-v3 and ML10", "", f"`{command}`", "", *lines, ""])
    args.report_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.report_dir / "results.md", text)
    atomic_write_text(args.report_dir / "results.json", json.dumps(
        {"command": command, "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
         "labels": LABELS, "anchors": ANCHORS, "standings": standings, "paper_steps": PAPER_STEPS,
         "summary": json_summary,
         "evaluations": evaluations, "protocol_settings": protocol_settings(args), "wall_clock": walls,
         "unfinished": unfinished, "wall": wall}, indent=1))
    print(text)
    print(f"wrote {args.report_dir}/results.md")


def _protocol_summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    from metasgd_rl_envs.metaworld_protocol import summarise_protocol_runs

    return summarise_protocol_runs(results) if results else {}


def protocol_section(summary: dict[str, Any], results: list[dict[str, Any]]) -> str:
    """Meta-World's protocol (b): per method the success over seeds (mean ± 95 %, IQM) and per class."""
    if not results:
        return ""
    first = results[0]
    lines = [f"Meta-World's protocol (b), `metaworld.evaluation.metalearning_evaluation` on every test goal "
             f"({first['envs_per_class']} sub-env(s) per class, {first['rounds']} rounds, "
             f"{first['adaptation_episodes']} adaptation episodes, one inner step, {first['evaluation_episodes']} "
             "evaluation episodes ending at success), success (%):", "",
             "| method | seeds | mean ± 95 % | IQM | per goal, before adaptation | per goal, after |",
             "|---|---|---|---|---|---|"]
    for method, s in summary.items():
        mean, ci = 100 * s["success"]["mean"], 100 * s["success"]["ci95"]
        cell = f"{mean:.1f} ± {ci:.1f}" if np.isfinite(ci) else f"{mean:.1f}"
        lines.append(f"| {method} | {len(s['runs'])} | {cell} | {100 * s['success']['iqm']:.1f} | "
                     f"{100 * s['per_goal_before']['mean']:.1f} | {100 * s['per_goal_after']['mean']:.1f} |")
    classes = sorted({c for s in summary.values() for c in s["classes"]})
    if len(classes) > 1:
        lines += ["", "Per test class (Meta-World's count, success %, mean over seeds):", "",
                  "| method | " + " | ".join(classes) + " |", "|---|" + "---|" * len(classes)]
        for method, s in summary.items():
            lines.append(f"| {method} | " + " | ".join(f"{100 * s['classes'].get(c, float('nan')):.0f}"
                                                       for c in classes) + " |")
    return "\n".join(lines)


def class_table(present: dict[str, dict[int, dict[str, Any]]]) -> list[str]:
    """Evaluation (a) per test class: success (%) after 0 → 1 step, mean over seeds."""
    classes = sorted({c for by_seed in present.values() for r in by_seed.values() for c in r["success_per_class"]})
    lines = ["Evaluation (a) per test class, success (%) before → after one step, mean over seeds:", "",
             "| method | " + " | ".join(classes) + " |", "|---|" + "---|" * len(classes)]
    for method, by_seed in present.items():
        cells = []
        for c in classes:
            values = np.array([r["success_per_class"][c] for r in by_seed.values() if c in r["success_per_class"]])
            cells.append(f"{100 * values[:, 0].mean():.0f} → {100 * values[:, 1].mean():.0f}" if len(values) else "–")
        lines.append(f"| {LABELS[method]} | " + " | ".join(cells) + " |")
    return lines


def wall_section(walls: dict[str, dict[str, dict[int, dict[str, Any] | None]]], wall: dict[str, float]) -> list[str]:
    lines = ["## Wall-clock and a paper-size run", "",
             "Training time per run from its `metrics.csv` (the iterations' `seconds`; held-out evaluations and "
             "checkpoints excluded), one torch thread and the local sampler, two runs at a time on 2 cores. The "
             "paper-size estimate is the time for 15 M environment steps (Meta-World+'s MAML on ML10) at the run's "
             "measured environment steps per second, i.e. it assumes an iteration's cost grows with its environment "
             "steps (a meta-batch of 20 and horizon 500 cost what as many steps cost here). On Ray with N workers: "
             "the iterations' sampling time (`time/sampling`) divided by N, the rest (adaptation, meta-gradient, "
             "TRPO) unchanged, and no overhead: an optimistic bound (docs/metaworld/README.md measured 1.8× rather "
             "than 2× with 2 workers).", "",
             "| benchmark | run | iterations | env steps | training wall-clock | median s / iteration | env steps / s "
             "| sampling share | 15 M steps here | " + " | ".join(f"Ray, {n} workers" for n in RAY_WORKERS) + " |",
             "|---|---|---|---|---|---|---|---|---|" + "---|" * len(RAY_WORKERS)]
    for benchmark, by_method in walls.items():
        for method, by_seed in by_method.items():
            for seed, w in sorted(by_seed.items()):
                if w is None:
                    continue
                share = "–" if w["sampling_share"] is None else f"{100 * w['sampling_share']:.0f} %"
                lines.append(f"| {benchmark} | {LABELS[method]} seed {seed} | {w['iterations']} | "
                             f"{w['env_steps'] / 1e6:.2f} M | {w['seconds'] / 3600:.2f} h | "
                             f"{w['median_seconds']:.1f} | "
                             f"{w['steps_per_second']:.0f} | {share} | {hours(w['paper_seconds_local'])} | "
                             + " | ".join(hours(w["paper_seconds_ray"][str(n)]) for n in RAY_WORKERS) + " |")
    lines += ["", f"This invocation: {wall['train']:.0f} s training, {wall['total']:.0f} s in all."]
    return lines


def publish(args: argparse.Namespace) -> None:
    """Copy every run's final checkpoint, config and metrics, and the evaluations, into ``--report-dir``."""
    if args.report_dir.resolve() == args.out.resolve():
        return
    for benchmark in args.benchmarks:
        for method, seed in runs_of(args, benchmark):
            name = f"{method}-seed{seed}"
            publish_run(run_dir(args.out, benchmark, name), run_dir(args.report_dir, benchmark, name))
        evaluation = args.out / "evaluation" / benchmark
        if evaluation.is_dir():
            shutil.copytree(evaluation, args.report_dir / "evaluation" / benchmark, dirs_exist_ok=True)


# -- main -----------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--benchmarks", nargs="+", default=list(BENCHMARKS), choices=list(BENCHMARKS))
    parser.add_argument("--push-seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--push-iterations", type=int, default=120, help="meta-iterations of the ML1 push runs")
    parser.add_argument("--ml10-seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--ml10-iterations", type=int, default=None,
                        help="meta-iterations of the ML10 runs (default: enough for 15 M environment steps)")
    parser.add_argument("--eval-tasks", type=int, default=50)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--eval-seed", type=int, default=0)
    parser.add_argument("--protocol-envs-per-class", type=int, default=1,
                        help="Meta-World's protocol: sub-envs per class, a divisor of 50 (1: per goal, 50 rounds)")
    parser.add_argument("--protocol-adaptation-episodes", type=int, default=10)
    parser.add_argument("--protocol-evaluation-episodes", type=int, default=3)
    parser.add_argument("--protocol-seed", type=int, default=0, help="seed of the policy's noise in the protocol")
    parser.add_argument("--evaluate-run", nargs=2, metavar=("BENCHMARK", "NAME"), help=argparse.SUPPRESS)
    add_study_arguments(parser, Path("runs/reproduce-metaworld"), "results.md and .json")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what an evaluation's child process is given
    resolve_study_paths(args)
    for key in ("push_iterations", "ml10_iterations", "jobs", "eval_tasks", "eval_episodes",
                "protocol_envs_per_class", "protocol_adaptation_episodes", "protocol_evaluation_episodes"):
        value = getattr(args, key)
        if value is not None and value < 1:
            parser.error(f"--{key.replace('_', '-')} {value} is not allowed; use an integer >= 1")
    if 50 % args.protocol_envs_per_class:
        parser.error(f"--protocol-envs-per-class {args.protocol_envs_per_class} is not allowed; use a divisor of 50")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.evaluate_run is not None:  # a child of evaluate_runs: one run's evaluations, into the caches
        import torch

        torch.set_num_threads(1)
        benchmark, name = args.evaluate_run
        evaluate(args, benchmark, name)
        protocol(args, benchmark, name)
        return
    start = time.perf_counter()
    wall = {"train": 0.0}
    if ML10 in args.benchmarks:
        steps = steps_per_iteration(config_of(args, ML10, "maml"))
        print(f"ML10: {iterations_of(args, ML10)} iterations of {steps} environment steps "
              f"({iterations_of(args, ML10) * steps / 1e6:.2f} M; a paper-size run is {PAPER_STEPS / 1e6:.0f} M)",
              flush=True)
    if not args.evaluate_only:
        install_stop_handlers("reproduce_metaworld")
        jobs = [lambda b=b, m=m, s=s: train(args, b, m, s) for b in args.benchmarks for m, s in runs_of(args, b)]
        failures = run_jobs(args.jobs, jobs)
        wall["train"] = time.perf_counter() - start
        if failures:
            raise SystemExit("\n".join(failures) + "\nthe other runs kept their checkpoints; fix the cause and run "
                             "the same command again to continue")
        if stop_requested():
            raise SystemExit("stopped: every run kept its checkpoint; run the same command again to continue (or "
                             "with --ml10-iterations at the ML10 checkpoints' iteration to end ML10 there)")
    from metasgd_rl.allocator import reuse_freed_memory

    reuse_freed_memory()  # the evaluations build and free many Meta-World envs
    failures = evaluate_runs(args)
    if failures:
        raise SystemExit("\n".join(failures))
    report(args, wall, start)
    if args.publish:
        publish(args)
        print(f"published the checkpoints into {args.report_dir}/runs")


if __name__ == "__main__":
    main()
