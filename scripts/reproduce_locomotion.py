"""Meta-SGD vs MAML on MuJoCo locomotion at MAML's protocol, several seeds, beside the papers' numbers.

    python scripts/reproduce_locomotion.py --out ~/runs/locomotion-study --report-dir docs/results/locomotion \\
        --publish                                        # the whole study, resumable (about 15 h on 2 cores)
    python scripts/reproduce_locomotion.py --out docs/results/locomotion --evaluate-only   # the committed checkpoints
    python scripts/reproduce_locomotion.py --families HalfCheetahVel-v0 --seeds 0 1 --iterations 2 \\
        --pretrain-iterations 1 --set meta_batch_size=2 --set episodes_per_task=2 --out /tmp/smoke  # a smoke run

The study (issue 21): MAML and Meta-SGD with the repository's configs ``configs/{halfcheetah-vel,halfcheetah-dir,
ant-dir}-{maml,metasgd}.yaml`` (MAML's §5.3 protocol: meta-batch 40, 20 episodes per inner step, horizon 200, one
inner step of 0.1, TRPO with max-KL 0.01, a 2×100 ReLU policy; Meta-SGD's α by its own Adam). HalfCheetahVel-v0
and HalfCheetahDir-v0 with ``--seeds`` for ``--iterations`` meta-iterations each; AntDir-v0 with the first seed
only, for ``--ant-iterations`` and ``--ant-episodes`` episodes per inner step (MAML used 40 there; 20 by default,
which doubles the iterations that fit). ``--set KEY=VALUE`` overrides every config (smoke runs).

Time on 2 cores, two runs side by side: a cheetah iteration takes 15–20 s per run; the twelve cheetah runs of 300
iterations took 20.8 h of one core, about 10.5 h of the two (measured, docs/results/locomotion.md). The Ant on
gymnasium's envs (episodes end when it falls: 40–57 s per iteration measured, 1.15 h per 100-iteration run), the
pretrainings and the evaluations add 2.4 h: the whole study took 25.8 h of one core, about 12.9 h of the two.

Stages, each resumable:
1. **Training** (``metasgd_rl.training_jobs``), ``--jobs`` runs at a time, each ``metasgd-rl train`` with
   ``num_threads: 1`` in ``--out``/runs/FAMILY/METHOD-seedS (log beside it). A run with a ``final.pt`` at
   ``--iterations`` is reused, any other run directory resumed (``--resume``; more iterations than before
   continue the run). The two methods of a family and seed train side by side, so their wall-clocks compare.
   SIGINT/SIGTERM stop every run after its current iteration, with a checkpoint (checkpoints every 10
   iterations). Three stages, each after the one before: the cheetah runs, the pretrainings (below; the Ant's
   first, the two cheetahs' one after the other beside it), the two Ant runs together.
2. **Baselines** (MAML's): ``pretrained-seed0``, θ trained on the average pre-update return of training tasks
   (``metasgd_rl.baselines.pretrain_step``) for ``--pretrain-iterations`` with the MAML config's settings, and
   ``random-init-seed0``, the untrained θ; both fine-tuned by vanilla policy gradient (α = 0.1). Saved as
   ``final.pt`` like the runs, so ``metasgd-rl evaluate`` evaluates them too.
3. **Evaluation** of every ``final.pt`` exactly as ``metasgd-rl evaluate CHECKPOINT --tasks 40 --steps 3
   --episodes 20 --seed 2026 --alpha-probe`` does (the same tasks for every model of a family), cached per
   checkpoint in ``--out``/evaluation; per Meta-SGD run also the α probe and α's statistics per tensor. Runs
   without ``final.pt`` (a report written mid-study) are listed with their checkpoint's iteration, not evaluated.
4. **Report** in ``--report-dir`` (default ``--out``): ``results.md``, ``results.json``, ``adaptation.png``,
   ``learning_curves.png`` (post-adaptation return on the training tasks against environment steps). The table:
   mean over seeds ± 95 % t-interval over seeds, Welch's test Meta-SGD − MAML, the baselines and the papers'
   numbers. ``--publish`` also copies every run's ``final.pt``, ``config.yaml`` and ``metrics.csv`` and the
   evaluations into ``--report-dir``/runs and ``--report-dir``/evaluation, the layout ``--out`` has, so that
   ``--out REPORT_DIR --evaluate-only`` evaluates the published checkpoints again.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import signal
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import metasgd_rl as msr  # noqa: E402
from metasgd_rl.anchors import BESIDE_HEADER, PaperRows, beside_papers  # noqa: E402
from metasgd_rl.baselines import pretrain_step, random_init  # noqa: E402
from metasgd_rl.command_line import shown_command
from metasgd_rl.config import load_config, model_kwargs  # noqa: E402
from metasgd_rl.io import atomic_write_text  # noqa: E402
from metasgd_rl.probe import alpha_probe  # noqa: E402
from metasgd_rl.report import alpha_statistics, save_png  # noqa: E402
from metasgd_rl.stats import mean_ci95  # noqa: E402
from metasgd_rl.study import plot_seed_adaptation, seed_arrays, seed_rows, step_header, summarise_seeds  # noqa: E402
from metasgd_rl.training_jobs import (  # noqa: E402
    add_study_arguments,
    file_digest,
    install_stop_handlers,
    publish_run,
    resolve_study_paths,
    run_job,
    run_jobs,
    stop_requested,
    train_run,
    trained_iterations,
    unfinished_note,
)

ROOT = Path(__file__).resolve().parent.parent
FAMILIES = {"HalfCheetahVel-v0": "halfcheetah-vel", "HalfCheetahDir-v0": "halfcheetah-dir", "AntDir-v0": "ant-dir"}
ANT = "AntDir-v0"
METHODS = ("metasgd", "maml")
BASELINES = ("pretrained", "random-init")
LABELS = {"metasgd": "Meta-SGD", "maml": "MAML", "pretrained": "pretrained + fine-tune",
          "random-init": "random init + fine-tune"}
#: the papers' numbers after 0..3 steps, as printed (MAML's are read from its Figure 5: ±20 %), and which of our
#: rows each is compared with (none: context only, its protocol differs too much for a verdict)
ANCHORS: PaperRows = {
    "HalfCheetahVel-v0": [
        ("MAML, Finn et al. 2017, Fig. 5 (horizon 200)", ["≈ −130", "≈ −75", "", "≈ −60"], METHODS),
        ("random init + fine-tune, MAML Fig. 5", ["", "< −200", "< −200", "< −200"], ("random-init",)),
    ],
    "HalfCheetahDir-v0": [
        ("MAML, Finn et al. 2017, Fig. 5 (horizon 200)", ["≈ 0", "≈ 300", "", "320 – 400"], METHODS),
        ("MAML, learn2learn (horizon 100, meta-batch 20, 300 iterations)", ["", "≈ 260", "", "≈ 400"], ()),
    ],
    "AntDir-v0": [
        ("MAML, learn2learn (horizon 100, meta-batch 20, 800 iterations)", ["", "", "", "≈ 185"], ()),
    ],
}
#: a reading of Figure 5 is good to ±20 % and to no better than ±10 (so that "≈ 0" is not a point)
READ_FLOOR = 10.0
CHECKPOINT_EVERY = 10

# -- layout ---------------------------------------------------------------------------------------------------
def run_dir(out: Path, family: str, name: str) -> Path:
    return out / "runs" / family / name


def families_of(args: argparse.Namespace) -> list[str]:
    return list(args.families)


def seeds_of(args: argparse.Namespace, family: str) -> list[int]:
    return args.seeds[:1] if family == ANT else list(args.seeds)


def iterations_of(args: argparse.Namespace, family: str) -> int:
    return args.ant_iterations if family == ANT else args.iterations


def config_sets(args: argparse.Namespace, family: str) -> list[str]:
    """The overrides of every config of ``family``: ``--ant-episodes`` for the Ant, then ``--set``."""
    return ([f"episodes_per_task={args.ant_episodes}"] if family == ANT else []) + list(args.set)


def config_path(family: str, method: str) -> Path:
    return ROOT / "configs" / f"{FAMILIES[family]}-{method}.yaml"


# -- training (metasgd_rl.training_jobs runs each as a child process) -----------------------------------------
def train(args: argparse.Namespace, family: str, method: str, seed: int) -> str:
    """Train (or continue) one run to its iterations; returns what was done."""
    name = f"{method}-seed{seed}"
    return train_run(run_dir(args.out, family, name), config_path(family, method), iterations_of(args, family),
                     [*config_sets(args, family), f"seed={seed}"], f"{family} {name}", CHECKPOINT_EVERY)


def pretrain(args: argparse.Namespace, family: str) -> str:
    """The pretrained baseline of ``family`` in a child process (see :func:`pretrain_job`)."""
    directory = run_dir(args.out, family, "pretrained-seed0")
    if trained_iterations(directory) == args.pretrain_iterations:
        return f"{family} pretrained: reused"
    command = [sys.executable, str(Path(__file__).resolve()), "--pretrain-job", family, "--out", str(args.out),
               "--pretrain-iterations", str(args.pretrain_iterations), "--ant-episodes", str(args.ant_episodes),
               *[x for s in args.set for x in ("--set", s)]]
    return run_job(command, directory, f"{family} pretrained", f"{args.pretrain_iterations} iterations")


def baseline_config(args: argparse.Namespace, family: str) -> dict[str, Any]:
    """The MAML config of ``family`` (with the study's overrides): the baselines copy its settings."""
    return load_config(config_path(family, "maml"), config_sets(args, family))


def fine_tune_model(args: argparse.Namespace, family: str) -> msr.MAML:
    """The untrained θ of seed 0 with the MAML config's settings, fine-tuned with its fixed α."""
    kwargs = model_kwargs(baseline_config(args, family))
    for key in ("family", "seed", "estimator"):
        kwargs.pop(key)
    return random_init(family, policy_kwargs=kwargs.pop("policy_kwargs"), step_size=kwargs.pop("alpha_init"), seed=0,
                       **kwargs)


def pretrain_job(args: argparse.Namespace) -> None:
    """Pretrain θ of ``args.pretrain_job`` to ``--pretrain-iterations``, resumable from ``checkpoint.pt``."""
    family = args.pretrain_job
    directory = run_dir(args.out, family, "pretrained-seed0")
    directory.mkdir(parents=True, exist_ok=True)
    checkpoint = directory / "checkpoint.pt"
    torch.set_num_threads(1)
    model = msr.MAML.load(checkpoint) if checkpoint.is_file() else fine_tune_model(args, family)
    metrics = directory / "metrics.csv"
    rows = list(csv.DictReader(metrics.open())) if metrics.is_file() else []
    rows = [r for r in rows if int(r["iteration"]) <= model.iteration]
    stop = threading.Event()  # SIGTERM/SIGINT: checkpoint after the current iteration, like metasgd-rl train
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stop.set())
    while model.iteration < args.pretrain_iterations:
        info = pretrain_step(model)
        rows.append({"iteration": info["iteration"], "pre_return": info["pre_return"], "seconds": info["seconds"],
                     "update_rejected": int(info["update_rejected"])})
        if model.iteration % CHECKPOINT_EVERY == 0 or model.iteration == args.pretrain_iterations or stop.is_set():
            write_csv(metrics, rows)
            model.save(checkpoint)
            print(f"pretrained {family}: iteration {model.iteration}, pre-update return {info['pre_return']:.1f}",
                  flush=True)
        if stop.is_set():
            print(f"pretrained {family}: stopped at iteration {model.iteration} with a checkpoint", flush=True)
            return
    model.save(directory / "final.pt")


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    lines = [",".join(rows[0])] + [",".join(str(r[k]) for k in rows[0]) for r in rows]
    atomic_write_text(path, "\n".join(lines) + "\n")


# -- evaluation -----------------------------------------------------------------------------------------------
def evaluate(args: argparse.Namespace, family: str, name: str) -> dict[str, Any]:
    """``metasgd-rl evaluate final.pt --tasks --steps --episodes --seed --alpha-probe`` of one run, cached."""
    final = run_dir(args.out, family, name) / "final.pt"
    if name.startswith("random-init") and not final.exists():
        fine_tune_model(args, family).save(final)
    cache = args.out / "evaluation" / family / f"{name}.json"
    settings = {"tasks": args.eval_tasks, "steps": args.eval_steps, "episodes": args.eval_episodes,
                "seed": args.eval_seed, "checkpoint_sha256": file_digest(final)}
    if cache.is_file() and not args.reevaluate:
        cached = json.loads(cache.read_text())
        if cached.get("settings") == settings:
            return cached
    model = msr.MetaSGD.load(final)
    start = time.perf_counter()
    with warnings.catch_warnings():  # the report says which families cannot hold tasks out
        warnings.filterwarnings("ignore", message=".*disjoint_splits = False.*")
        result = msr.evaluate_adaptation(model, n_tasks=args.eval_tasks, steps=args.eval_steps,
                                         episodes=args.eval_episodes, split="test", seed=args.eval_seed)
    record: dict[str, Any] = {"settings": settings, "iteration": model.iteration, "per_step": result.mean().tolist(),
                              "per_task": result.returns.tolist(), "tasks": result.tasks}
    if model.step_sizes.learnable:
        probe = alpha_probe(model, episodes=args.eval_episodes, split="test", seed=args.eval_seed,
                            tasks=result.tasks)
        record["probe"] = probe.to_dict() | {"differences": {v: probe.difference(v) for v in probe.returns
                                                             if v != "learned"}}
        record["alpha"] = alpha_statistics(model)
    record["seconds"] = time.perf_counter() - start
    getattr(model.family, "close", lambda: None)()
    cache.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(cache, json.dumps(record))
    print(f"evaluated {family} {name}: {[round(x, 1) for x in record['per_step']]} ({record['seconds']:.0f} s)",
          flush=True)
    return record


def read_curve(directory: Path) -> dict[str, np.ndarray]:
    """Per iteration of a run: cumulative environment steps, pre/post-adaptation return, seconds."""
    with open(directory / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    return {"env_steps": np.cumsum([float(r["env_steps"]) for r in rows]),
            "pre_return": np.array([float(r["pre_return"]) for r in rows]),
            "post_return": np.array([float(r["post_return"]) for r in rows]),
            "seconds": np.array([float(r["seconds"]) for r in rows])}


def pretrain_curve(args: argparse.Namespace, family: str) -> dict[str, np.ndarray] | None:
    """The pretrained baseline's iterations as :func:`read_curve` gives a run's (its environment steps from the MAML
    config: one rollout of θ per task and iteration); None before it has trained."""
    metrics = run_dir(args.out, family, "pretrained-seed0") / "metrics.csv"
    if not metrics.is_file():
        return None
    with open(metrics) as f:
        seconds = np.array([float(r["seconds"]) for r in csv.DictReader(f)])
    config = baseline_config(args, family)
    per_iteration = (config["meta_batch_size"] * config["episodes_per_task"]
                     * config["family_kwargs"]["max_episode_steps"])
    return {"seconds": seconds, "env_steps": per_iteration * np.arange(1, len(seconds) + 1, dtype=np.float64)}


# -- report ---------------------------------------------------------------------------------------------------
def shared_tasks_note(families: list[str]) -> str:
    """Which families draw their "held-out" tasks from the training distribution (``disjoint_splits = False``)."""
    shared = [f for f in families if not getattr(msr.make_task_family(f), "disjoint_splits", True)]
    if not shared:
        return ""
    return (f" {' and '.join(shared)} have two tasks only (direction ±1): their evaluation tasks are the training "
            "tasks, so those rows measure adaptation to tasks seen in training, as in the papers.")


def anchor_rows(family: str, steps: int) -> list[str]:
    return [f"| {family} | {label} | " + " | ".join((values + [""] * steps)[:steps + 1]) + " |"
            for label, values, _ in ANCHORS.get(family, [])]


def probe_rows(family: str, records: dict[int, dict[str, Any]]) -> list[str]:
    """One row per Meta-SGD seed: the return after one step with learned α, hidden layers' α = α_init and = 0."""
    rows = []
    for seed, rec in sorted(records.items()):
        probe = rec["probe"]
        mean, ci, diff = probe["mean"], probe["ci95"], probe["differences"]
        rows.append(f"| {family} | {seed} | {mean['learned']:.1f} ± {ci['learned']:.1f} | "
                    f"{mean['hidden_init']:.1f} ({diff['hidden_init'][0]:+.1f} ± {diff['hidden_init'][1]:.1f}) | "
                    f"{mean['hidden_zero']:.1f} ({diff['hidden_zero'][0]:+.1f} ± {diff['hidden_zero'][1]:.1f}) |")
    if len(records) > 1:  # over seeds: the mean of each seed's mean, ± a 95 % t-interval over seeds
        cells = []
        for variant in ("learned", "hidden_init", "hidden_zero"):
            value = mean_ci95([r["probe"]["mean"][variant] for r in records.values()])
            change = "" if variant == "learned" else " ({:+.1f} ± {:.1f})".format(*mean_ci95(
                [r["probe"]["differences"][variant][0] for r in records.values()]))
            cells.append(f"{value[0]:.1f} ± {value[1]:.1f}{change}")
        rows.append(f"| {family} | mean of {len(records)} | " + " | ".join(cells) + " |")
    return rows


def alpha_rows(family: str, records: dict[int, dict[str, Any]]) -> list[str]:
    """Per tensor: α's mean, spread and mean |α − α_init| averaged over the Meta-SGD seeds."""
    per_tensor: dict[str, list[dict[str, Any]]] = {}
    for rec in records.values():
        for s in rec["alpha"]:
            per_tensor.setdefault(s["tensor"], []).append(s)
    rows = []
    for tensor, stats in per_tensor.items():
        def avg(key: str, stats: list[dict[str, Any]] = stats) -> float:
            return float(np.mean([s[key] for s in stats]))
        rows.append(f"| {family} | {tensor} | {stats[0]['size']} | {avg('mean'):.4f} | {avg('std'):.4f} | "
                    f"{min(s['min'] for s in stats):.4f} | {max(s['max'] for s in stats):.4f} | "
                    f"{100 * avg('negative'):.1f} % | {avg('mean_abs_change'):.4f} |")
    return rows


def plot_curves(path: Path, curves: dict[str, dict[str, dict[int, dict[str, np.ndarray]]]]) -> None:
    fig, axes = plt.subplots(1, len(curves), figsize=(5.2 * len(curves), 3.8), squeeze=False)
    for ax, (family, by_method) in zip(axes[0], curves.items(), strict=True):
        for method, runs in by_method.items():
            length = min(len(c["post_return"]) for c in runs.values())
            steps = next(iter(runs.values()))["env_steps"][:length] / 1e6
            post = np.array([c["post_return"][:length] for c in runs.values()])
            seeds = f"{len(runs)} seed" + ("" if len(runs) == 1 else "s")
            line, = ax.plot(steps, post.mean(0), label=f"{LABELS[method]}, after 1 step ({seeds})")
            ax.fill_between(steps, post.min(0), post.max(0), alpha=0.15, color=line.get_color())
            pre = np.array([c["pre_return"][:length] for c in runs.values()])
            ax.plot(steps, pre.mean(0), ls="--", color=line.get_color(), lw=0.8, label=f"{LABELS[method]}, before")
        ax.set(title=family, xlabel="environment steps (millions)", ylabel="return on the training tasks")
        ax.legend(fontsize="x-small")
    fig.tight_layout()
    save_png(fig, path)
    plt.close(fig)


def report(args: argparse.Namespace, wall: dict[str, float], start: float) -> None:
    """The report of every finished run, evaluating what is not cached; ``wall['total']`` is set from ``start``
    (this invocation's start) once the evaluations are done, so that it counts them."""
    steps = args.eval_steps
    scores: dict[str, dict[str, dict[int, list[float]]]] = {}
    records: dict[str, dict[str, dict[int, dict[str, Any]]]] = {}
    curves: dict[str, dict[str, dict[int, dict[str, np.ndarray]]]] = {}
    unfinished: list[str] = []  # runs without final.pt: listed, not evaluated (a report written mid-study)
    for family in families_of(args):
        records[family] = {m: {} for m in (*METHODS, *BASELINES)}
        curves[family] = {m: {} for m in METHODS}
        for method in METHODS:
            for seed in seeds_of(args, family):
                directory = run_dir(args.out, family, f"{method}-seed{seed}")
                if not (directory / "final.pt").is_file():
                    unfinished.append(unfinished_note(directory, f"{family} {method}-seed{seed}"))
                    continue
                records[family][method][seed] = evaluate(args, family, f"{method}-seed{seed}")
                curves[family][method][seed] = read_curve(directory)
        if not any(records[family][m] for m in METHODS):
            continue  # the baselines alone compare with nothing: the family waits for its runs
        for baseline in BASELINES:
            directory = run_dir(args.out, family, f"{baseline}-seed0")
            if baseline == "pretrained" and not (directory / "final.pt").exists():
                unfinished.append(unfinished_note(directory, f"{family} pretrained-seed0"))
                continue
            records[family][baseline][0] = evaluate(args, family, f"{baseline}-seed0")
        scores[family] = {m: {s: r["per_step"] for s, r in by_seed.items()}
                          for m, by_seed in records[family].items() if by_seed}
        curves[family] = {m: runs for m, runs in curves[family].items() if runs}
    if not scores:
        raise SystemExit("no run of " + ", ".join(families_of(args)) + " has its final.pt yet: "
                         + "; ".join(unfinished))
    summaries = {f: summarise_seeds(seed_arrays({m: scores[f][m] for m in METHODS if m in scores[f]}))
                 for f in scores}
    baselines = {f: summarise_seeds(seed_arrays({m: scores[f][m] for m in BASELINES if m in scores[f]}))
                 for f in scores}

    table = ["| family | method | " + " | ".join(step_header(steps)) + " |", "|---|---|" + "---|" * (steps + 1)]
    for family in scores:
        table += (seed_rows(family, summaries[family], LABELS) + seed_rows(family, baselines[family], LABELS)
                  + anchor_rows(family, steps))
    probes = ["| family | seed | learned α | hidden layers' α = α_init (learned − this) | "
              "hidden layers' α = 0 (learned − this) |", "|---|---|---|---|---|"]
    alphas = ["| family | tensor | entries | mean α | std | min | max | negative | mean \\|α − α_init\\| |",
              "|---|---|---|---|---|---|---|---|---|"]
    walls = ["| family | run | iterations | environment steps | training wall-clock | median s / iteration |",
             "|---|---|---|---|---|---|"]
    beside = [BESIDE_HEADER[0].replace("group", "family"), BESIDE_HEADER[1]]
    standings: list[dict[str, Any]] = []
    for family in scores:
        rows, found = beside_papers(family, ANCHORS, summaries[family]["methods"] | baselines[family]["methods"],
                                    LABELS, floor=READ_FLOOR)
        beside += rows
        standings += found
    training_seconds = 0.0
    for family in scores:
        probes += probe_rows(family, records[family]["metasgd"])
        alphas += alpha_rows(family, records[family]["metasgd"])
        timed = [(f"{LABELS[m]} seed {seed}", c)
                 for m, runs in curves[family].items() for seed, c in sorted(runs.items())]
        pretrained = pretrain_curve(args, family)
        if pretrained is not None:
            timed.append((f"{LABELS['pretrained']} (pretraining)", pretrained))
        for name, c in timed:
            walls.append(f"| {family} | {name} | {len(c['seconds'])} | {c['env_steps'][-1] / 1e6:.1f} M | "
                         f"{c['seconds'].sum() / 3600:.2f} h | {np.median(c['seconds']):.1f} |")
            training_seconds += float(c["seconds"].sum())
    evaluation_seconds = sum(r["seconds"] for by_method in records.values() for by_seed in by_method.values()
                             for r in by_seed.values())
    args.report_dir.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, len(scores), figsize=(5.2 * len(scores), 3.8), squeeze=False)
    for ax, family in zip(axes[0], scores, strict=True):
        plot_seed_adaptation(ax, summaries[family], LABELS, title=family)
    fig.tight_layout()
    save_png(fig, args.report_dir / "adaptation.png")
    plt.close(fig)
    plot_curves(args.report_dir / "learning_curves.png", {f: curves[f] for f in scores})

    command = shown_command(__file__)
    text = "\n".join([
        "# Meta-SGD vs MAML on locomotion at MAML's protocol", "", f"`{command}`", "",
        f"Held-out evaluation: {args.eval_tasks} tasks (`split=\"test\"`, seed {args.eval_seed}), {args.eval_episodes} "
        f"episodes per task and step, the same tasks and rollout seeds for every model of a family. Mean over seeds "
        "± 95 % t-interval over seeds (a baseline or a single seed: its mean); a difference row is Meta-SGD's mean "
        "minus MAML's ± its 95 % Welch interval and the p-value of Welch's t-test over seeds. The papers' rows are "
        "their published numbers (MAML's read from its Figure 5, ±20 %)." + shared_tasks_note(list(scores)), "",
        *table, "",
        *([f"Runs without `final.pt`, not evaluated yet: {'; '.join(unfinished)}.", ""] if unfinished else []),
        "![adaptation](adaptation.png)", "", "## Beside the papers", "",
        "Each of our rows beside each paper's number it compares with. A number read from MAML's Figure 5 stands "
        f"for ± 20 % of itself (at least ± {READ_FLOOR:g}), a range for itself, a bound for one side. *Level*: our "
        "mean lies in that interval; *above*/*below*: outside it, and *within the seeds' interval* where our 95 % "
        "interval over seeds still reaches it.", "",
        "How our protocol differs from MAML's: the cheetahs train "
        f"{args.iterations} meta-iterations (MAML: up to 500; its released cheetah script 800) and the Ant "
        f"{args.ant_iterations} with {args.ant_episodes} episodes per inner step (MAML: 40); the envs are "
        "gymnasium's v5 models, whose forward velocity is the root body's where MAML's rllab envs used the torso's "
        "centre of mass; the Ant's reward is Ant-v5's (healthy reward 1, control cost 0.5 ‖a‖², contact cost; "
        "rllab's: 0.05 and 0.005 ‖a‖²), so its returns are on another scale; TRPO's Fisher-vector products use a "
        "tenth of each task's episodes (`fvp_subsample: 0.1`, exact products of the KL's Hessian on them, where "
        "MAML used finite differences on all). learn2learn's rows ran horizon 100, so their returns are not on our "
        "scale: they are context, not compared.",
        "", *beside, "", "## Training curves", "",
        "Return on each iteration's training tasks before (dashed) and after one inner step (solid), mean over "
        "seeds with the range of the seeds shaded.", "", "![learning curves](learning_curves.png)", "",
        "## Does the adapted policy use the learned α? (α probe, Meta-SGD)", "",
        "Return after one step on the held-out tasks with the learned α, with the hidden layers' α reset to α_init, "
        "and with it set to 0; in brackets the learned minus that, paired over tasks (± 95 % interval).", "",
        *probes, "", "## What α learned (Meta-SGD, per tensor, averaged over seeds)", "", *alphas, "",
        "## Wall-clock", "",
        "Training time per run (iterations only; held-out evaluations and checkpoints excluded), one torch thread, "
        "two runs at a time on 2 cores. The sum counts every iteration as it ran, including stretches where other "
        "work shared the cores; the median iteration is the undisturbed pace. "
        + ("" if args.evaluate_only else f"This invocation trained and pretrained for {wall['train'] / 3600:.2f} h. ")
        + f"All the runs below: {training_seconds / 3600:.1f} h of training and pretraining and "
        f"{evaluation_seconds / 3600:.1f} h of held-out evaluation, one core each, so about "
        f"{(training_seconds + evaluation_seconds) / 7200:.1f} h on 2 cores with two jobs at a time.", "", *walls,
        ""])
    atomic_write_text(args.report_dir / "results.md", text)
    atomic_write_text(args.report_dir / "results.json", json.dumps(
        {"command": command, "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
         "labels": LABELS, "anchors": ANCHORS, "standings": standings, "summary": summaries, "evaluations": records,
         "unfinished": unfinished,
         "wall": wall | {"total": time.perf_counter() - start, "study_training_seconds": training_seconds,
                         "study_evaluation_seconds": evaluation_seconds}},
        indent=1))
    print("\n".join(table))
    print(f"wrote {args.report_dir}/results.md")


def publish(args: argparse.Namespace) -> None:
    """Copy every run's final checkpoint, config and metrics, and the evaluations, into ``--report-dir``."""
    if args.report_dir.resolve() == args.out.resolve():
        return
    for family in families_of(args):
        names = [f"{m}-seed{s}" for m in METHODS for s in seeds_of(args, family)] + [f"{b}-seed0" for b in BASELINES]
        for name in names:
            if not publish_run(run_dir(args.out, family, name), run_dir(args.report_dir, family, name)):
                continue
            evaluation = args.out / "evaluation" / family / f"{name}.json"
            if evaluation.is_file():
                (args.report_dir / "evaluation" / family).mkdir(parents=True, exist_ok=True)
                shutil.copy2(evaluation, args.report_dir / "evaluation" / family / f"{name}.json")


# -- main -----------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--iterations", type=int, default=300, help="meta-iterations of the cheetah runs")
    parser.add_argument("--ant-iterations", type=int, default=100, help="meta-iterations of the Ant runs")
    parser.add_argument("--ant-episodes", type=int, default=20, help="episodes per inner step of the Ant runs")
    parser.add_argument("--pretrain-iterations", type=int, default=None,
                        help="iterations of the pretrained baseline (default: the family's meta-iterations)")
    parser.add_argument("--eval-tasks", type=int, default=40)
    parser.add_argument("--eval-steps", type=int, default=3)
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument("--eval-seed", type=int, default=2026)
    add_study_arguments(parser, Path("runs/reproduce-locomotion"), "tables and plots")
    parser.add_argument("--pretrain-job", choices=list(FAMILIES), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    resolve_study_paths(args)
    for key in ("iterations", "ant_iterations", "ant_episodes", "jobs", "eval_tasks", "eval_episodes"):
        if getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')} {getattr(args, key)} is not allowed; use an integer >= 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.pretrain_job:
        if args.pretrain_iterations is None:
            raise SystemExit("--pretrain-job needs --pretrain-iterations")
        pretrain_job(args)
        return
    start = time.perf_counter()
    wall = {"train": 0.0}
    if not args.evaluate_only:
        install_stop_handlers("reproduce_locomotion")
        # three stages, each waiting for the one before: the cheetah runs seed by seed, both methods of a (family,
        # seed) side by side; the baselines' pretraining, the Ant's first (the longest: the cheetahs' two run one
        # after the other beside it); the two Ant runs, started together so that their wall-clocks compare
        runs = sorted(((f, m, s) for f in families_of(args) for s in seeds_of(args, f) for m in METHODS),
                      key=lambda job: (job[0] == ANT, job[2], list(FAMILIES).index(job[0])))
        pretrainings = []
        for family in sorted(families_of(args), key=lambda f: f != ANT):
            pretrain_args = argparse.Namespace(**{**vars(args), "pretrain_iterations": args.pretrain_iterations
                                                  or iterations_of(args, family)})
            pretrainings.append(lambda a=pretrain_args, f=family: pretrain(a, f))
        stages = [[lambda job=job: train(args, *job) for job in runs if job[0] != ANT], pretrainings,
                  [lambda job=job: train(args, *job) for job in runs if job[0] == ANT]]
        failures = [line for stage in stages for line in run_jobs(args.jobs, stage)]
        wall["train"] = time.perf_counter() - start
        if failures:
            raise SystemExit("\n".join(failures) + "\nthe other runs kept their checkpoints; fix the cause and run "
                             "the same command again to continue")
        if stop_requested():
            raise SystemExit("stopped: every run kept its checkpoint; run the same command again to continue")
    report(args, wall, start)
    if args.publish:
        publish(args)
        print(f"published the checkpoints into {args.report_dir}/runs")


if __name__ == "__main__":
    main()
