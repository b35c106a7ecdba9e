"""The ``metasgd-rl`` command (see :data:`USAGE`)."""

from __future__ import annotations

import argparse
import errno
import os
import re
import shlex
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from metasgd_rl.allocator import reuse_freed_memory
from metasgd_rl.startup import restore as restore_ctrl_c

if TYPE_CHECKING:
    from metasgd_rl.evaluation import AdaptationResult
    from metasgd_rl.run import Run

PROG = "metasgd-rl"
#: errors of the storage, not of the program: a full disk or quota, a read-only or failing file system
_STORAGE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO}
EXIT_USAGE = 2
USAGE = """\
Meta-SGD / MAML meta-reinforcement learning: train from a YAML config, evaluate a checkpoint, compare runs,
list task families.

    metasgd-rl train configs/navigation2d-metasgd.yaml [--set key=value ...] [--run-dir DIR]
    metasgd-rl train --resume runs/navigation2d-metasgd-20250101-120000 [--set iterations=1000]
    metasgd-rl evaluate runs/.../final.pt [--tasks 40] [--steps 3] [--episodes 20] [--seed 0] [--report DIR]
    metasgd-rl compare runs/metasgd-... runs/maml-... --out reports/nav [--tasks 40] [--steps 3]
    metasgd-rl families
    metasgd-rl benchmark [--tasks 10 20 40 80] [--outer trpo adam ppo] [--sampler local ray] [--out DIR]

A bad config is refused before anything is written, with one line naming the key, the value and what is
allowed, and exit status 2 (as are a run directory that cannot be used and a setting whose memory cannot fit).
Checkpoints and run directories whose family would import a module they name (env_id 'some.module:Env-v0') are
refused unless --allow-env-imports is given.
"""
_Formatter = argparse.RawDescriptionHelpFormatter
MAX_ENVS_HELP = ("build and step at most N sub-envs (tasks x episodes) at a time in a rollout: bounds memory for "
                 "simulators with large envs (Meta-World: ~20 MB each) and never changes a result (default: the "
                 "checkpoint's max_envs, else the family's; Meta-World: 50)")
ALLOW_ENV_IMPORTS_HELP = ("let the family import the Python module named by a module-qualified gymnasium env_id "
                          "('some.module:Env-v0') in the {what}; without it such a file is refused, since loading "
                          "it would run code the file chooses. Give it only for files you trust")


def _count(minimum: int):
    """argparse type: an integer >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is not allowed; use an integer >= {minimum}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``metasgd-rl`` and its subcommands."""
    parser = argparse.ArgumentParser(prog=PROG, description=USAGE, formatter_class=_Formatter)
    from metasgd_rl import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    train = sub.add_parser(
        "train", formatter_class=_Formatter, help="meta-train from a YAML config, or resume a run",
        description="Meta-train from a YAML config into a run directory (config.yaml, metrics.csv, tasks.jsonl,\n"
                    "TensorBoard events, checkpoint.pt, final.pt), or continue a run with --resume.",
        epilog="examples:\n"
               "  metasgd-rl train configs/navigation2d-metasgd.yaml --set seed=1 --set outer_kwargs.max_kl=0.02\n"
               "  metasgd-rl train configs/navigation2d-maml.yaml --set policy_kwargs.hidden_sizes=[64,64]\n"
               "  metasgd-rl train --resume runs/navigation2d-metasgd-20250101-120000 --set iterations=1000",
    )
    train.add_argument("config", nargs="?", metavar="CONFIG",
                       help="YAML config file (optional with --resume; if given there, it must match the run)")
    train.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config key; VALUE is YAML, dots reach nested keys "
                            "(outer_kwargs.max_kl=0.02). Repeatable. With --resume only iterations, "
                            "checkpoint_every, eval_every, progress_bar and the sampler keys (sampler, "
                            "ray_address, ray_workers, ray_startup_timeout) and task_chunk_size may change")
    train.add_argument("--resume", metavar="RUN_DIR",
                       help="continue this run directory from its last checkpoint; the result equals an "
                            "uninterrupted run with the same seed")
    train.add_argument("--run-dir", metavar="DIR", help="run directory (default: runs/<config name>-<timestamp>)")
    train.add_argument("--allow-env-imports", action="store_true",
                       help=ALLOW_ENV_IMPORTS_HELP.format(what="--resume run's config.yaml and checkpoint") +
                       " (a CONFIG file of your own may always name one)")
    train.set_defaults(handler=_train)

    evaluate = sub.add_parser(
        "evaluate", formatter_class=_Formatter, help="fast adaptation of a checkpoint on held-out tasks",
        description="Load a checkpoint and adapt it to held-out tasks. Prints the mean return over tasks after\n"
                    "0..K inner steps with a 95% confidence interval (Student's t over tasks); optionally writes\n"
                    "the result as JSON (--json) and a report folder (--report: report.md, results.json, plots).",
    )
    evaluate.add_argument("checkpoint", metavar="CHECKPOINT", help="checkpoint.pt or final.pt of a run")
    evaluate.add_argument("--tasks", type=_count(1), default=40, help="number of tasks (default: %(default)s)")
    evaluate.add_argument("--steps", type=_count(0), default=3, help="inner steps K: rows 0..K (default: %(default)s)")
    evaluate.add_argument("--episodes", type=_count(1), default=None,
                          help="episodes per task and step (default: the model's episodes_per_task)")
    evaluate.add_argument("--seed", type=_count(0), default=0,
                          help="seed of the tasks and rollouts (default: %(default)s)")
    evaluate.add_argument("--split", choices=["test", "train"], default="test",
                          help="task split; test: held-out tasks (default: %(default)s); train: tasks of the "
                               "training distribution, for diagnosis only")
    evaluate.add_argument("--alpha-probe", action="store_true",
                          help="also adapt one step with the hidden layers' α reset to α_init and set to 0, on the "
                               "same tasks and episodes: is the learned α of the hidden layers used?")
    evaluate.add_argument("--json", metavar="PATH", help="write the result (per-episode returns, tasks) as JSON")
    evaluate.add_argument("--report", metavar="DIR",
                          help="write a report into DIR: report.md, results.json, adaptation and learning curves, α, "
                               "trajectories (Navigation2D)")
    evaluate.add_argument("--max-envs", type=_count(1), default=None, metavar="N",
                          help=MAX_ENVS_HELP)
    evaluate.add_argument("--allow-env-imports", action="store_true",
                          help=ALLOW_ENV_IMPORTS_HELP.format(what="checkpoint's config"))
    evaluate.set_defaults(handler=_evaluate)

    compare = sub.add_parser(
        "compare", formatter_class=_Formatter, help="evaluate several runs on the same held-out tasks, with a report",
        description="Load each run's final.pt (checkpoint.pt if training has not finished), evaluate all on the\n"
                    "same held-out tasks and rollout seeds, and write results.json and a report into --out:\n"
                    "adaptation curves of all runs, their learning curves, the learned α of each Meta-SGD run\n"
                    "and, on Navigation2D, trajectories before and after adaptation. Each run is labelled by its\n"
                    "method and seed ('Meta-SGD (seed 0)', 'MAML (seed 1)'; the directory name is added where two\n"
                    "runs share both); the runs must share one task family.",
        epilog="example:\n"
               "  metasgd-rl compare runs/navigation2d-metasgd-2025* runs/navigation2d-maml-2025* --out reports/nav",
    )
    compare.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories written by 'metasgd-rl train'")
    compare.add_argument("--out", required=True, metavar="DIR", help="report directory (created if needed)")
    compare.add_argument("--tasks", type=_count(1), default=40, help="number of held-out tasks (default: %(default)s)")
    compare.add_argument("--steps", type=_count(0), default=3, help="inner steps K: 0..K (default: %(default)s)")
    compare.add_argument("--episodes", type=_count(1), default=20,
                         help="episodes per task and step, the same for every run (default: %(default)s)")
    compare.add_argument("--seed", type=_count(0), default=0,
                         help="seed of the tasks and rollouts (default: %(default)s)")
    compare.add_argument("--max-envs", type=_count(1), default=None, metavar="N", help=MAX_ENVS_HELP)
    compare.add_argument("--allow-env-imports", action="store_true",
                         help=ALLOW_ENV_IMPORTS_HELP.format(what="runs' checkpoints"))
    compare.set_defaults(handler=_compare)

    families = sub.add_parser("families", formatter_class=_Formatter, help="list the registered task families",
                              description="List the registered task families, one line each: id and summary.")
    families.set_defaults(handler=_families)

    bench = sub.add_parser(
        "benchmark", formatter_class=_Formatter, help="time meta-iterations by stage, and sampler throughput",
        description="Time real meta-iterations (train_step) of a fresh model, broken into sampling, adaptation,\n"
                    "objective, meta-gradient, TRPO's conjugate gradient and line search, PPO's epochs; for every\n"
                    "combination of --outer, --sampler, --tasks and --episodes, each in a fresh process (its own\n"
                    "peak memory), with its arithmetic floor: the iteration's matrix-product GFLOP at the machine's\n"
                    "dense matmul rate. --throughput FAMILY... also measures env steps/s of raw single envs against\n"
                    "the samplers. Prints markdown tables; --out writes benchmark.json and benchmark.md.",
        epilog="examples:\n"
               "  metasgd-rl benchmark                                   # Navigation2D, 20 x 20, trpo/adam/ppo\n"
               "  metasgd-rl benchmark --outer trpo --tasks 10 20 40 80  # scaling with the number of tasks\n"
               "  metasgd-rl benchmark --outer adam --tasks 160 --task-chunk-size 20  # memory for many tasks\n"
               "  metasgd-rl benchmark --outer adam --sampler local ray --throughput HalfCheetahVel-v0",
    )
    bench.add_argument("--family", default="Navigation2D-v0", help="task family id (default: %(default)s)")
    bench.add_argument("--tasks", type=_count(1), nargs="+", default=[20], help="meta-batch sizes (default: 20)")
    bench.add_argument("--episodes", type=_count(1), nargs="+", default=[20], help="episodes per task (default: 20)")
    bench.add_argument("--outer", nargs="+", default=["trpo", "adam", "ppo"], choices=["trpo", "adam", "ppo"],
                       help="outer optimisers (default: all three)")
    bench.add_argument("--sampler", nargs="+", default=["local"], choices=["local", "ray"],
                       help="samplers (default: local)")
    bench.add_argument("--estimator", choices=["maml", "lvc", "dice"], help="estimator (default: the model's)")
    bench.add_argument("--task-chunk-size", type=_count(1), nargs="+", default=[None], metavar="N",
                       help="differentiate N tasks at a time (the model's task_chunk_size; default: all at once)")
    bench.add_argument("--throughput", nargs="*", default=[], metavar="FAMILY",
                       help="families whose raw vs sampler env steps/s to measure (40 tasks x 20 episodes)")
    bench.add_argument("--repeats", type=_count(1), default=5, help="timed iterations (default: %(default)s)")
    bench.add_argument("--warmup", type=_count(0), default=1, help="untimed iterations first (default: %(default)s)")
    bench.add_argument("--threads", type=_count(1), help="torch threads (default: torch's choice)")
    bench.add_argument("--ray-workers", type=_count(1), help="Ray actors (default: one per CPU)")
    bench.add_argument("--out", metavar="DIR", help="write benchmark.json and benchmark.md here")
    bench.set_defaults(handler=_benchmark)
    return parser


# -- commands -----------------------------------------------------------------------------------------------


def _check_output(option: str, value: str | None, directory: bool) -> None:
    """Refuse (``ConfigError``) an output path (``--json``, ``--report``, ``--out``) that cannot be written, before
    the evaluation or measurement whose result it would hold is done (and lost)."""
    from metasgd_rl.config import ConfigError
    from metasgd_rl.io import unwritable_reason

    if value is None:
        return
    reason = unwritable_reason(value, directory=directory)
    if reason is not None:
        kind = "directory" if directory else "file path"
        advice = "" if reason.startswith("it is a ") else f"; use a {kind} in a writable place"
        raise ConfigError(f"{option} {value!r} is not allowed: {reason}{advice}")


def _check_metrics(run_dir: str | os.PathLike) -> None:
    """Refuse (``ConfigError``) a run directory whose ``metrics.csv`` a report would fail to read, before evaluating."""
    from metasgd_rl.config import ConfigError
    from metasgd_rl.report import ComparisonError, check_metrics

    try:
        check_metrics(run_dir)
    except ComparisonError as err:
        raise ConfigError(str(err)) from err


def _train(args: argparse.Namespace) -> int:
    from metasgd_rl.config import ConfigError, load_config
    from metasgd_rl.run import Run

    created = False
    if args.resume is not None:
        if args.run_dir is not None:
            raise ConfigError(f"--run-dir {args.run_dir!r} is not allowed with --resume: the run stays in "
                              f"{args.resume!r}")
        run = Run.resume(args.resume, args.sets, config_path=args.config, allow_env_imports=args.allow_env_imports)
        done, total = run.model.iteration, run.config["iterations"]
        if run.complete:
            print(f"{PROG}: run {run.directory} is already at iteration {done} of {total}; nothing to do (give "
                  f"--set iterations=M with M > {total} to train longer)")
            return 0
        state = f"is complete ({done} of {total} iterations)" if done >= total else \
            f"resumes from iteration {done} to {total}"
        print(f"{PROG}: run {run.directory} {state}", flush=True)
    else:
        if args.config is None:
            raise ConfigError("train needs a CONFIG file, or --resume RUN_DIR to continue a run")
        config = load_config(args.config, args.sets, run_dir=args.run_dir)
        created = not os.path.lexists(config["run_dir"])
        run = Run.create(config)
        print(f"{PROG}: training {run.config['algo']} on {run.config['family']} for "
              f"{run.config['iterations']} iterations in {run.directory}", flush=True)
    try:
        run.train(summary=True)  # the summary line is the result, with or without the progress bar
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted at iteration {run.model.iteration}; continue with: "
              f"{PROG} train --resume {run.directory}", file=sys.stderr)
        return 130
    except Exception:  # main reports it; a new run that failed before its first iteration leaves no directory
        args.run_removed = args.resume is None and created and _remove_unstarted_run(run)
        raise
    if run.stopped_by is not None:
        print(f"{PROG}: stopped at iteration {run.model.iteration}, checkpoint saved; continue with: "
              f"{PROG} train --resume {run.directory}", file=sys.stderr)
        return 128 + run.stopped_by
    print(f"{PROG}: done, {run.model.iteration} iterations; final model {run.final_path}")
    return 0


def _remove_unstarted_run(run: Run) -> bool:
    """Remove the directory of a new run whose training failed before it logged an iteration (out of memory, a Ray
    cluster that is not there, ...); whether it was. It holds only what this command wrote (``config.yaml``, an empty
    TensorBoard events file), and left behind it would make the same command refuse its ``--run-dir`` next time. A
    directory holding anything else is kept."""
    from metasgd_rl.run import CONFIG_FILE

    if run.model.iteration > 0:
        return False
    try:
        files = list(run.directory.iterdir())
        if any(p.name != CONFIG_FILE and not p.name.startswith("events.out.tfevents.") for p in files):
            return False
        for path in files:
            path.unlink()
        run.directory.rmdir()
    except OSError:
        return False
    return True


def _evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from metasgd_rl.config import ConfigError
    from metasgd_rl.evaluation import evaluate_adaptation
    from metasgd_rl.report import ComparisonError, load_checkpoint, method_label, write_report
    from metasgd_rl.run import METRICS_FILE

    _check_output("--json", args.json, directory=False)
    _check_output("--report", args.report, directory=True)
    try:
        model = load_checkpoint(args.checkpoint, allow_env_imports=args.allow_env_imports, max_envs=args.max_envs)
    except ComparisonError as err:
        raise ConfigError(str(err)) from err
    episodes = model.episodes_per_task if args.episodes is None else args.episodes
    run_dir = Path(args.checkpoint).resolve().parent
    if args.report is not None:  # its learning curves read the run's metrics.csv: a damaged one is refused now,
        _check_metrics(run_dir)  # not after the evaluation
    label = method_label(model)  # "Meta-SGD (seed 0)", as compare labels runs
    result = evaluate_adaptation(model, n_tasks=args.tasks, steps=args.steps, episodes=episodes,
                                 split=args.split, seed=args.seed, method=label)
    print(f"{type(model).__name__} at iteration {model.iteration} ({args.checkpoint}) on {model.family.id}: "
          f"{args.tasks} {args.split} tasks, {episodes} episodes per step, seed {args.seed}")
    print(format_table(result))
    if args.alpha_probe:
        from metasgd_rl.probe import alpha_probe, hidden_layer_names

        if hidden_layer_names(model):
            probe = alpha_probe(model, episodes=episodes, split=args.split, seed=args.seed, tasks=result.tasks)
            print(f"\nα probe (α_init {probe.alpha_init:g}; hidden layers: {', '.join(probe.hidden)}):")
            print(probe.table())
        else:
            print("\nα probe: the policy has no hidden layers")
    if args.json is not None:
        print(f"{PROG}: result written to {result.save(args.json)}")
    if args.report is not None:
        runs = {label: run_dir} if (run_dir / METRICS_FILE).is_file() else {}
        path = write_report(args.report, {label: result}, runs, {label: model}, command=args.command_line,
                            title=f"{label}: fast adaptation on {model.family.id}")
        print(f"{PROG}: report written to {path}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from metasgd_rl.config import ConfigError
    from metasgd_rl.report import ComparisonError, compare, comparison_reference, difference_table

    _check_output("--out", args.out, directory=True)
    try:
        path, results = compare(args.runs, args.out, n_tasks=args.tasks, steps=args.steps, episodes=args.episodes,
                                seed=args.seed, command=args.command_line, allow_env_imports=args.allow_env_imports,
                                max_envs=args.max_envs)
    except ComparisonError as err:
        raise ConfigError(str(err)) from err
    first = next(iter(results.values()))
    print(f"{len(results)} runs on {first.family}: the same {first.n_tasks} {first.split} tasks, {args.episodes} "
          f"episodes per step, seed {args.seed}")
    for name, result in results.items():
        print(f"\n{name}")
        print(format_table(result))
    reference = comparison_reference(results)
    differences = difference_table(results, reference)
    if differences is not None:
        print(f"\nDifference from {reference}, paired over the {first.n_tasks} tasks (mean ± 95% CI, paired "
              "t-test p-value):")
        print(differences)
    print(f"\n{PROG}: report written to {path}")
    return 0


def format_table(result: AdaptationResult) -> str:
    """``step | mean return ± 95% CI``, one row per number of inner steps, with the success rate ± 95% CI beside
    the return for a family with a success flag (Meta-World)."""
    def cell(mean: float, ci: float, width: int, digits: int = 2) -> str:
        half = "n/a" if ci != ci else f"{ci:.{digits}f}"  # NaN with a single task
        return f"{mean:>{width}.{digits}f} ± {half}"

    success, success_ci = result.success_mean(), result.success_ci95()
    header, rule = "step | mean return ± 95% CI", "-----+---------------------"
    if success is not None:
        header, rule = header + " | success rate ± 95% CI", rule + "+-----------------------"
    lines = [header, rule]
    for k, (m, c) in enumerate(zip(result.mean(), result.ci95(), strict=True)):
        row = f"{k:>4} | {cell(m, c, 10)}"
        if success is not None:
            row = f"{row:<27} | {cell(success[k], success_ci[k], 12)}"
        lines.append(row)
    return "\n".join(lines)


def _families(args: argparse.Namespace) -> int:
    from metasgd_rl.registry import describe_task_family, list_task_families

    ids = list_task_families()
    width = max((len(i) for i in ids), default=0)
    for family_id in ids:
        try:
            summary = describe_task_family(family_id)
        except ImportError as err:
            summary = f"(cannot be imported: {err})"
        print(f"{family_id:<{width}}  {summary}".rstrip())
    return 0


def _benchmark(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from metasgd_rl.benchmark import run_benchmark
    from metasgd_rl.config import ConfigError
    from metasgd_rl.io import atomic_write_text
    from metasgd_rl.registry import list_task_families, unknown_family_message

    known = list_task_families()
    for family_id in [args.family, *args.throughput]:
        if family_id not in known:
            raise ConfigError(unknown_family_message(family_id, subject=f"family={family_id!r}"))
    _check_output("--out", args.out, directory=True)  # before minutes of measuring
    results = run_benchmark(args.family, args.tasks, args.episodes, args.outer, args.sampler, args.throughput,
                            repeats=args.repeats, warmup=args.warmup, threads=args.threads,
                            ray_workers=args.ray_workers, estimator=args.estimator,
                            task_chunk_sizes=args.task_chunk_size)
    print(results["markdown"].rstrip())  # the tables, once (stderr had a progress line per setting)
    if args.out is not None:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        results["command"] = args.command_line
        atomic_write_text(out / "benchmark.json", json.dumps(results, indent=1) + "\n")
        atomic_write_text(out / "benchmark.md", f"`{args.command_line}`\n\n{results['markdown']}")
        print(f"{PROG}: results written to {out / 'benchmark.json'} and {out / 'benchmark.md'}")
    return 0


# -- entry point --------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``metasgd-rl`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status.

    A Ctrl-C outside training (parsing, imports, reading a config, evaluating) ends in one line and exit 130;
    ``train`` handles its own during training (the checkpoint is kept and the line says how to resume).
    """
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


#: the messages of torch's allocators (CPU and CUDA) when an allocation fails; torch raises a RuntimeError
_ALLOCATOR_FAILURES = ("DefaultCPUAllocator", "not enough memory", "out of memory", "can't allocate memory")


def out_of_memory_detail(err: BaseException) -> str | None:
    """For a failed allocation (``MemoryError``, or torch's ``RuntimeError`` naming its allocator): the size it asked
    for, as ``" (an allocation of 1.6 GB failed)"``, or ``""`` if unknown; None for any other exception."""
    from metasgd_rl.memory import format_bytes

    message = str(err)
    if not isinstance(err, MemoryError) and not (isinstance(err, RuntimeError) and
                                                 any(s in message for s in _ALLOCATOR_FAILURES)):
        return None
    size = re.search(r"allocate (\d+) bytes", message)
    return f" (an allocation of {format_bytes(int(size.group(1)))} failed)" if size else ""


def _memory_advice(command: str) -> str:
    """What lowers the memory a command needs (for training: the keys of a new run, or task_chunk_size, which a
    resumed run may change as well)."""
    if command == "train":
        return ("lower meta_batch_size, episodes_per_task, eval_tasks or the hidden sizes in a new run, or set "
                "task_chunk_size (which --resume may change too)")
    if command == "benchmark":
        return "lower --tasks or --episodes, or give --task-chunk-size"
    return "lower --tasks or --episodes"


def _main(argv: Sequence[str] | None = None) -> int:
    """:func:`main` without its handling of Ctrl-C."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.command_line = shlex.join([PROG, *argv])
    reuse_freed_memory()
    from metasgd_rl.config import ConfigError
    from metasgd_rl.family import TaskFamilyError
    from metasgd_rl.ray_sampler import RolloutWorkerError
    from metasgd_rl.run import RunError

    restore_ctrl_c()  # the package's imports (torch) are done: from here on, main catches Ctrl-C itself

    def resume() -> str:
        """The hint a failed training gets, unless its new run directory was removed (nothing to resume)."""
        if args.command != "train" or getattr(args, "run_removed", False):
            return ""
        return " (a training run keeps its last checkpoint: continue it with --resume)"

    try:
        return args.handler(args)
    except ConfigError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except RunError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 1
    except TaskFamilyError as err:  # a family's tasks, env or observations broke its contract: the family's code
        fixed = resume().replace("continue it", "once the family is fixed, continue it")
        print(f"{PROG}: error: {err}{fixed}", file=sys.stderr)
        return 1
    except RolloutWorkerError as err:  # Ray actors that died, hung or could not start: not a bug of the caller
        print(f"{PROG}: error: rollouts on Ray failed: {err}{resume()}", file=sys.stderr)
        return 1
    except (MemoryError, RuntimeError) as err:  # what the up-front estimate (metasgd_rl.memory) did not foresee
        detail = out_of_memory_detail(err)
        if detail is None:  # a RuntimeError that is no failed allocation: a bug to see in full
            raise
        print(f"{PROG}: error: out of memory{detail}; {_memory_advice(args.command)}", file=sys.stderr)
        return 1
    except OSError as err:
        if err.errno not in _STORAGE_ERRORS:  # anything else is a bug to see in full
            raise
        where = f" writing {err.filename}" if err.filename else ""
        print(f"{PROG}: error: the disk refused{where}: {err.strerror}{resume()}", file=sys.stderr)
        return 1

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
