"""The ``metasgd-rl`` command (see :data:`USAGE`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

PROG = "metasgd-rl"
EXIT_USAGE = 2
USAGE = """\
Meta-SGD / MAML meta-reinforcement learning: train from a YAML config, evaluate a checkpoint, list task families.

    metasgd-rl train configs/navigation2d-metasgd.yaml [--set key=value ...] [--run-dir DIR]
    metasgd-rl train --resume runs/navigation2d-metasgd-20250101-120000 [--set iterations=1000]
    metasgd-rl evaluate runs/.../final.pt [--tasks 40] [--steps 3] [--episodes 20] [--seed 0]
    metasgd-rl families

A bad config is refused before anything is written, with one line naming the key, the value and what is
allowed, and exit status 2.
"""
_Formatter = argparse.RawDescriptionHelpFormatter


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
                            "checkpoint_every, eval_every and progress_bar may change")
    train.add_argument("--resume", metavar="RUN_DIR",
                       help="continue this run directory from its last checkpoint; the result equals an "
                            "uninterrupted run with the same seed")
    train.add_argument("--run-dir", metavar="DIR", help="run directory (default: runs/<config name>-<timestamp>)")
    train.set_defaults(handler=_train)

    evaluate = sub.add_parser(
        "evaluate", formatter_class=_Formatter, help="fast adaptation of a checkpoint on held-out tasks",
        description="Load a checkpoint and adapt it to held-out tasks. Prints the mean return over tasks after\n"
                    "0..K inner steps with a 95% confidence interval (normal approximation over tasks).",
    )
    evaluate.add_argument("checkpoint", metavar="CHECKPOINT", help="checkpoint.pt or final.pt of a run")
    evaluate.add_argument("--tasks", type=_count(1), default=40, help="number of tasks (default: %(default)s)")
    evaluate.add_argument("--steps", type=_count(0), default=3, help="inner steps K: rows 0..K (default: %(default)s)")
    evaluate.add_argument("--episodes", type=_count(1), default=None,
                          help="episodes per task and step (default: the model's episodes_per_task)")
    evaluate.add_argument("--seed", type=_count(0), default=0,
                          help="seed of the tasks and rollouts (default: %(default)s)")
    evaluate.add_argument("--split", choices=["test", "train"], default="test",
                          help="task split; test: held-out tasks (default: %(default)s)")
    evaluate.set_defaults(handler=_evaluate)

    families = sub.add_parser("families", formatter_class=_Formatter, help="list the registered task families",
                              description="List the registered task families, one line each: id and summary.")
    families.set_defaults(handler=_families)
    return parser


# -- commands -----------------------------------------------------------------------------------------------


def _train(args: argparse.Namespace) -> int:
    from metasgd_rl.config import ConfigError, load_config
    from metasgd_rl.run import Run

    if args.resume is not None:
        if args.run_dir is not None:
            raise ConfigError(f"--run-dir {args.run_dir!r} is not allowed with --resume: the run stays in "
                              f"{args.resume!r}")
        run = Run.resume(args.resume, args.sets, config_path=args.config)
        done, total = run.model.iteration, run.config["iterations"]
        state = f"is complete ({done} of {total} iterations)" if done >= total else \
            f"resumes from iteration {done} to {total}"
        print(f"{PROG}: run {run.directory} {state}", flush=True)
    else:
        if args.config is None:
            raise ConfigError("train needs a CONFIG file, or --resume RUN_DIR to continue a run")
        run = Run.create(load_config(args.config, args.sets, run_dir=args.run_dir))
        print(f"{PROG}: training {run.config['algo']} on {run.config['family']} for "
              f"{run.config['iterations']} iterations in {run.directory}", flush=True)
    try:
        run.train()
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted at iteration {run.model.iteration}; continue with: "
              f"{PROG} train --resume {run.directory}", file=sys.stderr)
        return 130
    print(f"{PROG}: done, {run.model.iteration} iterations; final model {run.final_path}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    import pickle

    from metasgd_rl.config import ConfigError
    from metasgd_rl.evaluation import evaluate_adaptation
    from metasgd_rl.model import MetaSGD

    try:
        model = MetaSGD.load(args.checkpoint)
    except FileNotFoundError as err:
        raise ConfigError(f"CHECKPOINT={args.checkpoint!r} is not allowed: no such file") from err
    except (ValueError, RuntimeError, KeyError, pickle.UnpicklingError, OSError) as err:
        raise ConfigError(f"CHECKPOINT={args.checkpoint!r} is not allowed: it is not a loadable metasgd-rl "
                          f"checkpoint ({type(err).__name__}: {err})") from err
    episodes = model.episodes_per_task if args.episodes is None else args.episodes
    result = evaluate_adaptation(model, n_tasks=args.tasks, steps=args.steps, episodes=episodes,
                                 split=args.split, seed=args.seed)
    print(f"{type(model).__name__} at iteration {model.iteration} ({args.checkpoint}) on {model.family.id}: "
          f"{args.tasks} {args.split} tasks, {episodes} episodes per step, seed {args.seed}")
    print(format_table(result.mean(), result.ci95()))
    return 0


def format_table(means: Sequence[float], ci95: Sequence[float]) -> str:
    """``step | mean return ± 95% CI``, one row per number of inner steps."""
    lines = ["step | mean return ± 95% CI", "-----+---------------------"]
    for k, (m, c) in enumerate(zip(means, ci95, strict=True)):
        half = "n/a" if c != c else f"{c:.2f}"  # NaN with a single task
        lines.append(f"{k:>4} | {m:>10.2f} ± {half}")
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


# -- entry point --------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``metasgd-rl`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    args = build_parser().parse_args(argv)
    from metasgd_rl.config import ConfigError
    from metasgd_rl.run import RunError

    try:
        return args.handler(args)
    except ConfigError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except RunError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
