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
re-raised on the learner as it is.

Ray is an optional dependency: ``pip install "metasgd-rl[distributed]"``.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from metasgd_rl.family import Task, TaskFamily, TaskFamilyError, one_line
from metasgd_rl.policies import Policy
from metasgd_rl.sampler import EpisodeBatch, concat_chunks, rollout_chunk, rollout_seeds

INSTALL_HINT = "sampler='ray' needs Ray: pip install \"metasgd-rl[distributed]\" (or pip install ray)"


class RolloutWorkerError(RuntimeError):
    """A Ray rollout actor died more often than it may be restarted, or did not answer in time."""


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


class RolloutWorker:
    """The body of a Ray actor: one task family, rollouts of task chunks (see :func:`rollout_chunk`)."""

    def __init__(self, spec: TaskFamily | tuple[str, dict[str, Any]], num_threads: int = 1):
        torch.set_num_threads(num_threads)
        #: why the family could not be made here: :meth:`ping` reports it, so that the learner says it in one line
        #: (an actor whose constructor raised would be restarted and then reported as dead)
        self.error: str | None = None
        self.family: TaskFamily | None = None
        if isinstance(spec, TaskFamily):
            self.family = spec
            return
        from metasgd_rl.registry import make_task_family

        family_id, kwargs = spec
        try:
            self.family = make_task_family(family_id, **kwargs)
        except Exception as err:  # noqa: BLE001 (reported to the learner by ping)
            self.error = (f"a Ray rollout actor could not make task family {family_id!r} (an actor rebuilds the "
                          f"family from its id in a fresh process): {one_line(err)}")

    def rollout(self, policy: Policy, params: Mapping[str, torch.Tensor], tasks: Sequence[Task], episodes: int,
                env_seed: int, noise_seed: int, first_task: int, total_tasks: int) -> EpisodeBatch:
        if self.family is None:
            raise RolloutWorkerError(self.error)
        return rollout_chunk(self.family, policy, params, tasks, episodes, env_seed, noise_seed, first_task,
                             total_tasks)

    def ping(self) -> tuple[int, str | None]:
        """The actor's process id, and why it cannot roll out (None when it can)."""
        import os

        return os.getpid(), self.error


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
    """

    def __init__(self, family: TaskFamily, address: str | None = None, num_workers: int | None = None,
                 max_restarts: int = 2, timeout: float = 600.0, num_cpus: float = 1.0,
                 startup_timeout: float = 120.0):
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
        self._actors: list[Any] = []

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
        return actor_cls.remote(self._spec)

    def actors(self, count: int) -> list[Any]:
        """At least ``count`` live actor handles (created on first use; Ray restarts dead ones)."""
        self._init_ray()
        if not self._actors:  # by value: a restarted actor must not depend on an object that may be gone
            self._spec = family_spec(self.family)
        new = [self._new_actor() for _ in range(count - len(self._actors))]
        if new:
            pings = [actor.ping.remote() for actor in new]
            _, waiting = self.ray.wait(pings, num_returns=len(pings), timeout=self.startup_timeout)
            errors = [error for _, error in self.ray.get([p for p in pings if p not in waiting]) if error]
            if waiting or errors:
                for actor in new:
                    self.ray.kill(actor)
            if errors:
                raise RolloutWorkerError(errors[0])
            if waiting:
                raise RolloutWorkerError(startup_timeout_message(
                    len(waiting), len(new), self.num_cpus, self.startup_timeout,
                    total_cpus=self.ray.cluster_resources().get("CPU", 0.0),
                    free_cpus=self._free_cpus(len(new) * self.num_cpus)))
            self._actors += new
        return self._actors[:count]

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
                                             env_seed, noise_seed, first, total))
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
                            free_cpus: float) -> str:
    """Why ``waiting`` of ``new`` actors did not answer within ``startup_timeout`` seconds, and what to do.

    ``free_cpus``: Ray's free CPUs after those actors were killed. Fewer than the actors need: they could not be
    placed (too few CPUs, or other Ray work holds them). Otherwise Ray had placed them and they were merely slow to
    start (an actor imports torch, gymnasium and the family's modules: minutes on a heavily loaded machine).
    """
    needed = new * num_cpus
    head = (f"{waiting} of {new} new Ray rollout actors (num_cpus={num_cpus:g} each) did not start within "
            f"startup_timeout={startup_timeout:g} s")
    if free_cpus < needed:
        return (f"{head}: they need {needed:g} CPUs but Ray has only {free_cpus:g} of its {total_cpus:g} CPUs free "
                "(the rest are held by this sampler's other actors or by other Ray work); use fewer workers "
                "(ray_workers) or free the CPUs")
    return (f"{head}, although Ray has the CPUs for them ({free_cpus:g} of {total_cpus:g} free): they were slow to "
            "start (an actor imports torch, gymnasium and the family's modules, which can take minutes on a heavily "
            "loaded machine); raise the timeout (config key ray_startup_timeout, or "
            "RaySampler(startup_timeout=...)) or reduce the load")


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
                 ray_startup_timeout: float = 120.0):
    """``"local"``: :func:`~metasgd_rl.sampler.sample_episodes`; ``"ray"``: a :class:`RaySampler`
    (``ray_startup_timeout``: its ``startup_timeout``)."""
    from metasgd_rl.sampler import sample_episodes

    if kind == "local":
        return sample_episodes
    if kind == "ray":
        return RaySampler(family, address=ray_address, num_workers=ray_workers, startup_timeout=ray_startup_timeout)
    raise ValueError(f"sampler={kind!r} is not allowed; use one of {list(SAMPLERS)}")


SAMPLERS = ("local", "ray")
