"""How long a trained policy's episodes last and what each step earns, before and after adaptation.

    python scripts/episode_anatomy.py docs/results/locomotion/runs/AntDir-v0/*/final.pt \\
        --tasks '[{"direction": 1.0}, {"direction": -1.0}]' --steps 1 --episodes 20 --seed 2026 \\
        --out docs/results/locomotion/ant-anatomy

For each CHECKPOINT, the episodes :func:`metasgd_rl.evaluation.adaptation_rollouts` samples after 0 … ``--steps``
inner steps on ``--tasks`` (a JSON list of tasks; default: ``--n-tasks`` tasks of the test split, drawn as
``metasgd-rl evaluate`` draws them), summarised per task by :func:`metasgd_rl.episode_anatomy.episode_anatomy`:
mean episode length, the share that ended before the horizon, the mean return, the reward per step and the
squared norm of the action per step. ``--out DIR`` writes ``DIR/anatomy.md`` and ``DIR/anatomy.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from metasgd_rl.command_line import shown_command
from metasgd_rl.episode_anatomy import episode_anatomy
from metasgd_rl.evaluation import adaptation_rollouts, evaluation_tasks
from metasgd_rl.io import atomic_write_text
from metasgd_rl.report import ComparisonError, load_checkpoint


def parse_tasks(text: str) -> list[dict[str, Any]]:
    try:
        tasks = json.loads(text)
    except json.JSONDecodeError as err:
        raise SystemExit(f"--tasks: not JSON ({err.msg} at character {err.pos}): {text!r}") from None
    if not isinstance(tasks, list) or not tasks or not all(isinstance(t, dict) for t in tasks):
        raise SystemExit(f"--tasks must be a non-empty JSON list of task objects, got {text!r}")
    return tasks


def anatomy_of(checkpoint: str, tasks: list[dict[str, Any]] | None, n_tasks: int, steps: int, episodes: int,
               seed: int) -> dict[str, Any]:
    model = load_checkpoint(checkpoint)
    try:
        chosen = tasks if tasks is not None else evaluation_tasks(model, n_tasks, seed=seed)
        horizon = int(model.family.max_episode_steps)
        batches = adaptation_rollouts(model, chosen, steps, episodes, seed=seed)
        return {"checkpoint": checkpoint, "family": model.config["family"], "max_episode_steps": horizon,
                "after_steps": [episode_anatomy(batch, horizon) for batch in batches]}
    finally:
        model.close()


def markdown(results: list[dict[str, Any]], command: str) -> str:
    lines = ["# Episode anatomy", "", f"`{command}`", "",
             "Per task and number of inner steps: mean episode length, the share of episodes that ended before the "
             "horizon, mean return, reward per step taken and squared action norm per step taken (the sampled "
             "action, before the env clips it).", "",
             "| checkpoint | after steps | task | mean length | ended early | mean return | reward / step "
             "| ‖a‖² / step |", "|---|---|---|---|---|---|---|---|"]
    for result in results:
        for k, rows in enumerate(result["after_steps"]):
            for row in rows:
                lines.append(
                    f"| {result['checkpoint']} | {k} | `{json.dumps(row['task'])}` | {row['mean_length']:.1f} "
                    f"/ {result['max_episode_steps']} | {100 * row['ended_early']:.0f} % | {row['mean_return']:.1f} "
                    f"| {row['reward_per_step']:.2f} | {row['squared_action_per_step']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT")
    parser.add_argument("--tasks", type=parse_tasks, help="a JSON list of tasks (default: --n-tasks test tasks)")
    parser.add_argument("--n-tasks", type=int, default=4, help="test tasks to draw without --tasks (default 4)")
    parser.add_argument("--steps", type=int, default=1, help="inner steps (default 1)")
    parser.add_argument("--episodes", type=int, default=20, help="episodes per task and step (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="tasks' and rollouts' seed, as `evaluate` (default 0)")
    parser.add_argument("--out", type=Path, help="write anatomy.md and anatomy.json in this directory")
    args = parser.parse_args(argv)
    for name in ("n_tasks", "steps", "episodes"):
        if getattr(args, name) < (0 if name == "steps" else 1):
            raise SystemExit(f"--{name.replace('_', '-')}={getattr(args, name)} is too small")
    results = []
    for checkpoint in args.checkpoints:
        try:
            results.append(anatomy_of(checkpoint, args.tasks, args.n_tasks, args.steps, args.episodes, args.seed))
        except (ValueError, TypeError, KeyError) as err:  # ComparisonError names the file; tasks the family refuses
            message = str(err) if isinstance(err, ComparisonError) else f"{checkpoint}: {type(err).__name__}: {err}"
            raise SystemExit(message) from None
    command = shown_command(__file__, argv)
    text = markdown(results, command)
    print(text, end="")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out / "anatomy.json", json.dumps(results, indent=1) + "\n")
        atomic_write_text(args.out / "anatomy.md", text)


if __name__ == "__main__":
    main()
