"""Fault injection: throw kills, signals, bad files, bad configs and faulty task families at metasgd-rl and
count how many it held.

    python scripts/fault_injection.py                 # 6½ minutes on 2 CPU cores shared with two trainings
    python scripts/fault_injection.py --kills 40 --seed 1 --out docs/reliability

What "held" means for each kind of fault:

- **kill storm**: a tiny training is SIGKILLed at random moments (during imports, iterations, checkpoint
  writes) and resumed each time. Held: after every kill the checkpoint loads and ``metrics.csv`` counts
  iterations 1, 2, ... without a gap or a repeat; at the end the resumed run's metrics and ``final.pt`` equal
  an uninterrupted run's bit for bit.
  A second, shorter storm checkpoints every 4 iterations, so that most kills leave rows past the checkpoint.
- **signals**: SIGINT and SIGTERM in the middle of a training, and SIGTERM with the Ray sampler (``ray.init``
  installs a handler of its own). Held: exit 130 / 143, a checkpoint at the iteration the metrics end with, and
  the resumed run equal to the uninterrupted one.
- **bad files** given to ``metasgd-rl evaluate``, **bad configs** and **bad run directories** given to
  ``metasgd-rl train``. Held: a non-zero exit with one line on stderr naming the problem, no traceback, no
  run directory left behind for a refused config, and no code from the file executed.
- **resume integrity**: copies of a finished run with a foreign checkpoint, an edited ``config.yaml``, a flipped bit
  in a tensor, NaN bytes in Adam's state, ``checkpoint.pt`` as a directory or a damaged ``metrics.csv`` header,
  given to ``train --resume`` (and the damaged checkpoints to ``evaluate``). Held: one line naming the fault (for
  a bad ``checkpoint.pt`` also the intact ``final.pt``) and every file of the run unchanged; a checkpoint from
  before digests existed still resumes.
- **faulty task families** used from Python (tasks that are not JSON-able, ``make_env``, ``step`` or
  ``sample_tasks`` that raise, the old gym API's 4-tuple step or bare-observation reset, an array reward, wrong
  observation shapes, NaN rewards). Held: a clear error naming the family (and the task and stage where known; for
  a NaN, the update rejected with θ and α unchanged and the task and stage named), not numpy's or torch's error
  from deep inside.
- **edge sizes** (one task, one episode, horizon 1, one hidden unit, chunks larger than the meta-batch, two inner
  steps, one evaluation task) trained, resumed and evaluated through the CLI on every outer optimiser. Held: exit
  0 every time (or, for no inner step, a one-line refusal). **Unbounded work**: a checkpoint or config asking for
  1e9-step episodes (and other counts past the limits of ``metasgd_rl.limits``). Held: a one-line refusal naming
  the key within a timeout.
- **hostile inputs**: YAML alias bombs and 10000-deep nesting, a PNG as config or run ``config.yaml``, devices
  torch cannot run on (meta, xla), floats of 1e300, a misspelt Ray address, an unknown gymnasium id, a parameter
  path through ``__class__``, 300-character names, ``metrics.csv`` files a report cannot read, outputs under a file,
  Ctrl-C during start-up, 20000-wide layers under a 4 GB cap. Held: one line within seconds, exit 2 (1 for a
  failed allocation, 130 for Ctrl-C), no traceback and no run directory left behind.

Writes ``fault_injection.json`` (every case and its outcome) and ``fault_injection.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import importlib.util
import io
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from metasgd_rl.cli import main as cli_main  # noqa: E402
from metasgd_rl.command_line import shown_command  # noqa: E402
from metasgd_rl.model import read_checkpoint  # noqa: E402

#: a training of about a tenth of a second per iteration, long enough for the kill storm's 20 kills
TINY: dict[str, Any] = dict(
    algo="metasgd", iterations=80, checkpoint_every=1, eval_every=0, progress_bar=False, family="Navigation2D-v0",
    policy_kwargs=dict(hidden_sizes=[16]), meta_batch_size=2, episodes_per_task=2, estimator="lvc", outer="adam",
    outer_kwargs=dict(lr=0.01), seed=0,
)


@dataclass
class Case:
    kind: str
    name: str
    held: bool
    detail: str = ""


@dataclass
class Tally:
    cases: list[Case] = field(default_factory=list)

    def add(self, kind: str, name: str, held: bool, detail: str = "") -> None:
        self.cases.append(Case(kind, name, bool(held), " ".join(str(detail).split())[:300]))
        mark = "held  " if held else "FAILED"
        print(f"  {mark} {kind}: {name}" + (f"  ({self.cases[-1].detail})" if not held or detail else ""), flush=True)

    def summary(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for case in self.cases:
            row = out.setdefault(case.kind, {"tried": 0, "held": 0})
            row["tried"] += 1
            row["held"] += case.held
        return out


# -- helpers ------------------------------------------------------------------------------------------------


def write_config(path: Path, **changes: Any) -> Path:
    config = {**TINY, **changes}
    path.write_text(yaml.safe_dump({k: v for k, v in config.items() if v is not None}, sort_keys=False))
    return path


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "metasgd_rl", *args]


def subprocess_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def metrics_iterations(run_dir: Path) -> list[int]:
    try:
        with open(run_dir / "metrics.csv", newline="") as f:
            return [int(row["iteration"]) for row in csv.DictReader(f)]
    except FileNotFoundError:
        return []


def comparable_metrics(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k != "seconds" and not k.startswith("time/")}
                for row in csv.DictReader(f)]


def same_tensors(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and set(a) == set(b) and all(same_tensors(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(map(same_tensors, a, b))
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    return a == b


def same_run(run_dir: Path, reference: Path) -> tuple[bool, str]:
    if not (run_dir / "final.pt").exists():
        return False, "no final.pt"
    if comparable_metrics(run_dir) != comparable_metrics(reference):
        return False, "metrics.csv differs from the uninterrupted run's"
    if not same_tensors(read_checkpoint(run_dir / "final.pt"), read_checkpoint(reference / "final.pt")):
        return False, "final.pt differs from the uninterrupted run's"
    return True, "equals the uninterrupted run"


@contextlib.contextmanager
def captured_cli(argv: list[str]) -> Iterator[dict[str, Any]]:
    """Run the CLI in this process; the result dict gets ``code``, ``stderr`` and ``escaped`` (an exception that
    left ``main``: the user would have seen a traceback)."""
    result: dict[str, Any] = {"code": None, "stderr": "", "escaped": None}
    err, out = io.StringIO(), io.StringIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
                result["code"] = cli_main(argv)
        except SystemExit as exit_:  # argparse
            result["code"] = exit_.code
        except BaseException as exc:  # noqa: BLE001  (counting what escapes is the point)
            result["escaped"] = f"{type(exc).__name__}: {exc}"
    result["stderr"] = err.getvalue().strip()
    yield result


def refused_cleanly(result: dict[str, Any], expect: str | tuple[str, ...], codes: tuple[int, ...] = (1, 2),
                    forbid: tuple[str, ...] = ()) -> tuple[bool, str]:
    """Held: an exit code in ``codes``, no traceback, and a last stderr line that names every word of ``expect`` and
    none of ``forbid`` (advice that would be wrong for this case)."""
    if result["escaped"]:
        return False, f"traceback: {result['escaped']}"
    lines = [line for line in result["stderr"].splitlines() if line.strip()]
    message = lines[-1] if lines else ""
    if result["code"] not in codes:
        return False, f"exit {result['code']}: {message}"
    if "Traceback" in result["stderr"]:
        return False, "traceback on stderr"
    expected = (expect,) if isinstance(expect, str) else expect
    if not all(word.lower() in message.lower() for word in expected):
        return False, f"message does not name {expected}: {message}"
    wrong = [word for word in forbid if word in message]
    if wrong:
        return False, f"message gives wrong advice ({', '.join(wrong)}): {message}"
    return True, message


# -- kill storm and signals ---------------------------------------------------------------------------------


def reference_run(work: Path) -> Path:
    run_dir = work / "reference"
    subprocess.run(cli_command("train", str(write_config(work / "tiny.yaml")), "--run-dir", str(run_dir)),
                   env=subprocess_env(), check=True, capture_output=True)
    return run_dir


def start_or_resume(config: Path, run_dir: Path, **popen: Any) -> subprocess.Popen:
    """``train --resume`` once the run exists; before that (a kill during start-up can leave an empty folder)
    the first command again."""
    if (run_dir / "config.yaml").exists():
        argv = ["--resume", str(run_dir)]
    else:
        argv = [str(config), "--run-dir", str(run_dir)]
    return subprocess.Popen(cli_command("train", *argv), env=subprocess_env(), **popen)


def kill_storm(tally: Tally, work: Path, reference: Path, kills: int, rng: np.random.Generator,
               checkpoint_every: int = 1) -> None:
    """Each kill lands either during start-up (a random moment in the first 3 s) or a random fraction of an
    iteration after 1-5 more metric rows appeared (during the iteration, its logging or its checkpoint write).
    With ``checkpoint_every`` > 1 most kills leave metric rows past the checkpoint, which the resume drops."""
    config = write_config(work / f"tiny-every{checkpoint_every}.yaml", checkpoint_every=checkpoint_every)
    run_dir = work / f"storm-every{checkpoint_every}"
    every = "" if checkpoint_every == 1 else f", checkpoint_every={checkpoint_every}"
    for k in range(kills):
        if (run_dir / "final.pt").exists():
            break
        rows = len(metrics_iterations(run_dir))
        process = start_or_resume(config, run_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if rng.random() < 0.25:
            time.sleep(float(rng.uniform(0.2, 3.0)))
        else:
            target, deadline = rows + int(rng.integers(1, 6)), time.monotonic() + 60
            while (len(metrics_iterations(run_dir)) < target and process.poll() is None
                   and time.monotonic() < deadline):
                time.sleep(0.01)
            time.sleep(float(rng.uniform(0.0, 0.15)))
        process.send_signal(signal.SIGKILL)
        process.wait()
        problems = []
        if (run_dir / "checkpoint.pt").exists():
            try:
                last = int(read_checkpoint(run_dir / "checkpoint.pt")["iteration"])
            except Exception as exc:  # noqa: BLE001
                problems.append(f"checkpoint unreadable: {exc}")
                last = -1
        else:
            last = 0
        iterations = metrics_iterations(run_dir)
        if iterations != list(range(1, len(iterations) + 1)):
            problems.append(f"metrics iterations {iterations}")
        if last > len(iterations):
            problems.append(f"checkpoint at {last} but metrics end at {len(iterations)}")
        tally.add("kill storm", f"SIGKILL {k + 1}{every} (checkpoint at {last}, {len(iterations)} metric rows)",
                  not problems, "; ".join(problems))
    finish = start_or_resume(config, run_dir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, stderr = finish.communicate()
    held, detail = same_run(run_dir, reference) if finish.returncode == 0 else (False, stderr[-300:])
    tally.add("kill storm", f"resumed to the end after the storm{every}", held, detail)


def signal_stop(tally: Tally, work: Path, reference: Path, signum: int, sampler: str = "local") -> None:
    """A signal after the third logged iteration; with ``sampler="ray"`` the rollouts run on a local Ray that the
    run starts (Ray installs a SIGTERM handler of its own), and the resume samples locally (the same batches)."""
    name = signal.Signals(signum).name + ("" if sampler == "local" else f" with the {sampler} sampler")
    run_dir = work / f"signal-{signal.Signals(signum).name}-{sampler}"
    config = write_config(work / f"tiny-{sampler}.yaml", sampler=sampler)
    process = subprocess.Popen(cli_command("train", str(config), "--run-dir", str(run_dir)),
                               env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               preexec_fn=None if sampler == "local" else lift_memory_limit)
    deadline = time.monotonic() + (60 if sampler == "local" else 900)  # Ray's actors start slowly under load
    while len(metrics_iterations(run_dir)) < 3 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60 if sampler == "local" else 900)
    problems = []
    if process.returncode != 128 + signum:
        problems.append(f"exit {process.returncode}")
    if "Traceback" in stderr:
        problems.append("traceback")
    if not (run_dir / "checkpoint.pt").is_file():
        tally.add("signals", f"{name} after the third iteration", False,
                  f"no checkpoint; {'; '.join(problems)}; stderr: {stderr[-250:]}")
        return
    state = read_checkpoint(run_dir / "checkpoint.pt")
    if int(state["iteration"]) != len(metrics_iterations(run_dir)):
        problems.append(f"checkpoint at {int(state['iteration'])}, metrics at {len(metrics_iterations(run_dir))}")
    finish = subprocess.run(cli_command("train", "--resume", str(run_dir), "--set", "sampler=local"),
                            env=subprocess_env(), capture_output=True, text=True)
    held, detail = same_run(run_dir, reference) if finish.returncode == 0 else (False, finish.stderr[-300:])
    if not held:
        problems.append(detail)
    tally.add("signals", f"{name} after iteration {int(state['iteration'])}, then --resume", not problems,
              "; ".join(problems) or f"exit {process.returncode}, checkpoint at the last logged iteration, {detail}")


# -- bad checkpoint files -----------------------------------------------------------------------------------


class _Payload:
    """Unpickling this would run a command that creates a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def bad_files(tally: Tally, work: Path, reference: Path) -> None:
    good = reference / "final.pt"
    data = good.read_bytes()
    state = read_checkpoint(good)
    folder = work / "files"
    folder.mkdir()
    marker = work / "payload-ran"

    def with_config(**changes: Any) -> dict[str, Any]:
        return {**state, "config": json.dumps({**json.loads(state["config"]), **changes})}

    def nan_weights() -> dict[str, Any]:
        policy = {k: v.clone() for k, v in state["policy"].items()}
        first = next(iter(policy))
        policy[first].view(-1)[0] = float("nan")
        return {**state, "policy": policy}

    def wrong_shape() -> dict[str, Any]:
        policy = dict(state["policy"])
        first = next(iter(policy))
        policy[first] = torch.zeros(3, 3)
        return {**state, "policy": policy}

    cases: list[tuple[str, Callable[[Path], None], tuple[str, ...]]] = [
        ("empty file", lambda p: p.write_bytes(b""), ("empty",)),
        ("short text file", lambda p: p.write_text("hello\n"), ("not a metasgd-rl checkpoint",)),
        ("random bytes", lambda p: p.write_bytes(np.random.default_rng(0).bytes(4096)),
         ("not a metasgd-rl checkpoint",)),
        ("truncated to 10 %", lambda p: p.write_bytes(data[: len(data) // 10]), ("not a metasgd-rl checkpoint",)),
        ("truncated to 90 %", lambda p: p.write_bytes(data[: len(data) * 9 // 10]),
         ("not a metasgd-rl checkpoint",)),
        ("pickle payload that runs a command", lambda p: p.write_bytes(pickle.dumps(_Payload(marker))),
         ("never unpickles",)),
        ("pickle payload inside torch.save", lambda p: torch.save({"x": _Payload(marker)}, p),
         ("never unpickles",)),
        ("NaN in one weight", lambda p: torch.save(nan_weights(), p), ("non-finite",)),
        ("a tensor of the wrong shape", lambda p: torch.save(wrong_shape(), p), ("shape",)),
        ("config says hidden sizes [20000, 20000]",
         lambda p: torch.save(with_config(policy_kwargs={**json.loads(state["config"])["policy_kwargs"],
                                                         "hidden_sizes": [20000, 20000]}), p),
         ("shape",)),
        ("config with a module-qualified env id",
         lambda p: torch.save(with_config(family="GymEnv-v0", family_kwargs={"env_id": "os:system"}), p),
         ("env_id",)),
        ("config that is not JSON", lambda p: torch.save({**state, "config": "{not json"}, p), ("config",)),
        ("no config at all", lambda p: torch.save({k: v for k, v in state.items() if k != "config"}, p),
         ("config",)),
        ("a directory instead of a file", lambda p: p.mkdir(), ("directory",)),
    ]
    for name, make, expect in cases:
        path = folder / (name.replace(" ", "-").replace("%", "pc") + ".pt")
        make(path)
        with captured_cli(["evaluate", str(path), "--tasks", "2", "--episodes", "2", "--steps", "1"]) as result:
            pass
        held, detail = refused_cleanly(result, expect)
        if marker.exists():
            held, detail = False, "the payload's command ran"
        tally.add("bad files", name, held, detail)


# -- bad configs and run directories ------------------------------------------------------------------------


def bad_configs(tally: Tally, work: Path) -> None:
    folder = work / "configs"
    folder.mkdir()
    tiny_text = yaml.safe_dump(TINY, sort_keys=False)
    cases: list[tuple[str, str, tuple[str, ...]]] = [
        ("not YAML", "family: [unclosed\n", ("not valid yaml",)),
        ("a list, not a mapping", "- 1\n- 2\n", ("mapping",)),
        ("a key given twice", tiny_text + "seed: 1\n", ("seed", "twice")),
        ("a misspelt key", tiny_text + "meta_batchsize: 4\n", ("meta_batchsize",)),
        ("iterations missing", yaml.safe_dump({k: v for k, v in TINY.items() if k != "iterations"}),
         ("iterations",)),
    ]
    bad_values: list[tuple[str, Any]] = [
        ("iterations", 0), ("iterations", "ten"), ("iterations", 2.5), ("meta_batch_size", 0),
        ("meta_batch_size", -3), ("meta_batch_size", True), ("episodes_per_task", 0), ("inner_steps", 0),
        ("gamma", 1.5), ("gamma", "nan"), ("gae_lambda", -0.1), ("seed", -1), ("seed", 1.5),
        ("alpha_init", "big"), ("alpha_lr", 0), ("alpha_lr", -1e-3), ("estimator", "reinforce"),
        ("outer", "sgd"), ("baseline", "critic"), ("alpha_granularity", "neuron"), ("algo", "reptile"),
        ("family", "Navigation2d-v0"), ("family", "NoSuchFamily-v9"), ("family", 3), ("device", "tpu"),
        ("sampler", "dask"), ("ray_workers", 0), ("task_chunk_size", 0), ("checkpoint_every", 0),
        ("eval_every", -1), ("eval_tasks", 0), ("num_threads", 0), ("progress_bar", "yes"),
        ("policy_kwargs", {"hidden_sizes": [0]}), ("policy_kwargs", {"hidden_sizes": "100"}),
        ("policy_kwargs", {"activation": "swish"}), ("policy_kwargs", {"width": 3}),
        ("outer_kwargs", {"lr": -1}), ("outer_kwargs", {"max_kl": 0.01}),
        ("family_kwargs", {"no_such_argument": 1}), ("family_kwargs", "goal"),
        ("meta_batch_size", 10**9), ("episodes_per_task", 10**9), ("policy_kwargs", {"hidden_sizes": [10**9]}),
    ]
    for key, value in bad_values:
        cases.append((f"{key}: {value!r}", yaml.safe_dump({**TINY, key: value}, sort_keys=False), (key,)))
    # held-out evaluation's tasks only cost memory when it runs
    cases.append(("eval_tasks: 1000000000 with eval_every: 1",
                  yaml.safe_dump({**TINY, "eval_every": 1, "eval_tasks": 10**9}, sort_keys=False), ("eval_tasks",)))
    for i, (name, text, expect) in enumerate(cases):
        path = folder / f"bad-{i}.yaml"
        path.write_text(text)
        run_dir = work / f"refused-run-{i}"
        with captured_cli(["train", str(path), "--run-dir", str(run_dir)]) as result:
            pass
        held, detail = refused_cleanly(result, expect, codes=(2,))
        if held and run_dir.exists():
            held, detail = False, "refused, but the run directory was created"
        tally.add("bad configs", name, held, detail)


def bad_run_dirs(tally: Tally, work: Path, reference: Path) -> None:
    config = str(work / "tiny.yaml")
    a_file = work / "a-file"
    a_file.write_text("not a directory\n")
    stale = work / "killed-at-start"
    stale.mkdir()
    (stale / ".config.yaml.k1ll3d.tmp").write_text("algo: meta")
    cases: list[tuple[str, list[str], tuple[str, ...], tuple[str, ...]]] = [
        ("run dir under a file", ["train", config, "--run-dir", str(a_file / "run")], ("a-file", "is a file"), ()),
        ("run dir that is a file", ["train", config, "--run-dir", str(a_file)], ("a-file", "is a file"),
         ("--resume",)),
        ("run dir that already holds a run", ["train", config, "--run-dir", str(reference)], ("--resume",), ()),
        ("--resume of a missing dir", ["train", "--resume", str(work / "missing")], ("missing",), ()),
        ("--resume of a file", ["train", "--resume", str(a_file)], ("a-file", "is a file"), ()),
        ("--resume of a finished run with nothing to do", ["train", "--resume", str(reference)], (), ()),
        ("run dir left by a kill during start-up", ["train", config, "--run-dir", str(stale),
                                                    "--set", "iterations=1"], (), ()),
    ]
    for name, argv, expect, forbid in cases:
        with captured_cli(argv) as result:
            pass
        if not expect:  # nothing to refuse: exit 0 and no traceback
            held = result["code"] == 0 and not result["escaped"]
            detail = result["escaped"] or result["stderr"][-200:]
        else:
            held, detail = refused_cleanly(result, expect, forbid=forbid)
        tally.add("bad run dirs", name, held, detail)


# -- resume integrity: checkpoints and logs a resume must not trust ---------------------------------------------


def run_files(run_dir: Path) -> dict[str, bytes | None]:
    """Every path under ``run_dir`` with the bytes of its files (a refusal must leave all of them as they were)."""
    return {str(p.relative_to(run_dir)): p.read_bytes() if p.is_file() else None for p in sorted(run_dir.rglob("*"))}


def flip_bit(path: Path, tensor: torch.Tensor, bit: int) -> None:
    """Flip bit ``bit`` of ``tensor``'s first float32 where the file at ``path`` stores it."""
    data = bytearray(path.read_bytes())
    at = data.find(tensor.contiguous().numpy().tobytes())
    data[at + bit // 8] ^= 1 << (bit % 8)
    path.write_bytes(bytes(data))


def nan_into_adam(path: Path) -> None:
    """Overwrite four bytes in the middle of the file: the outer Adam's first second moment becomes a NaN."""
    data = bytearray(path.read_bytes())
    at = data.find(read_checkpoint(path)["outer"]["state"][0]["exp_avg_sq"].contiguous().numpy().tobytes())
    data[at: at + 4] = b"\xff\xff\xff\xff"
    path.write_bytes(bytes(data))


def resume_integrity(tally: Tally, work: Path, reference: Path) -> None:
    """Copies of the finished reference run, each with one fault, resumed for one more iteration
    (``train --resume``), and the damaged checkpoints given to ``evaluate``. Held: a refusal in one line naming the
    fault (for a bad ``checkpoint.pt``, also the intact ``final.pt`` to continue from) with every file of the run left
    as it was; and a checkpoint from before digests existed still resumes."""
    folder = work / "integrity"
    folder.mkdir()
    foreign = {}
    for name, change in (("seed", "seed=1"), ("size", "policy_kwargs.hidden_sizes=[8]")):
        with captured_cli(["train", str(work / "tiny.yaml"), "--run-dir", str(folder / f"other-{name}"), "--set",
                           "iterations=1", "--set", change]):
            pass
        foreign[name] = folder / f"other-{name}" / "checkpoint.pt"

    def edit_config(d: Path) -> None:
        (d / "config.yaml").write_text((d / "config.yaml").read_text().replace("seed: 0", "seed: 1"))

    def directory(d: Path) -> None:
        (d / "checkpoint.pt").unlink()
        (d / "checkpoint.pt").mkdir()

    def damaged_header(d: Path) -> None:
        text = (d / "metrics.csv").read_text()
        (d / "metrics.csv").write_text(text.replace("iteration,loss", "iteratoin,loss", 1))

    def no_digest(d: Path) -> None:
        for name in ("checkpoint.pt", "final.pt"):
            torch.save({k: v for k, v in read_checkpoint(d / name).items() if k != "digest"}, d / name)

    final = "final.pt"
    cases: list[tuple[str, Callable[[Path], Any], tuple[str, ...]]] = [
        ("a checkpoint from a run with another seed", lambda d: shutil.copy(foreign["seed"], d / "checkpoint.pt"),
         ("does not belong to this run", "seed", final)),
        ("a checkpoint from a run with another policy size",
         lambda d: shutil.copy(foreign["size"], d / "checkpoint.pt"),
         ("does not belong to this run", "hidden_sizes", final)),
        ("config.yaml edited after the run started", edit_config, ("does not belong to this run", "seed")),
        ("a flipped sign bit in a weight",
         lambda d: flip_bit(d / "checkpoint.pt", read_checkpoint(d / "checkpoint.pt")["policy"]["layers.0.weight"], 31),
         ("damaged", "digest", final)),
        ("a flipped exponent bit in an α", lambda d: flip_bit(
            d / "checkpoint.pt", read_checkpoint(d / "checkpoint.pt")["step_sizes"]["alphas.layers__0__weight"], 30),
         ("damaged", "digest", final)),
        ("bytes overwritten mid-file: NaN in Adam's state", lambda d: nan_into_adam(d / "checkpoint.pt"),
         ("non-finite", "exp_avg_sq", final)),
        ("checkpoint.pt is a directory", directory, ("directory", final)),
        ("a damaged metrics.csv header", damaged_header, ("metrics.csv", "header")),
        ("a checkpoint from before digests (none stored) still resumes", no_digest, ()),
    ]
    for i, (name, damage, expect) in enumerate(cases):
        run_dir = Path(shutil.copytree(reference, folder / f"case-{i}"))
        damage(run_dir)
        before = run_files(run_dir)
        with captured_cli(["train", "--resume", str(run_dir), "--set", "iterations=81"]) as result:
            pass
        if not expect:  # nothing to refuse: the run goes on
            iterations = metrics_iterations(run_dir)
            held = result["code"] == 0 and not result["escaped"] and iterations == list(range(1, 82))
            detail = result["escaped"] or result["stderr"][-200:] or f"resumed to iteration {iterations[-1]}"
        else:
            held, detail = refused_cleanly(result, expect)
            if held and run_files(run_dir) != before:
                held, detail = False, "refused, but a file of the run changed"
        tally.add("resume integrity", f"--resume: {name}", held, detail)
        if name.startswith(("a flipped", "bytes overwritten")):
            with captured_cli(["evaluate", str(run_dir / "checkpoint.pt"), "--tasks", "2", "--episodes", "2",
                               "--steps", "1"]) as result:
                pass
            held, detail = refused_cleanly(result, expect[:2])
            tally.add("resume integrity", f"evaluate: {name}", held, detail)


# -- faulty task families ------------------------------------------------------------------------------------


def family_classes() -> tuple[dict[str, tuple[type, tuple[str, ...]]], type]:
    """Faulty variants of Navigation2D (stepped through the generic vector env, one ``make_env`` per episode) and
    the words a held error must contain."""
    import gymnasium as gym

    from metasgd_rl.family import TaskFamily
    from metasgd_rl_envs.navigation import Navigation2DFamily

    class Generic(Navigation2DFamily):
        make_vector_env = TaskFamily.make_vector_env

        def __init__(self) -> None:
            super().__init__(max_episode_steps=10)

    class NumpyTasks(Generic):
        def sample_tasks(self, n, rng, split="train"):
            return [{"goal": np.asarray(t["goal"])} for t in super().sample_tasks(n, rng, split)]

    class TupleTasks(Generic):
        def sample_tasks(self, n, rng, split="train"):
            return [{"goal": tuple(t["goal"])} for t in super().sample_tasks(n, rng, split)]

    class BrokenMakeEnv(Generic):
        def make_env(self, task):
            raise ValueError("mass must be positive")

    class WrongShape(Generic):
        def make_env(self, task):
            return gym.wrappers.TransformObservation(super().make_env(task), lambda o: np.append(o, 0.0), None)

    class NaNReward(Generic):
        def make_env(self, task):
            env = super().make_env(task)
            if task["goal"][0] > 0:  # some tasks only
                return gym.wrappers.TransformReward(env, lambda r: float("nan"))
            return env

    class StepRaises(gym.Wrapper):
        def step(self, action):
            raise RuntimeError("simulator exploded")

    class OldGymStep(gym.Wrapper):  # gym < 0.26: (obs, reward, done, info)
        def step(self, action):
            obs, reward, terminated, truncated, info = self.env.step(action)
            return obs, reward, terminated or truncated, info

    class OldGymReset(gym.Wrapper):  # gym < 0.26: the observation alone
        def reset(self, **kwargs):
            return self.env.reset(**kwargs)[0]

    class ArrayReward(gym.Wrapper):
        def step(self, action):
            obs, reward, terminated, truncated, info = self.env.step(action)
            return obs, np.array([reward, reward]), terminated, truncated, info

    def wrapped(wrapper: type) -> type:
        return type(f"{wrapper.__name__}Family", (Generic,), {"make_env": lambda self, task: wrapper(
            Generic.make_env(self, task))})

    class SampleTasksRaises(Generic):
        def sample_tasks(self, n, rng, split="train"):
            raise KeyError("goal_range")

    return {
        "tasks holding numpy arrays": (NumpyTasks, ("not JSON-able", "numpy.ndarray", ".tolist()")),
        "tasks holding tuples": (TupleTasks, ("not JSON-able", "tuple")),
        "make_env that raises": (BrokenMakeEnv, ("make_env", "mass must be positive", "task")),
        "observations of the wrong shape": (WrongShape, ("shape (3,)", "shape (2,)", "task")),
        "step that raises": (wrapped(StepRaises), ("task", "in step 1", "RuntimeError: simulator exploded")),
        "step returning the old gym 4-tuple": (wrapped(OldGymStep), ("task", "4-tuple", "in step 1")),
        "reset returning the observation alone": (wrapped(OldGymReset), ("task", "numpy.ndarray", "in reset")),
        "an array reward": (wrapped(ArrayReward), ("task", "reward of shape (2,)", "in step 1")),
        "sample_tasks that raises": (SampleTasksRaises, ("sample_tasks", "KeyError", "goal_range")),
    }, NaNReward


def faulty_families(tally: Tally, work: Path) -> None:
    from metasgd_rl import MetaSGD
    from metasgd_rl.registry import _REGISTRY, register_task_family

    settings = dict(policy_kwargs=dict(hidden_sizes=[16]), meta_batch_size=4, episodes_per_task=2, outer="adam",
                    seed=0)
    cases, nan_family = family_classes()
    for i, (name, (cls, expect)) in enumerate(cases.items()):
        family_id = f"Faulty{i}-v0"
        register_task_family(family_id, cls)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                MetaSGD(family_id, **settings).learn(1, progress_bar=False)
            held, detail = False, "trained without complaint"
        except Exception as exc:  # noqa: BLE001
            message = str(exc)
            held = (family_id in message and all(w in message for w in expect) and "\n" not in message.strip())
            detail = f"{type(exc).__name__}: {message}"
        finally:
            _REGISTRY.pop(family_id, None)
        tally.add("faulty families", name, held, detail)

    register_task_family("FaultyNaN-v0", nan_family)
    try:
        model = MetaSGD("FaultyNaN-v0", **settings)
        before = [p.detach().clone() for p in (*model.policy.parameters(), *model.step_sizes.parameters())]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model.learn(1, progress_bar=False)
        after = [p.detach() for p in (*model.policy.parameters(), *model.step_sizes.parameters())]
        messages = [str(w.message) for w in caught if "rejected" in str(w.message)]
        unchanged = all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
        named = bool(messages) and all(w in messages[0] for w in ("task", "non-finite reward", "step", "rollouts"))
        held, detail = unchanged and named, (messages[0] if messages else "no warning") + \
            ("" if unchanged else "; θ or α changed")
    finally:
        _REGISTRY.pop("FaultyNaN-v0", None)
    tally.add("faulty families", "a NaN reward in some tasks", held, detail)

    # a family registered in user code only: the metasgd-rl command is a fresh process that never imported it
    config = write_config(work / "unregistered.yaml", family="MyOwnFamily-v0")
    result = subprocess.run(cli_command("train", str(config), "--run-dir", str(work / "unregistered-run")),
                            env=subprocess_env(), capture_output=True, text=True)
    held, detail = refused_cleanly({"code": result.returncode, "stderr": result.stderr, "escaped": None},
                                   ("not registered in this process", "entry point"), codes=(2,),
                                   forbid=("did you mean",))
    tally.add("faulty families", "a family registered in user code, named in a CLI config", held, detail)


# -- edge sizes and unbounded work ----------------------------------------------------------------------------

#: sizes at the edge of what a config allows, each trained on every outer optimiser (the estimator rotating)
EDGE_SIZES: list[tuple[str, list[str]]] = [
    ("one task (meta_batch_size 1)", ["meta_batch_size=1"]),
    ("one episode per task", ["episodes_per_task=1"]),
    ("horizon 1", ["family_kwargs.max_episode_steps=1"]),
    ("one hidden unit", ["policy_kwargs.hidden_sizes=[1]"]),
    ("task_chunk_size above meta_batch_size", ["task_chunk_size=5"]),
    ("one task in a larger chunk", ["meta_batch_size=1", "task_chunk_size=3"]),
    ("two inner steps", ["inner_steps=2"]),
    ("one evaluation task", ["eval_tasks=1"]),
    ("all of them at once", ["meta_batch_size=1", "episodes_per_task=1", "family_kwargs.max_episode_steps=3",
                             "policy_kwargs.hidden_sizes=[1]", "eval_tasks=1", "task_chunk_size=4"]),
]


def edge_cases(tally: Tally, work: Path, reference: Path) -> None:
    """Edge sizes through the CLI (train, resume, evaluate; held: every command exits 0 without a traceback, or a
    size that cannot work is refused in one line), and files asking for unbounded work (held: refused in one line
    naming the key and the limit, within a timeout, where they used to run for days)."""
    folder = work / "edges"
    folder.mkdir()
    for i, (name, sets) in enumerate(EDGE_SIZES):
        for j, outer in enumerate(("trpo", "adam", "ppo")):
            estimator = ("maml", "lvc", "dice")[(i + j) % 3]
            run_dir = folder / f"edge-{i}-{outer}"
            config = write_config(folder / f"edge-{i}-{outer}.yaml", iterations=2, checkpoint_every=1, eval_every=2,
                                  eval_tasks=2, outer=outer, outer_kwargs=None, estimator=estimator)
            commands = [["train", str(config), "--run-dir", str(run_dir), *[a for s in sets for a in ("--set", s)]],
                        ["train", "--resume", str(run_dir), "--set", "iterations=3"],
                        ["evaluate", str(run_dir / "final.pt"), "--tasks", "1", "--steps", "1", "--episodes", "1"]]
            held, detail = True, ""
            for argv in commands:
                with captured_cli(argv) as result:
                    pass
                if result["code"] != 0 or result["escaped"]:
                    held, detail = False, f"{argv[0]} {argv[1]}: exit {result['code']}: " \
                        f"{result['escaped'] or result['stderr'][-300:]}"
                    break
            tally.add("edge sizes", f"{name}, {outer}, {estimator}", held, detail)
    with captured_cli(["train", str(write_config(folder / "no-inner-step.yaml", inner_steps=0)), "--run-dir",
                       str(folder / "no-inner-step")]) as result:
        pass
    tally.add("edge sizes", "no inner step (refused)", *refused_cleanly(result, ("inner_steps=0", ">= 1"), codes=(2,)))
    unbounded_work(tally, work, reference)


def unbounded_work(tally: Tally, work: Path, reference: Path) -> None:
    """A checkpoint (given to ``evaluate``) or a config (given to ``train``) asking for episodes of 1e9 steps and
    other unbounded work; run in a subprocess with a timeout, since without a limit it would not end."""
    from metasgd_rl.model import DIGEST_KEY, checkpoint_digest

    state = read_checkpoint(reference / "final.pt")
    folder = work / "unbounded"
    folder.mkdir()
    cases: list[tuple[str, list[str], tuple[str, ...]]] = []
    asks = [("family_kwargs", "max_episode_steps", 10**9), ("family_kwargs", "max_episode_steps", 1e9),
            (None, "inner_steps", 10**6), (None, "episodes_per_task", 10**7)]
    for section, key, value in asks:
        config = json.loads(state["config"])
        if section:
            config[section] = {**dict(config.get(section) or {}), key: value}
        else:
            config[key] = value
        crafted = {**state, "config": json.dumps(config)}
        crafted[DIGEST_KEY] = checkpoint_digest(crafted)  # a crafted file, not a damaged one
        path = folder / f"{key}-{value}.pt"
        torch.save(crafted, path)
        cases.append((f"a checkpoint asking {key}={value!r}, to evaluate",
                      ["evaluate", str(path), "--tasks", "1", "--steps", "0", "--episodes", "1"], (key, "not allowed")))
    config = write_config(folder / "long.yaml", family_kwargs={"max_episode_steps": 10**7})
    cases.append(("a config asking max_episode_steps=10000000, to train",
                  ["train", str(config), "--run-dir", str(folder / "long-run")], ("max_episode_steps", "100,000")))
    for name, argv, expect in cases:
        try:
            result = subprocess.run(cli_command(*argv), env=subprocess_env(), capture_output=True, text=True,
                                    timeout=120)
        except subprocess.TimeoutExpired:
            tally.add("unbounded work", name, False, "still running after 120 s")
            continue
        outcome = {"code": result.returncode, "stderr": result.stderr, "escaped": None}
        tally.add("unbounded work", name, *refused_cleanly(outcome, expect, codes=(2,)))


# -- hostile inputs: alias bombs, binary files, values torch or Ray cannot use, outputs that cannot be written -----


def alias_bomb(levels: int) -> str:
    """YAML of ``levels`` anchors, each nine aliases of the one before (9**(levels + 1) values expanded), in a few
    hundred bytes; the last one is ``policy_kwargs.hidden_sizes``, a valid key."""
    names = [f"l{i}" for i in range(levels + 1)]
    lines = [f"{names[0]}: &{names[0]} [1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    lines += [f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]" for p, n in zip(names, names[1:], strict=False)]
    return "\n".join(lines) + f"\npolicy_kwargs:\n  hidden_sizes: *{names[-1]}\n"


def sigint_during_start_up(work: Path, delay: float) -> dict[str, Any]:
    """``metasgd-rl train`` of the tiny config, SIGINT after ``delay`` seconds (imports, reading the config, building
    the model); the child gets SIGINT's default disposition even if this script runs with it ignored."""
    argv = cli_command("train", str(work / "tiny.yaml"), "--run-dir", str(work / f"ctrl-c-{delay}"))
    process = subprocess.Popen(argv, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    return {"code": process.returncode, "stderr": stderr.strip(), "escaped": None}


def capped_train(work: Path, run_dir: Path, sets: list[str], gigabytes: float) -> dict[str, Any]:
    """``metasgd-rl train`` of the tiny config with ``sets``, in a process whose address space is capped: a setting
    the memory estimate lets through meets torch's allocator there, not the machine's OOM killer."""
    import resource

    limit = int(gigabytes * 2**30)
    argv = ["train", str(work / "tiny.yaml"), "--run-dir", str(run_dir)] + [a for s in sets for a in ("--set", s)]
    result = subprocess.run(cli_command(*argv), env=subprocess_env(), capture_output=True, text=True, timeout=600,
                            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit)))
    return {"code": result.returncode, "stderr": result.stderr.strip(), "escaped": None}


def hostile_inputs(tally: Tally, work: Path, reference: Path) -> None:
    """Inputs built to hurt, through the CLI. Held: one line on stderr naming the problem, no traceback, exit 2 for
    bad input (1 for an allocation that fails, 130 for Ctrl-C), within seconds, and no run directory left behind."""
    folder = work / "hostile"
    folder.mkdir()
    tiny_text = yaml.safe_dump(TINY, sort_keys=False)
    png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4
    gym_kwargs = "{env_id: %s, parameters: {%s: {uniform: [0.4, 0.6]}}}"
    configs: list[tuple[str, bytes, list[str], tuple[str, ...]]] = [
        ("alias bomb under policy_kwargs (9**9 values)",
         (alias_bomb(8) + yaml.safe_dump({k: v for k, v in TINY.items() if k != "policy_kwargs"})).encode(), [],
         ("aliases expand",)),
        ("alias bomb in --set", tiny_text.encode(),
         ["family_kwargs={" + alias_bomb(7).replace("\npolicy_kwargs:\n  hidden_sizes:", "\nx:").strip()
          .replace("\n", ", ") + "}"], ("aliases expand",)),
        ("10000 nested lists", (tiny_text + "seed: " + "[" * 10_000 + "]" * 10_000 + "\n").encode(), [],
         ("nests more than",)),
        ("a PNG as config", png, [], ("not utf-8 text",)),
        ("an integer of 5000 digits", tiny_text.replace("seed: 0", "seed: " + "7" * 5000).encode(), [],
         ("4300 digits",)),
        ("device: meta", tiny_text.encode(), ["device=meta"], ("device",)),
        ("device: xla", tiny_text.encode(), ["device=xla"], ("device",)),
        ("alpha_init: 1e300", tiny_text.encode(), ["alpha_init=1.0e+300"], ("alpha_init",)),
        ("outer_kwargs.lr: 1e300", tiny_text.encode(), ["outer_kwargs.lr=1.0e+300"], ("outer_kwargs.lr",)),
        ("policy_kwargs.init_std: inf", tiny_text.encode(), ["policy_kwargs.init_std=.inf"], ("init_std",)),
        ("num_threads: 1e20", tiny_text.encode(), ["num_threads=100000000000000000000"], ("num_threads",)),
        ("ray_address: garbage", tiny_text.encode(), ["sampler=ray", "ray_address=garbage"], ("ray_address",)),
        ("unknown gymnasium env_id", tiny_text.encode(),
         ["family=GymEnv-v0", "family_kwargs=" + gym_kwargs % ("NoSuchEnv-v0", "length")], ("NoSuchEnv",)),
        ("parameter path through __class__", tiny_text.encode(),
         ["family=GymEnv-v0", "family_kwargs=" + gym_kwargs % ("CartPole-v1", "'unwrapped.__class__.length'")],
         ("__class__", "starts with '_'")),
    ]
    for i, (name, data, sets, expect) in enumerate(configs):
        path = folder / f"hostile-{i}.yaml"
        path.write_bytes(data)
        run_dir = folder / f"refused-{i}"
        start = time.perf_counter()
        with captured_cli(["train", str(path), "--run-dir", str(run_dir), *[a for s in sets for a in ("--set", s)]]) \
                as result:
            pass
        seconds = time.perf_counter() - start
        held, detail = refused_cleanly(result, expect, codes=(2,))
        if held and (run_dir.exists() or seconds > 10 or len(result["stderr"]) > 2100):
            held, detail = False, f"run dir left: {run_dir.exists()}, {seconds:.0f} s, {len(result['stderr'])} chars"
        tally.add("hostile inputs", name, held, detail)

    # run directories and run files
    a_file = folder / "a-file"
    a_file.write_text("x\n")
    binary_run = folder / "binary-config-run"
    binary_run.mkdir()
    (binary_run / "config.yaml").write_bytes(png)
    cases: list[tuple[str, list[str], tuple[str, ...], tuple[int, ...]]] = [
        ("--run-dir of 300 characters", ["train", str(work / "tiny.yaml"), "--run-dir", str(folder / ("r" * 300))],
         ("300 bytes long",), (2,)),
        ("--resume of a run whose config.yaml is a PNG", ["train", "--resume", str(binary_run)], ("not utf-8 text",),
         (2,)),
    ]
    # metrics.csv that a report cannot read: refused before the evaluation
    for how in ("not UTF-8", "a directory", "a line of 9 MiB"):
        run_dir = folder / f"metrics-{how.replace(' ', '-')}"
        run_dir.mkdir()
        shutil.copy(reference / "final.pt", run_dir / "final.pt")
        metrics = run_dir / "metrics.csv"
        if how == "not UTF-8":
            metrics.write_bytes((reference / "metrics.csv").read_bytes() + b"5,\xff\xfe\n")
        elif how == "a directory":
            metrics.mkdir()
        else:
            metrics.write_text("iteration,loss\n1," + "9" * (9 * 2**20) + "\n")
        cases.append((f"evaluate --report, metrics.csv {how}", ["evaluate", str(run_dir / "final.pt"), "--tasks", "2",
                                                                 "--report", str(run_dir / "report")],
                      ("metrics.csv cannot be read",), (2,)))
        cases.append((f"compare, metrics.csv {how}", ["compare", str(run_dir), "--out", str(run_dir / "cmp")],
                      ("metrics.csv cannot be read",), (2,)))
    # outputs that cannot be written: refused before the work
    long_name = "o" * 300
    cases += [
        ("evaluate --json under a file", ["evaluate", str(reference / "final.pt"), "--json", str(a_file / "r.json")],
         ("--json", "is a file, not a directory"), (2,)),
        ("evaluate --report of 300 characters", ["evaluate", str(reference / "final.pt"), "--report",
                                                 str(folder / long_name)], ("--report", "300 bytes long"), (2,)),
        ("compare --out under a file", ["compare", str(reference), "--out", str(a_file / "out")],
         ("--out", "is a file, not a directory"), (2,)),
        ("benchmark --out under a file", ["benchmark", "--out", str(a_file / "out")],
         ("--out", "is a file, not a directory"), (2,)),
    ]
    if os.geteuid() != 0:  # root writes anywhere a mode allows nothing
        locked = folder / "locked"
        locked.mkdir(mode=0o555)
        cases.append(("benchmark --out in a read-only folder", ["benchmark", "--out", str(locked / "out")],
                      ("--out", "not writable"), (2,)))
    for name, argv, expect, codes in cases:
        start = time.perf_counter()
        with captured_cli(argv) as result:
            pass
        seconds = time.perf_counter() - start
        held, detail = refused_cleanly(result, expect, codes=codes)
        if held and seconds > 20:
            held, detail = False, f"refused only after {seconds:.0f} s (the work was done first)"
        tally.add("hostile inputs", name, held, detail)

    # Ctrl-C in the first seconds: imports, reading the config, building the model
    for delay in (0.3, 1.0, 2.0):
        result = sigint_during_start_up(work, delay)
        held, detail = refused_cleanly(result, ("interrupted",), codes=(130,))
        tally.add("hostile inputs", f"Ctrl-C {delay} s after start", held, detail)

    # memory: the second-order graph of 20000-wide layers, and an allocation torch's allocator refuses
    for name, sets in (("hidden_sizes [20000, 20000], second order", []),
                       ("hidden_sizes [20000, 20000], first order", ["first_order=true"])):
        run_dir = folder / f"memory-{len(sets)}"
        result = capped_train(work, run_dir, ["policy_kwargs.hidden_sizes=[20000, 20000]", *sets], gigabytes=4)
        held, detail = refused_cleanly(result, ("memory",), codes=(1, 2), forbid=("--tasks", "continue it"))
        if held and run_dir.exists():
            held, detail = False, "the run directory was left behind"
        tally.add("hostile inputs", f"{name} (4 GB address space)", held, detail)


# -- report -------------------------------------------------------------------------------------------------


def write_report(tally: Tally, out: Path, command: str, seconds: float) -> None:
    out.mkdir(parents=True, exist_ok=True)
    summary = tally.summary()
    (out / "fault_injection.json").write_text(json.dumps(
        {"command": command, "seconds": round(seconds, 1), "summary": summary,
         "cases": [case.__dict__ for case in tally.cases]}, indent=1) + "\n")
    lines = [f"Command: `{command}` ({seconds:.0f} s)", "", "| fault | tried | held |", "|---|---|---|"]
    lines += [f"| {kind} | {row['tried']} | {row['held']} |" for kind, row in summary.items()]
    failed = [case for case in tally.cases if not case.held]
    if failed:
        lines += ["", "Not held:", ""] + [f"- {c.kind}: {c.name} ({c.detail})" for c in failed]
    (out / "fault_injection.md").write_text("\n".join(lines) + "\n")


def limit_memory(gigabytes: float) -> None:
    """Cap this process's address space: a setting that would allocate without bound fails with a MemoryError
    (counted as not held) instead of taking the machine down."""
    import resource

    limit = int(gigabytes * 2**30)
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))  # the soft limit only: a child may lift it again


def lift_memory_limit() -> None:
    """In a child process (``preexec_fn``): the address space back to the hard limit. Ray's processes reserve
    far more address space than they use (its object store maps tens of GB) and abort under the cap."""
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (hard, hard))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs in the kill storm (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill times (default 0)")
    parser.add_argument("--out", default=None, help="folder for fault_injection.{json,md} (default: none)")
    parser.add_argument("--memory-limit-gb", type=float, default=8.0,
                        help="address-space cap of this process for the in-process cases (default 8)")
    args = parser.parse_args()
    limit_memory(args.memory_limit_gb)
    command = shown_command(__file__)
    rng = np.random.default_rng(args.seed)
    tally = Tally()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="metasgd-faults-") as tmp:
        work = Path(tmp)
        reference = reference_run(work)
        print("kill storm", flush=True)
        kill_storm(tally, work, reference, args.kills, rng)
        kill_storm(tally, work, reference, max(1, args.kills // 2), rng, checkpoint_every=4)
        print("signals", flush=True)
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal_stop(tally, work, reference, signum)
        if importlib.util.find_spec("ray") is not None:
            signal_stop(tally, work, reference, signal.SIGTERM, sampler="ray")
        else:
            print("  (Ray is not installed: no SIGTERM with the Ray sampler)", flush=True)
        print("bad files", flush=True)
        bad_files(tally, work, reference)
        print("bad configs", flush=True)
        bad_configs(tally, work)
        print("bad run dirs", flush=True)
        bad_run_dirs(tally, work, reference)
        print("resume integrity", flush=True)
        resume_integrity(tally, work, reference)
        print("faulty families", flush=True)
        faulty_families(tally, work)
        print("edge sizes and unbounded work", flush=True)
        edge_cases(tally, work, reference)
        print("hostile inputs", flush=True)
        hostile_inputs(tally, work, reference)
    seconds = time.perf_counter() - start
    print()
    for kind, row in tally.summary().items():
        print(f"{kind:14s} tried {row['tried']:3d}  held {row['held']:3d}")
    if args.out:
        write_report(tally, Path(args.out), command, seconds)
    return 0 if all(case.held for case in tally.cases) else 1


if __name__ == "__main__":
    sys.exit(main())
