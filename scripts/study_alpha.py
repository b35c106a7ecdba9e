"""The α study: does Meta-SGD's learned α beat MAML's fixed step, and where?

    python scripts/study_alpha.py select            # α-training variants and inits on validation tasks, 3 seeds
    python scripts/study_alpha.py main --metasgd adam --name main-navigation \
        --settings Navigation2D-v0 Navigation2D-RandomStart-v0
    python scripts/study_alpha.py main --metasgd adam --name main-navigation-2steps \
        --settings Navigation2D-v0-2steps Navigation2D-RandomStart-v0-2steps
    python scripts/study_alpha.py main --metasgd adam --name main-locomotion \
        --settings HalfCheetahVel-v0 HalfCheetahDir-v0

Both phases train every (setting, method, seed) with ``metasgd-rl train`` on a config built from
``configs/<setting's config>.yaml`` plus the setting's and the method's overrides, in ``--jobs`` processes of one
torch thread each. Runs live in ``--out``/runs/SETTING/METHOD-seedS: a finished run whose config matches is reused,
an interrupted one resumed. Each setting's models are then evaluated on the same tasks with the same rollout seed:

- ``select`` scores on *validation* tasks (``split="train"``, ``--eval-seed`` 7, a stream no training iteration
  uses), so choosing a variant never looks at the test tasks;
- ``main`` scores on *held-out* tasks (``split="test"``, ``--eval-seed`` 2026).

Per setting and method: the return before and after each inner step (mean over the seeds of each seed's mean over
tasks ± a 95% t-interval over seeds), Welch's t-test against MAML over seeds, α's mean per tensor, the α probe
(return after one step with the hidden layers' α reset to α_init / set to 0; ``metasgd_rl.probe``) and the wall
time per run. Locomotion settings add the MAML paper's baselines, fine-tuned by vanilla policy gradient with
step 0.1: "pretrained" (θ trained on the average pre-update return of training tasks for as many iterations,
``--baseline-seeds``) and "random init". Writes ``results.md``, ``results.json`` and ``adaptation.png`` (adaptation
curves above, learning curves below) into ``--out``/PHASE (or ``--out``/``--name``).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import metasgd_rl as msr  # noqa: E402
from metasgd_rl.baselines import FINE_TUNE_KEYS, pretrain_multitask, random_init  # noqa: E402
from metasgd_rl.command_line import shown_command
from metasgd_rl.config import MAML_FIXED, read_yaml_file, resolve_config, yaml_dump  # noqa: E402
from metasgd_rl.io import atomic_write_text  # noqa: E402
from metasgd_rl.model import with_legacy_defaults  # noqa: E402
from metasgd_rl.report import alpha_statistics, read_metrics, save_png  # noqa: E402
from metasgd_rl.stats import mean_ci95, welch_test  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
#: keys that do not change what a run computes: a finished run differing only in these is reused
NON_SEMANTIC = ("run_dir", "progress_bar", "checkpoint_every", "eval_every", "eval_tasks", "sampler", "ray_workers",
                "ray_address", "task_chunk_size")


@dataclass(frozen=True)
class Setting:
    """A family and protocol: ``config`` names configs/<config>-metasgd.yaml; ``sets`` override it."""

    config: str
    sets: dict[str, Any]
    iterations: int
    eval_tasks: int = 40
    eval_episodes: int = 20
    eval_steps: int = 3
    metasgd_sets: dict[str, Any] = field(default_factory=dict)  # only for Meta-SGD (per-step α)
    locomotion: bool = False


# the reduced locomotion protocol that fits this 2-core machine: 20 tasks x 10 episodes x horizon 100
_CHEETAH = dict(meta_batch_size=20, episodes_per_task=10, family_kwargs={"max_episode_steps": 100})
SETTINGS: dict[str, Setting] = {
    "Navigation2D-v0": Setting("navigation2d", {}, 100),
    "Navigation2D-RandomStart-v0": Setting("navigation2d", {"family": "Navigation2D-RandomStart-v0"}, 100),
    "Navigation2D-v0-2steps": Setting("navigation2d", {"inner_steps": 2}, 100, metasgd_sets={"alpha_per_step": True}),
    "Navigation2D-RandomStart-v0-2steps": Setting(
        "navigation2d", {"family": "Navigation2D-RandomStart-v0", "inner_steps": 2}, 100,
        metasgd_sets={"alpha_per_step": True}),
    "HalfCheetahVel-v0": Setting("halfcheetah-vel", _CHEETAH, 40, eval_tasks=20, eval_episodes=10, eval_steps=2,
                                 locomotion=True),
    "HalfCheetahDir-v0": Setting("halfcheetah-dir", _CHEETAH, 40, eval_tasks=20, eval_episodes=10, eval_steps=2,
                                 locomotion=True),
}
#: the methods: MAML, and Meta-SGD with each way of training α (config overrides)
METHODS: dict[str, dict[str, Any]] = {
    "maml": {"algo": "maml"},
    "joint": {"alpha_optimizer": "joint"},  # α in TRPO's vector with θ (the earlier default)
    "adam": {"alpha_optimizer": "adam", "alpha_lr": 1e-3},
    "adam-log": {"alpha_optimizer": "adam", "alpha_parameterization": "log", "alpha_lr": 1e-2},
    "adam-log-xavier": {"alpha_optimizer": "adam", "alpha_parameterization": "log", "alpha_lr": 1e-2,
                        "policy_kwargs": {"init": "xavier", "output_init_scale": 1.0}},
    "maml-xavier": {"algo": "maml", "policy_kwargs": {"init": "xavier", "output_init_scale": 1.0}},
}
LABELS = {"maml": "MAML", "joint": "Meta-SGD, α joint in TRPO", "adam": "Meta-SGD, α by Adam (linear, lr 1e-3)",
          "adam-log": "Meta-SGD, α by Adam (log, lr 1e-2)",
          "adam-log-xavier": "Meta-SGD, α by Adam (log), xavier init, output scale 1",
          "maml-xavier": "MAML, xavier init, output scale 1", "pretrained": "pretrained + VPG",
          "random": "random init + VPG"}
BASELINES = ("pretrained", "random")


def merge(base: dict[str, Any], sets: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in sets.items():
        out[key] = {**out[key], **value} if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def run_config(setting: Setting, method: str, seed: int, iterations: int) -> dict[str, Any]:
    """The raw config of one run (before ``resolve_config``)."""
    config = read_yaml_file(ROOT / "configs" / f"{setting.config}-metasgd.yaml")
    config = merge(config, {**setting.sets, "seed": seed, "iterations": iterations, "progress_bar": False,
                            "eval_every": 0, "checkpoint_every": max(1, iterations // 4)})
    overrides = METHODS[method]
    if overrides.get("algo") == "maml":
        config = {k: v for k, v in config.items() if k not in MAML_FIXED}
    else:
        config = merge(config, setting.metasgd_sets)
    return merge(config, overrides)


def run_dir(out: Path, setting: str, method: str, seed: int) -> Path:
    return out / "runs" / setting / f"{method}-seed{seed}"


def _semantic(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in NON_SEMANTIC}


def train(out: Path, name: str, method: str, seed: int, iterations: int) -> float:
    """Train one run unless a finished run with the same config exists; returns the seconds spent (0: reused)."""
    directory = run_dir(out, name, method, seed)
    wanted = resolve_config({**run_config(SETTINGS[name], method, seed, iterations), "run_dir": str(directory)})
    if (directory / "final.pt").exists():
        have = read_yaml_file(directory / "config.yaml")
        have = with_legacy_defaults(have, alpha=have["algo"] != "maml")  # runs from before these settings
        if _semantic(have) != _semantic(wanted):
            diff = sorted(k for k in _semantic(wanted) if have.get(k) != wanted[k])
            raise SystemExit(f"{directory} was trained with another config ({', '.join(diff)}); use another --out")
        return 0.0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    if directory.exists():  # interrupted: continue from its checkpoint
        command = [sys.executable, "-m", "metasgd_rl", "train", "--resume", str(directory)]
    else:
        directory.parent.mkdir(parents=True, exist_ok=True)
        config_file = directory.parent / f"{directory.name}.yaml"
        atomic_write_text(config_file, yaml_dump(wanted))
        command = [sys.executable, "-m", "metasgd_rl", "train", str(config_file), "--run-dir", str(directory)]
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"training {name} {method} seed {seed} failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start


def pretrain(out: Path, name: str, seed: int, iterations: int) -> float:
    """The "pretrained" baseline of one seed, saved as final.pt (its seconds in pretrain.json)."""
    directory = run_dir(out, name, "pretrained", seed)
    if (directory / "final.pt").exists():
        return 0.0
    command = [sys.executable, __file__, "pretrain-one", "--setting", name, "--seed", str(seed),
               "--iterations", str(iterations), "--out", str(out)]
    proc = subprocess.run(command, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    if proc.returncode != 0:
        raise RuntimeError(f"pretraining {name} seed {seed} failed:\n{proc.stderr[-3000:]}")
    return json.loads((directory / "pretrain.json").read_text())["seconds"]


def pretrain_one(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    setting = SETTINGS[args.setting]
    config = resolve_config(run_config(setting, "maml", args.seed, args.iterations))
    directory = run_dir(args.out, args.setting, "pretrained", args.seed)
    directory.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    model = pretrain_multitask(config["family"], iterations=args.iterations, seed=args.seed,
                               **fine_tune_kwargs(config), meta_batch_size=config["meta_batch_size"],
                               outer="trpo", outer_kwargs=config["outer_kwargs"], progress_bar=False)
    model.save(directory / "final.pt")
    atomic_write_text(directory / "pretrain.json", json.dumps({"seconds": time.perf_counter() - start}))


def fine_tune_kwargs(config: dict[str, Any]) -> dict[str, Any]:
    return {k: config[k] for k in ("family_kwargs", *FINE_TUNE_KEYS)}


def load_model(out: Path, name: str, method: str, seed: int, iterations: int) -> msr.MetaSGD:
    if method == "random":
        config = resolve_config(run_config(SETTINGS[name], "maml", seed, iterations))
        return random_init(config["family"], seed=seed, **fine_tune_kwargs(config))
    return msr.MetaSGD.load(run_dir(out, name, method, seed) / "final.pt")


def evaluate(model: msr.MetaSGD, setting: Setting, tasks: list, split: str, seed: int,
             probe: bool = True) -> dict[str, Any]:
    result = msr.evaluate_adaptation(model, steps=setting.eval_steps, episodes=setting.eval_episodes, tasks=tasks,
                                     seed=seed, split=split)
    if not probe:
        return {"per_step": result.mean().tolist(), "per_task": result.returns.tolist()}
    probed = msr.alpha_probe(model, episodes=setting.eval_episodes, split=split, seed=seed, tasks=tasks)
    alpha = {}
    for s in alpha_statistics(model):
        alpha[s["tensor"] + (f"[{s['step']}]" if model.step_sizes.num_steps > 1 else "")] = s["mean"]
    return {"per_step": result.mean().tolist(), "per_task": result.returns.tolist(), "probe": probed.mean(),
            "alpha_mean": alpha}


def run_seconds(out: Path, name: str, method: str, seed: int) -> float:
    directory = run_dir(out, name, method, seed)
    if method == "random":
        return 0.0
    if method == "pretrained":
        return json.loads((directory / "pretrain.json").read_text())["seconds"]
    return float(np.sum(read_metrics(directory)["seconds"]))


def cell(values: np.ndarray) -> str:
    mean, half = mean_ci95(np.asarray(values, dtype=float))
    return f"{mean:.1f} ± {half:.1f}" if np.isfinite(half) else f"{mean:.1f}"


def setting_markdown(name: str, scores: dict[str, dict[int, dict]], setting: Setting, seconds: dict) -> list[str]:
    steps = setting.eval_steps
    md = [f"### {name}", "", "| method | seeds | " + " | ".join(f"after {k} step{'s' * (k != 1)}"
                                                              for k in range(steps + 1)) + " | s per run |",
          "|---|---|" + "---|" * (steps + 2)]
    per_seed = {m: np.array([s["per_step"] for s in by_seed.values()]) for m, by_seed in scores.items()}
    for method, values in per_seed.items():
        secs = list(seconds[method].values())
        md.append(f"| {LABELS.get(method, method)} | {len(values)} | "
                  + " | ".join(cell(values[:, k]) for k in range(steps + 1))
                  + f" | {np.mean(secs):.0f} |")
    if "maml" in per_seed:
        for method, values in per_seed.items():
            if method == "maml" or len(values) < 2:
                continue
            tests = [welch_test(values[:, k], per_seed["maml"][:, k]) for k in range(steps + 1)]
            md.append(f"| {LABELS.get(method, method)} − MAML (Welch p) | | "
                      + " | ".join(f"{w.difference:+.1f} ± {w.ci95:.1f} (p = {w.p_value:.2f})" for w in tests)
                      + " | |")
    md += ["", "α probe (return after one step; mean over seeds) and mean α per tensor (mean over seeds):", "",
           "| method | learned α | hidden α = α_init | hidden α = 0 | mean α per tensor |", "|---|---|---|---|---|"]
    for method, by_seed in scores.items():
        if method in BASELINES:
            continue
        probe = {v: cell([s["probe"][v] for s in by_seed.values()]) for v in ("learned", "hidden_init", "hidden_zero")}
        tensors = next(iter(by_seed.values()))["alpha_mean"]
        alpha = ", ".join(f"{t} {np.mean([s['alpha_mean'][t] for s in by_seed.values()]):.3g}" for t in tensors)
        md.append(f"| {LABELS.get(method, method)} | {probe['learned']} | {probe['hidden_init']} | "
                  f"{probe['hidden_zero']} | {alpha} |")
    return md + [""]


def plot(path: Path, names: list[str], scores: dict, curves: dict) -> None:
    fig, axes = plt.subplots(2, len(names), figsize=(4.8 * len(names), 7), squeeze=False)
    for i, name in enumerate(names):
        ax = axes[0, i]
        for method, by_seed in scores[name].items():
            values = np.array([s["per_step"] for s in by_seed.values()])
            mean = values.mean(0)
            half = np.nan_to_num(np.array([mean_ci95(values[:, k])[1] for k in range(values.shape[1])]))
            ax.plot(range(len(mean)), mean, marker="o", label=LABELS.get(method, method))
            ax.fill_between(range(len(mean)), mean - half, mean + half, alpha=0.2)
        ax.set(title=name, xlabel="inner steps on the evaluation task", ylabel="return",
               xticks=range(SETTINGS[name].eval_steps + 1))
        ax.legend(fontsize="x-small")
        ax = axes[1, i]
        for method, runs in curves[name].items():
            runs = np.array(list(runs.values()))
            ax.plot(np.arange(1, runs.shape[1] + 1), runs.mean(0), label=f"{LABELS.get(method, method)}")
            ax.fill_between(np.arange(1, runs.shape[1] + 1), runs.min(0), runs.max(0), alpha=0.15)
        ax.set(xlabel="meta-iteration", ylabel="post-adaptation return (training tasks)")
        ax.legend(fontsize="x-small")
    fig.tight_layout()
    save_png(fig, path)
    plt.close(fig)


def study(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    out_dir = args.out / (args.name or args.phase)
    split, eval_seed = ("train", args.eval_seed or 7) if args.phase == "select" else ("test", args.eval_seed or 2026)
    methods = args.methods or (["maml", "joint", "adam", "adam-log", "adam-log-xavier", "maml-xavier"]
                               if args.phase == "select" else ["maml", args.metasgd])
    iterations = {n: args.iterations or SETTINGS[n].iterations for n in args.settings}
    jobs = [(n, m, s) for n in args.settings for m in methods for s in args.seeds]
    pre = [(n, s) for n in args.settings if SETTINGS[n].locomotion and args.phase == "main"
           for s in args.baseline_seeds]
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(train, args.out, n, m, s, iterations[n]) for n, m, s in jobs]
        futures += [pool.submit(pretrain, args.out, n, s, iterations[n]) for n, s in pre]
        walls = [f.result() for f in futures]
    train_wall = time.perf_counter() - start
    print(f"trained {sum(w > 0 for w in walls)} runs ({len(walls) - sum(w > 0 for w in walls)} reused) in "
          f"{train_wall:.0f} s", flush=True)

    scores: dict = {}
    curves: dict = {}
    seconds: dict = {}
    tasks: dict = {}
    for name in args.settings:
        setting = SETTINGS[name]
        resolved = resolve_config(run_config(setting, "maml", 0, 1))
        family = msr.make_task_family(resolved["family"], **resolved["family_kwargs"])
        tasks[name] = family.sample_tasks(setting.eval_tasks, np.random.default_rng(eval_seed), split=split)
        with_baselines = setting.locomotion and args.phase == "main" and args.baseline_seeds
        all_methods = methods + ([*BASELINES] if with_baselines else [])
        scores[name], curves[name], seconds[name] = {}, {}, {}
        for method in all_methods:
            seeds = args.baseline_seeds if method in BASELINES else args.seeds
            scores[name][method], seconds[name][method] = {}, {}
            for seed in seeds:
                model = load_model(args.out, name, method, seed, iterations[name])
                scores[name][method][seed] = evaluate(model, setting, tasks[name], split, eval_seed,
                                                      probe=method not in BASELINES)
                seconds[name][method][seed] = run_seconds(args.out, name, method, seed)
                model.close()
            if method not in BASELINES:
                curves[name][method] = {s: read_metrics(run_dir(args.out, name, method, s))["post_return"].tolist()
                                        for s in seeds}
        print(f"evaluated {name}", flush=True)

    command = shown_command(__file__)
    where = ("validation tasks (split='train', a seed no training iteration uses)" if split == "train"
             else "held-out tasks (split='test')")
    md = [f"# α study: {args.phase}", "", f"`{command}`", "",
          f"Every setting's models are evaluated on the same {where} with the same rollout seed ({eval_seed}). "
          "Returns: mean over seeds of each seed's mean over tasks ± a 95% t-interval over seeds; a difference "
          "row: the method's mean minus MAML's ± its 95% Welch interval, and the two-sided p-value of Welch's "
          "t-test over seeds. Iterations: " + ", ".join(f"{n} {iterations[n]}" for n in args.settings) + ".", ""]
    for name in args.settings:
        md += setting_markdown(name, scores[name], SETTINGS[name], seconds[name])
    total = time.perf_counter() - start
    md += [f"This invocation trained for {train_wall:.0f} s and took {total:.0f} s in all ({args.jobs} runs at a "
           "time, one torch thread each).", "", "![adaptation and learning curves](adaptation.png)", ""]
    out_dir.mkdir(parents=True, exist_ok=True)
    plot(out_dir / "adaptation.png", list(args.settings), scores, curves)
    atomic_write_text(out_dir / "results.json", json.dumps(
        {"command": command, "phase": args.phase, "split": split, "eval_seed": eval_seed, "iterations": iterations,
         "settings": {n: asdict(SETTINGS[n]) for n in args.settings}, "methods": {m: METHODS.get(m) for m in methods},
         "scores": scores, "seconds": seconds, "tasks": tasks, "train_wall_s": train_wall, "total_wall_s": total},
        indent=1, default=str))
    atomic_write_text(out_dir / "results.md", "\n".join(md))
    print("\n".join(md))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("phase", choices=["select", "main", "pretrain-one"])
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=None)
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=None,
                        help="default: every variant (select), MAML and --metasgd (main)")
    parser.add_argument("--metasgd", choices=[m for m in METHODS if not m.startswith("maml")], default="adam-log",
                        help="the Meta-SGD variant of the main phase (the one select chose)")
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="default: 0 1 2 (select), 0..4 (main)")
    parser.add_argument("--baseline-seeds", nargs="*", type=int, default=[0],
                        help="seeds of the locomotion baselines (none: leave them out)")
    parser.add_argument("--iterations", type=int, default=None, help="default: the setting's")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--eval-seed", type=int, default=None, help="default: 7 (select), 2026 (main)")
    parser.add_argument("--out", type=Path, default=Path("runs/alpha-study"))
    parser.add_argument("--name", default=None, help="the report goes into --out/NAME (default: the phase)")
    parser.add_argument("--setting", choices=list(SETTINGS), help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase == "pretrain-one":
        pretrain_one(args)
        return
    if args.settings is None:
        args.settings = ["Navigation2D-v0"] if args.phase == "select" else [
            "Navigation2D-v0", "Navigation2D-RandomStart-v0", "Navigation2D-v0-2steps"]
    if args.seeds is None:
        args.seeds = [0, 1, 2] if args.phase == "select" else [0, 1, 2, 3, 4]
    study(args)


if __name__ == "__main__":
    main()
