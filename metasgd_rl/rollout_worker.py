"""The body of a Ray rollout actor, light to start and started in stages that the learner can time.

Ray pickles an actor class by reference, so every actor process imports this module (and the package's
``__init__``, which imports no other module until a name is used). This module imports only the standard library;
the actor's methods import what a rollout needs, one stage at a time, so that an actor too slow to start can be
told apart by what was slow:

1. the process is up and answers :meth:`RolloutWorker.ping` (Ray's own worker start: a Python process with Ray);
2. :meth:`RolloutWorker.load` imports the rollout code (torch, gymnasium, :mod:`metasgd_rl.sampler`);
3. :meth:`RolloutWorker.build` makes the task family (imports the family's module and builds it).

:class:`~metasgd_rl.ray_sampler.RaySampler` queues the three calls on each new actor at once (an actor runs its
calls in order) and waits for them stage by stage within its ``startup_timeout``; its error then names the stage
that did not finish and how long the earlier ones took (:func:`~metasgd_rl.ray_sampler.startup_timeout_message`).
A restarted actor (Ray reruns only the constructor) loads and builds on its first rollout.
"""

from __future__ import annotations

import os
import pickle
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    import torch

    from metasgd_rl.family import Task, TaskFamily
    from metasgd_rl.policies import Policy
    from metasgd_rl.sampler import EpisodeBatch


class RolloutWorkerError(RuntimeError):
    """A Ray rollout actor died more often than it may be restarted, did not answer in time, or cannot roll out."""


class RolloutWorker:
    """The body of a Ray actor: one task family, rollouts of task chunks (see
    :func:`~metasgd_rl.sampler.rollout_chunk`).

    ``spec``: the family, as :func:`~metasgd_rl.ray_sampler.family_spec` gives it (a registry id and kwargs, or the
    family object), or those pickled (bytes: the constructor's arguments then import nothing when Ray hands them
    over; :meth:`build` unpickles them). ``num_threads``: torch's threads in the actor. ``name``: the family's id or
    class name, for the error when it cannot be made.
    """

    def __init__(self, spec: bytes | TaskFamily | tuple[str, dict[str, Any]], num_threads: int = 1,
                 name: str | None = None):
        self.spec, self.num_threads = spec, num_threads
        self.name = name if name is not None else (spec[0] if isinstance(spec, tuple) else None)
        #: why this actor cannot roll out (the family could not be made, or the rollout code not imported): the
        #: start-up calls return it, so that the learner says it in one line (an actor whose constructor raised
        #: would be restarted and then reported as dead)
        self.error: str | None = None
        self.family: TaskFamily | None = None
        self._loaded = False

    def ping(self) -> tuple[int, str | None]:
        """Stage 1: the actor's process id, and why it cannot roll out (None when it can, or cannot tell yet)."""
        return os.getpid(), self.error

    def load(self) -> tuple[float, str | None]:
        """Stage 2: import torch and the rollout code; the seconds it took, and why the actor cannot roll out."""
        start = time.perf_counter()
        if not self._loaded and self.error is None:
            try:
                import torch

                import metasgd_rl.sampler  # noqa: F401 (the rollout code and what it imports: gymnasium, numpy)

                torch.set_num_threads(self.num_threads)
                self._loaded = True
            except Exception as err:  # noqa: BLE001 (reported to the learner in one line)
                self.error = f"a Ray rollout actor could not import the rollout code: {_one_line(err)}"
        return time.perf_counter() - start, self.error

    def build(self) -> tuple[float, str | None]:
        """Stage 3: make the task family (after :meth:`load`); the seconds it took, and why the actor cannot roll
        out (the family could not be made here: e.g. one registered only in the learner's process)."""
        start = time.perf_counter()
        self.load()
        if self.family is None and self.error is None:
            spec = self.spec
            how = "unpickles the family"
            try:
                if isinstance(spec, bytes):
                    spec = pickle.loads(spec)  # noqa: S301 (the learner's own family, sent by its RaySampler)
                if isinstance(spec, tuple):
                    from metasgd_rl.registry import make_task_family

                    how = "rebuilds the family from its id"
                    family_id, kwargs = spec
                    self.name = family_id
                    self.family = make_task_family(family_id, **kwargs)
                else:
                    self.family = spec
            except Exception as err:  # noqa: BLE001 (reported to the learner in one line)
                name = "" if self.name is None else f" {self.name!r}"
                self.error = (f"a Ray rollout actor could not make task family{name} (an actor {how} in a fresh "
                              f"process): {_one_line(err)}")
        return time.perf_counter() - start, self.error

    def rollout(self, policy: Policy, params: Mapping[str, torch.Tensor], tasks: Sequence[Task], episodes: int,
                env_seed: int, noise_seed: int, first_task: int, total_tasks: int,
                max_envs: int | None = None) -> EpisodeBatch:
        """Roll out one chunk of the meta-batch (loading and building first if this actor was restarted)."""
        self.build()
        if self.family is None:
            raise RolloutWorkerError(self.error)
        from metasgd_rl.sampler import rollout_chunk

        return rollout_chunk(self.family, policy, params, tasks, episodes, env_seed, noise_seed, first_task,
                             total_tasks, max_envs=max_envs)


def _one_line(err: BaseException) -> str:
    """``"Type: message"`` on one line (:func:`metasgd_rl.family.one_line`, if that module imports)."""
    try:
        from metasgd_rl.family import one_line

        return one_line(err)
    except Exception:  # noqa: BLE001 (the family module itself did not import)
        return " ".join(f"{type(err).__name__}: {err}".split())
