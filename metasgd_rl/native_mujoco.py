"""A vector env that steps all its MuJoCo sub-envs in one call of MuJoCo's own batched rollout.

Gymnasium's MuJoCo envs advance one model per Python ``env.step``: for a meta-batch of 40 tasks x 20 episodes
that is 800 Python calls per time step, and the Python around ``mj_step`` costs more than the physics.
:class:`NativeMujocoVectorEnv` keeps the T x E sub-envs' physics states in one array and advances all of them
by the env's ``frame_skip`` with one call of ``mujoco.rollout.Rollout`` (MuJoCo >= 3.2.7), on as many native
threads as torch was set to use when the env was built (the model's ``num_threads``), with the GIL released.
Observations, rewards, terminations and the ``info`` terms are then computed for all sub-envs at once in numpy
from the returned states, by a subclass that mirrors one gymnasium env (``metasgd_rl_envs.locomotion_native``).

MuJoCo stays the physics: the same models, the same ``mj_step``. Memory is one ``MjModel`` per distinct model
(one for all sub-envs when tasks only change the reward, one per task when they change masses or friction)
and one ``MjData`` per thread, not one gymnasium env per sub-env.

Equality with gymnasium. A sub-env reset with seed ``s`` draws its initial state exactly as the gymnasium env
reset with ``s`` (the same generator, the same draws), and one step from the same physics state with the same
action gives the same observation, reward, ``info`` and flags, bit for bit. Whole trajectories agree until
MuJoCo's constraint solver warm start matters: a gymnasium env starts each step's solver from the previous
step's accelerations (``qacc_warmstart``), which ``mujoco.rollout`` neither takes back out nor keeps between
calls, so here each env step starts the solver from zero. Both solve to the model's tolerance (1e-8), and the
tiny differences grow chaotically in contact-rich gaits: HalfCheetah trajectories agree to ~1e-11 after 50
steps and differ visibly after ~100. Episode statistics are those of the same physics (tested); single
trajectories are not those of gymnasium's env. (``check_task_family``'s comparison of the vector env with
single envs, 20 steps by default, passes; over a hundred steps it would not.)

Each reset starts exactly one episode per sub-env; a finished sub-env is frozen (last observation, reward 0,
sticky flags, no ``info``) until the next reset, as in :class:`~metasgd_rl.family.EpisodeVectorEnv`.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

#: the first MuJoCo whose ``mujoco.rollout`` has the ``Rollout`` class (a persistent native thread pool)
MIN_MUJOCO = (3, 2, 7)


def native_rollout_problem() -> str | None:
    """Why MuJoCo's batched rollout cannot serve here (MuJoCo missing or older than 3.2.7), or None."""
    try:
        import mujoco
    except ImportError:
        return 'MuJoCo is not installed (pip install "metasgd-rl[mujoco]")'
    version = tuple(int(p) for p in mujoco.__version__.split(".")[:3] if p.isdigit())
    if version < MIN_MUJOCO:
        return (f"MuJoCo {mujoco.__version__} has no mujoco.rollout.Rollout (it needs MuJoCo >= "
                f"{'.'.join(map(str, MIN_MUJOCO))}; pip install -U \"metasgd-rl[mujoco]\")")
    return None


class NativeMujocoVectorEnv(VectorEnv, abc.ABC):
    """T x E MuJoCo sub-envs stepped together by ``mujoco.rollout``; sub-env i runs on ``models[i]``.

    ``models``: one ``MjModel`` per sub-env (the same object repeated where sub-envs share a model; all of the
    same sizes). ``init_qpos``/``init_qvel``: the gymnasium env's initial pose (``env.init_qpos``). ``frame_skip``:
    physics steps per env step. ``horizon``: the time limit (truncation). ``task_values``: per-sub-env arrays of
    the task parameters the reward reads (e.g. ``{"goal_velocity": [n]}``).

    Subclasses mirror one gymnasium env: :meth:`reset_noise` (the initial-state draws of its ``reset_model``, in
    the same order from the same generator), :meth:`observe` (its ``_get_obs``) and :meth:`transition` (its
    reward, termination and ``info`` from the states before and after a step).
    """

    metadata = {"autoreset_mode": AutoresetMode.DISABLED}
    #: torch threads the sampler's policy should use between steps: one, leaving the cores to MuJoCo's threads
    #: (a 2 x 100 policy on 800 sub-envs gains nothing from a second thread, and torch's idle OpenMP threads spin
    #: on the cores MuJoCo's rollout threads need: measured 42k env steps/s with 1 torch thread, 32k with 2)
    policy_threads: int | None = 1

    def __init__(
        self,
        models: Sequence[Any],
        init_qpos: np.ndarray,
        init_qvel: np.ndarray,
        frame_skip: int,
        horizon: int,
        observation_space: spaces.Box,
        action_space: spaces.Box,
        task_values: dict[str, np.ndarray] | None = None,
        threads: int | None = None,
    ):
        import mujoco
        import torch
        from mujoco import rollout

        if len(models) == 0:
            raise ValueError(f"{type(self).__name__} needs at least one sub-env")
        self._mujoco, self._rollout_module = mujoco, rollout
        self.models = list(models)
        self.num_envs = len(self.models)
        first = self.models[0]
        self.nq, self.nv, self.nu = first.nq, first.nv, first.nu
        full = mujoco.mjtState.mjSTATE_FULLPHYSICS.value
        self.nstate = mujoco.mj_stateSize(first, full)
        start = mujoco.mj_stateSize(first, mujoco.mjtState.mjSTATE_TIME.value)  # the state is time, qpos, qvel, ...
        self._qpos = slice(start, start + self.nq)
        self._qvel = slice(self._qpos.stop, self._qpos.stop + self.nv)
        # the state of a freshly reset MjData (time 0, qpos0, zero velocities, activations, userdata)
        data = mujoco.MjData(first)
        mujoco.mj_resetData(first, data)
        self._reset_state = np.empty(self.nstate)
        mujoco.mj_getState(first, data, self._reset_state, full)
        self.init_qpos = np.asarray(init_qpos, dtype=np.float64).copy()
        self.init_qvel = np.asarray(init_qvel, dtype=np.float64).copy()
        self.frame_skip, self.horizon = int(frame_skip), int(horizon)
        self.dt = np.array([m.opt.timestep * self.frame_skip for m in self.models])
        self.task_values = {k: np.asarray(v) for k, v in (task_values or {}).items()}
        #: MuJoCo's rollout threads: by default torch's thread count when the env is built (the model's num_threads)
        self.threads = max(1, min(int(torch.get_num_threads() if threads is None else threads), self.num_envs))

        self.single_observation_space, self.single_action_space = observation_space, action_space
        self.observation_space = batch_space(observation_space, self.num_envs)
        self.action_space = batch_space(action_space, self.num_envs)

        n = self.num_envs
        self.state = np.tile(self._reset_state, (n, 1))
        self._control = np.zeros((n, self.frame_skip, self.nu))
        self._out = np.zeros((n, self.frame_skip, self.nstate))
        self._obs = np.zeros((n, *observation_space.shape), dtype=observation_space.dtype)
        self._terminated = np.zeros(n, dtype=bool)
        self._truncated = np.zeros(n, dtype=bool)
        self._elapsed = 0
        self._rngs: list[np.random.Generator | None] = [None] * n
        self._pools: dict[int, tuple[Any, list[Any]]] = {}

    # -- what a subclass mirrors ------------------------------------------------------------------------------

    @abc.abstractmethod
    def reset_noise(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """The (qpos, qvel) offsets that the gymnasium env's ``reset_model`` draws from ``rng``, in its order."""

    @abc.abstractmethod
    def observe(self, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
        """``[n, obs_dim]`` observations of the states ``qpos [n, nq]``, ``qvel [n, nv]``."""

    @abc.abstractmethod
    def transition(
        self, qpos_before: np.ndarray, qpos: np.ndarray, qvel: np.ndarray, actions: np.ndarray, envs: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """``(reward [n], terminated [n], info {key: [n]})`` of sub-envs ``envs`` stepped from ``qpos_before`` to
        ``(qpos, qvel)`` with ``actions`` (as given to :meth:`step`)."""

    def reset_info(self, qpos: np.ndarray) -> dict[str, np.ndarray]:
        """The gymnasium env's ``reset`` info for states ``qpos [n, nq]`` (none by default)."""
        return {}

    # -- the VectorEnv ------------------------------------------------------------------------------------------

    def reset(self, *, seed: int | Sequence[int | None] | None = None, options: dict | None = None):
        """Reset every sub-env: sub-env i with ``seed + i`` (or ``seed[i]``), drawing its initial state as the
        gymnasium env reset with that seed does; ``None`` keeps drawing from the sub-env's generator."""
        n = self.num_envs
        if seed is None or isinstance(seed, (int, np.integer)):
            seeds = [None if seed is None else int(seed) + i for i in range(n)]
        else:
            seeds = list(seed)
            if len(seeds) != n:
                raise ValueError(f"got {len(seeds)} seeds for {n} sub-envs")
        qpos = np.tile(self.init_qpos, (n, 1))
        qvel = np.tile(self.init_qvel, (n, 1))
        for i, s in enumerate(seeds):  # one generator per sub-env: gymnasium's seeding rule, not vectorisable
            if s is not None or self._rngs[i] is None:
                self._rngs[i], _ = seeding.np_random(s)
            dqpos, dqvel = self.reset_noise(self._rngs[i])
            qpos[i] += dqpos
            qvel[i] += dqvel
        self.state[:] = self._reset_state
        self.state[:, self._qpos] = qpos
        self.state[:, self._qvel] = qvel
        self._terminated[:] = False
        self._truncated[:] = False
        self._elapsed = 0
        self._obs = self.observe(qpos, qvel).astype(self._obs.dtype, copy=False)
        info = self.reset_info(qpos)
        return self._obs.copy(), _vector_info(info, np.ones(n, dtype=bool))

    def step(self, actions):
        actions = np.asarray(actions)
        n = self.num_envs
        if actions.shape != (n, self.nu):
            raise ValueError(f"actions of shape {actions.shape} for {n} sub-envs with {self.nu} actuators; expected "
                             f"{(n, self.nu)}")
        running = ~(self._terminated | self._truncated)
        rewards = np.zeros(n, dtype=np.float64)
        if not running.any():
            return self._obs.copy(), rewards, self._terminated.copy(), self._truncated.copy(), {}
        self._elapsed += 1
        every = bool(running.all())
        envs = np.arange(n) if every else np.flatnonzero(running)
        state0 = self.state if every else self.state[envs]
        control = self._control if every else self._control[: len(envs)]
        out = self._out if every else self._out[: len(envs)]
        control[:] = (actions if every else actions[envs])[:, None, :]
        models = self.models if every else [self.models[i] for i in envs]
        self._advance(models, state0, control, out)
        after = out[:, -1]
        qpos_before = state0[:, self._qpos].copy()
        self.state[envs] = after
        qpos, qvel = after[:, self._qpos], after[:, self._qvel]
        reward, terminated, info = self.transition(qpos_before, qpos, qvel, actions[envs], envs)
        rewards[envs] = reward
        self._obs[envs] = self.observe(qpos, qvel)
        self._terminated[envs] = terminated
        if self._elapsed >= self.horizon:
            self._truncated[envs] = True
        return (self._obs.copy(), rewards, self._terminated.copy(), self._truncated.copy(),
                _vector_info(info, running, envs))

    def _advance(self, models: list[Any], state0: np.ndarray, control: np.ndarray, out: np.ndarray) -> None:
        """One call of MuJoCo's rollout: every given sub-env advances ``frame_skip`` physics steps."""
        pool, datas = self._pool(min(self.threads, len(models)))
        pool.rollout(models, datas, np.ascontiguousarray(state0), control, skip_checks=True, nstep=self.frame_skip,
                     state=out, sensordata=None, initial_warmstart=None, chunk_size=None)

    def _pool(self, threads: int) -> tuple[Any, list[Any]]:
        """MuJoCo's rollout thread pool for ``threads`` threads (none for one) and one ``MjData`` per thread."""
        if threads not in self._pools:
            rollout = self._rollout_module.Rollout(nthread=threads if threads > 1 else 0)
            self._pools[threads] = (rollout, [self._mujoco.MjData(self.models[0]) for _ in range(threads)])
        return self._pools[threads]

    def close_extras(self, **kwargs: Any) -> None:
        for rollout, _ in self._pools.values():
            rollout.close()
        self._pools.clear()


def _vector_info(info: dict[str, np.ndarray], running: np.ndarray, envs: np.ndarray | None = None) -> dict[str, Any]:
    """``info`` of sub-envs ``envs`` (all if None) in gymnasium's vector format: ``{key: [n], "_key": [n] bool}``."""
    n = len(running)
    out: dict[str, Any] = {}
    for key, values in info.items():
        values = np.asarray(values)
        full = np.zeros(n, dtype=values.dtype)
        full[slice(None) if envs is None else envs] = values
        out[key], out["_" + key] = full, running.copy()
    return out
