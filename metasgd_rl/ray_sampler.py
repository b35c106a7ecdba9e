"""Rollouts on Ray actors: the meta-batch's tasks are split into chunks, one per actor.

Each actor keeps its own copy of the task family (and so its envs between rollouts) and, per rollout, receives
the policy and its chunk's per-task parameters, steps its chunk's vector env and returns the episodes. The
learner joins the chunks (:func:`~metasgd_rl.sampler.concat_chunks`); adaptation and the meta-update stay on
the learner. Because a chunk is rolled out exactly as :func:`~metasgd_rl.sampler.sample_episodes` rolls those
tasks out inside the whole meta-batch (same env seeds per sub-env, same slice of the same noise), the joined
batch *is* the local sampler's batch for the same seed, whatever the number of actors.

Failures never hang a run: an actor process that dies is restarted by Ray and its chunk redone (up to
``max_restarts`` times); beyond that, or when a rollout takes longer than ``timeout`` seconds, the rollout
raises :class:`RolloutWorkerError` naming the chunk. An exception raised by the environment itself is
re-raised on the learner as it is. New actors start in timed stages (the process, the rollout code's imports, the
family: :mod:`metasgd_rl.rollout_worker`), and actors that do not start within ``startup_timeout`` fail with an
error that says which stage was slow, or that Ray lacked the CPUs to place them.

Ray is an optional dependency: ``pip install "metasgd-rl[distributed]"``.
"""

from __future__ import annotations

import contextlib
import functools
import math
import signal
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from metasgd_rl.family import Task, TaskFamily, TaskFamilyError
from metasgd_rl.policies import Policy
from metasgd_rl.rollout_worker import RolloutWorker, RolloutWorkerError
from metasgd_rl.sampler import EpisodeBatch, concat_chunks, rollout_seeds

INSTALL_HINT = "sampler='ray' needs Ray: pip install \"metasgd-rl[distributed]\" (or pip install ray)"


def import_ray() -> Any:
    """The ``ray`` module, or an ``ImportError`` that says how to install it."""
    try:
        import ray
    except ImportError as err:
        raise ImportError(INSTALL_HINT) from err
    return ray


def family_spec(family: TaskFamily) -> TaskFamily | tuple[str, dict[str, Any]]:
    """How an actor rebuilds ``family``: its registry id and kwargs when it has one (every process that has the
    package installed can build it, with a fresh env cache), else the object itself (pickled by Ray)."""
    if family.id is not None:
        return family.id, dict(family.make_kwargs)
    return family


class RaySampler:
    """A drop-in for :func:`~metasgd_rl.sampler.sample_episodes` that rolls out on Ray actors.

    ``address``: the Ray cluster to join (``ray.init(address=...)``; ``"auto"`` finds a running one); None starts
    a local Ray, unless one is already initialised in this process, which is then used as it is.
    ``num_workers``: actors (default: the cluster's CPUs, at least 1); a meta-batch of T tasks uses
    ``min(T, num_workers)`` of them, with contiguous chunks of tasks. Each actor reserves ``num_cpus``.
    ``max_restarts``: how often a dead actor is restarted and its chunk redone before the rollout fails.
    ``timeout``: seconds a rollout may take before it fails (the actors are then killed and recreated on the
    next rollout). ``startup_timeout``: seconds new actors may take to start; actors that cannot be placed
    (more actors × ``num_cpus`` than the cluster has free) fail with an error that says so instead of waiting.
    ``max_envs``: sub-envs each actor builds and steps at a time (None: the family's
    :attr:`~metasgd_rl.TaskFamily.max_envs`); it bounds an actor's memory and never changes the batch.
    """

    def __init__(self, family: TaskFamily, address: str | None = None, num_workers: int | None = None,
                 max_restarts: int = 2, timeout: float = 600.0, num_cpus: float = 1.0,
                 startup_timeout: float = 120.0, max_envs: int | None = None):
        self.ray = import_ray()
        if num_workers is not None and (isinstance(num_workers, bool) or not isinstance(num_workers, int)
                                        or num_workers < 1):
            raise ValueError(f"num_workers={num_workers!r} is not allowed; use an integer >= 1 or None")
        if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < 0:
            raise ValueError(f"max_restarts={max_restarts!r} is not allowed; use an integer >= 0")
        for name, value in (("timeout", timeout), ("startup_timeout", startup_timeout), ("num_cpus", num_cpus)):
            if isinstance(value, bool) or not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name}={value!r} is not allowed; use a positive number")
        self.family, self.address = family, address
        self.num_workers, self.max_restarts, self.timeout = num_workers, max_restarts, float(timeout)
        self.num_cpus, self.startup_timeout = float(num_cpus), float(startup_timeout)
        if max_envs is not None and (isinstance(max_envs, bool) or not isinstance(max_envs, int) or max_envs < 1):
            raise ValueError(f"max_envs={max_envs!r} is not allowed; use an integer >= 1 or None")
        self.max_envs = max_envs
        self._actors: list[Any] = []
        #: when the last new actors had finished each start-up stage (ping, load, build), in seconds after their
        #: creation; () before any were started
        self.startup_seconds: tuple[float, ...] = ()

    # -- actors ------------------------------------------------------------------------------------
    def _init_ray(self) -> None:
        if not self.ray.is_initialized():
            with keep_signal_handlers():
                self.ray.init(address=self.address, include_dashboard=False, log_to_driver=False)

    def _wanted_workers(self) -> int:
        if self.num_workers is not None:
            return self.num_workers
        return max(1, int(self.ray.cluster_resources().get("CPU", 1) // self.num_cpus))

    def _new_actor(self) -> Any:
        actor_cls = self.ray.remote(num_cpus=self.num_cpus, max_restarts=self.max_restarts,
                                    max_task_retries=self.max_restarts)(RolloutWorker)
        return actor_cls.remote(self._spec, name=self._family_name)

    def actors(self, count: int) -> list[Any]:
        """At least ``count`` live actor handles (created on first use; Ray restarts dead ones)."""
        self._init_ray()
        if not self._actors:  # by value: a restarted actor must not depend on an object that may be gone
            # pickled here, so that the actor's constructor arguments import nothing (its build() unpickles them)
            self._spec = self.ray.cloudpickle.dumps(family_spec(self.family))
            self._family_name = self.family.id if self.family.id is not None else type(self.family).__name__
        new = [self._new_actor() for _ in range(count - len(self._actors))]
        if new:
            self._start(new)
            self._actors += new
        return self._actors[:count]

    def _start(self, new: list[Any]) -> None:
        """Wait until the ``new`` actors are up, have imported the rollout code and made the family (the stages of
        :mod:`metasgd_rl.rollout_worker`), all within ``startup_timeout``; else kill them and raise a
        :class:`RolloutWorkerError` that says which stage did not finish and how long the earlier ones took."""
        import time

        began = time.monotonic()
        deadline = began + self.startup_timeout
        # an actor runs its calls in order: queue the three stages on every actor now, then wait stage by stage
        stages = [[actor.ping.remote() for actor in new], [actor.load.remote() for actor in new],
                  [actor.build.remote() for actor in new]]
        finished: list[float] = []  # seconds after creation at which each stage had finished on every actor
        for refs in stages:
            _, waiting = self.ray.wait(refs, num_returns=len(refs), timeout=max(0.0, deadline - time.monotonic()))
            errors = [result[1] for result in self.ray.get([r for r in refs if r not in waiting]) if result[1]]
            if waiting or errors:
                for actor in new:
                    self.ray.kill(actor)
            if errors:
                raise RolloutWorkerError(errors[0])
            if waiting:
                placed = bool(finished)  # an actor that answered a ping was placed: its CPUs are not the question
                raise RolloutWorkerError(startup_timeout_message(
                    len(waiting), len(new), self.num_cpus, self.startup_timeout,
                    total_cpus=self.ray.cluster_resources().get("CPU", 0.0),
                    free_cpus=None if placed else self._free_cpus(len(new) * self.num_cpus),
                    finished=finished, family=self._family_name))
            finished.append(time.monotonic() - began)
        self.startup_seconds = tuple(finished)

    def _free_cpus(self, wanted: float, wait: float = 3.0) -> float:
        """Ray's free CPUs once those of just-killed actors are back (Ray releases them asynchronously): polls for
        up to ``wait`` seconds until ``wanted`` CPUs are free."""
        import time

        deadline = time.monotonic() + wait
        while True:
            free = self.ray.available_resources().get("CPU", 0.0)
            if free >= wanted or time.monotonic() >= deadline:
                return free
            time.sleep(0.1)

    def close(self) -> None:
        """Kill the actors (Ray itself stays up: it may be shared with other users in this process)."""
        for actor in self._actors:
            try:
                self.ray.kill(actor)
            except Exception:  # noqa: BLE001 (already gone)
                pass
        self._actors = []

    def __del__(self) -> None:  # pragma: no cover (interpreter shutdown order)
        try:
            if self._actors and self.ray.is_initialized():
                self.close()
        except Exception:  # noqa: BLE001
            pass

    # -- rollouts ----------------------------------------------------------------------------------
    def __call__(self, family: TaskFamily, policy: Policy, params: Mapping[str, torch.Tensor],
                 tasks: Sequence[Task], episodes_per_task: int, seed: int | np.random.SeedSequence,
                 device: torch.device | str = "cpu") -> EpisodeBatch:
        """Like :func:`~metasgd_rl.sampler.sample_episodes` (the same batch for the same seed)."""
        if family is not self.family:
            raise ValueError("this RaySampler rolls out its own family; build one per family")
        tasks = list(tasks)
        total = len(tasks)
        env_seed, noise_seed = rollout_seeds(seed)
        self._init_ray()
        bounds = np.array_split(np.arange(total), min(total, self._wanted_workers()))
        actors = self.actors(len(bounds))
        policy_ref = self.ray.put(_cpu_copy(policy))
        cpu_params = {n: p.detach().cpu() for n, p in params.items()}
        refs, chunks = [], []
        for actor, index in zip(actors, bounds, strict=True):
            first, last = int(index[0]), int(index[-1]) + 1
            chunk_params = {n: p[first:last].clone() for n, p in cpu_params.items()}
            refs.append(actor.rollout.remote(policy_ref, chunk_params, tasks[first:last], int(episodes_per_task),
                                             env_seed, noise_seed, first, total, self.max_envs))
            chunks.append((first, last))
        results = self._gather(refs, chunks)
        return concat_chunks(results).to(device)

    def _gather(self, refs: list[Any], chunks: list[tuple[int, int]]) -> list[EpisodeBatch]:
        exceptions = self.ray.exceptions
        ready, pending = self.ray.wait(refs, num_returns=len(refs), timeout=self.timeout)
        if pending:
            late = [chunks[refs.index(r)] for r in pending]
            self.close()
            raise RolloutWorkerError(
                f"Ray rollout actors for tasks {_ranges(late)} did not finish within timeout={self.timeout:g} s; "
                "they were killed (raise the timeout for slow environments)")
        results = []
        for ref, (first, last) in zip(refs, chunks, strict=True):
            try:
                results.append(self.ray.get(ref))
            except exceptions.RayTaskError as err:  # the environment or policy raised: show the real error
                if isinstance(getattr(err, "cause", None), TaskFamilyError):  # its one-line message, as locally
                    raise TaskFamilyError(str(err.cause)) from None
                raise err.as_instanceof_cause() from None
            except exceptions.RayActorError as err:
                self.close()
                raise RolloutWorkerError(
                    f"the Ray rollout actor for tasks {first}..{last - 1} died and was restarted "
                    f"max_restarts={self.max_restarts} times without finishing: {err}") from err
        return results


@contextlib.contextmanager
def keep_signal_handlers() -> Iterator[None]:
    """Keep the Python handlers of SIGTERM and SIGINT that the caller installed across ``ray.init``.

    ``ray.init`` replaces SIGTERM's handler by one that calls ``sys.exit`` wherever the driver happens to be: a
    training that was to stop after its iteration with a checkpoint (:class:`~metasgd_rl.run.Run`) would instead
    abort mid-rollout. A handler the caller set (a Python callable) is put back; the defaults are left to Ray.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            if callable(handler) and handler is not signal.default_int_handler:
                signal.signal(sig, handler)


def startup_timeout_message(waiting: int, new: int, num_cpus: float, startup_timeout: float, total_cpus: float,
                            free_cpus: float | None, finished: Sequence[float] = (), family: str | None = None) -> str:
    """Why ``waiting`` of ``new`` actors did not start within ``startup_timeout`` seconds, and what to do (one line).

    ``finished``: the seconds after their creation at which the earlier start-up stages had finished on every
    actor (see :mod:`metasgd_rl.rollout_worker`): none, the processes never answered a ping; one, they were up but
    had not imported torch and the rollout code; two, they had not made the task family (``family``: its id or
    class name). ``free_cpus``: Ray's free CPUs after those actors were killed (None: not asked, the actors were
    placed). Fewer than the actors need while none answered: they could not be placed (too few CPUs, or other Ray
    work holds them). Otherwise they were merely slow, and the message says at which stage.
    """
    needed = new * num_cpus
    head = (f"{waiting} of {new} new Ray rollout actors (num_cpus={num_cpus:g} each) did not start within "
            f"startup_timeout={startup_timeout:g} s")
    advice = "raise the timeout (config key ray_startup_timeout, or RaySampler(startup_timeout=...)) or reduce the load"
    stage = min(len(finished), 2)
    if stage == 0:
        if free_cpus is not None and free_cpus < needed:
            return (f"{head}: they need {needed:g} CPUs but Ray has only {free_cpus:g} of its {total_cpus:g} CPUs "
                    "free (the rest are held by this sampler's other actors or by other Ray work); use fewer workers "
                    "(ray_workers) or free the CPUs")
        cpus = "" if free_cpus is None else \
            f", although Ray has the CPUs for them ({free_cpus:g} of {total_cpus:g} free)"
        return (f"{head}{cpus}: the worker processes were not up after {startup_timeout:g} s (Ray starts a Python "
                "process per actor, which imports Ray and this package's light worker module; slow only on a "
                f"heavily loaded machine); {advice}")
    up = f"the worker processes were up after {finished[0]:.1f} s"
    if stage == 1:
        return (f"{head}: {up}, but importing torch and the rollout code had not finished after "
                f"{startup_timeout - finished[0]:.1f} s (on a loaded machine torch's import alone can take a "
                f"minute); {advice}")
    name = "" if family is None else f" {family!r}"
    return (f"{head}: {up} and imported torch and the rollout code in {finished[1] - finished[0]:.1f} s, but making "
            f"task family{name} (importing its module and building it) had not finished after "
            f"{startup_timeout - finished[1]:.1f} s; {advice}")


def _cpu_copy(policy: Policy) -> Policy:
    """The policy on the CPU without gradients (what actors need: its structure and non-adapted tensors)."""
    import copy

    clone = copy.deepcopy(policy).cpu()
    for p in clone.parameters():
        p.requires_grad_(False)
    return clone


def _ranges(chunks: Sequence[tuple[int, int]]) -> str:
    return ", ".join(f"{first}..{last - 1}" for first, last in chunks)


def make_sampler(kind: str, family: TaskFamily, ray_address: str | None = None, ray_workers: int | None = None,
                 ray_startup_timeout: float = 120.0, max_envs: int | None = None):
    """``"local"``: :func:`~metasgd_rl.sampler.sample_episodes`; ``"ray"``: a :class:`RaySampler`
    (``ray_startup_timeout``: its ``startup_timeout``). ``max_envs``: sub-envs stepped at a time (per actor on
    Ray; None: the family's :attr:`~metasgd_rl.TaskFamily.max_envs`)."""
    from metasgd_rl.sampler import sample_episodes

    if kind == "local":
        return sample_episodes if max_envs is None else functools.partial(sample_episodes, max_envs=max_envs)
    if kind == "ray":
        return RaySampler(family, address=ray_address, num_workers=ray_workers, startup_timeout=ray_startup_timeout,
                          max_envs=max_envs)
    raise ValueError(f"sampler={kind!r} is not allowed; use one of {list(SAMPLERS)}")


SAMPLERS = ("local", "ray")
