"""Meta-World's own meta-RL evaluation (``metaworld.evaluation.metalearning_evaluation``) of a Meta-SGD or MAML
model, as Meta-World+ (McLean et al. 2025) reports it, beside a per-goal count of the same episodes.

The protocol, run by ``metaworld``'s helper on ``metaworld``'s own test vector env (``metaworld.make_ml_envs``,
``split="test"``): ``envs_per_class`` sub-envs per test class, each cycling through its share of the class's
goals; per round every sub-env takes its next goal, the agent collects ``adaptation_episodes`` episodes per
sub-env and takes an inner step (repeated ``adaptation_steps`` times), then runs evaluation episodes with the
adapted policy, each ending at success (success = at any step). With ``envs_per_class`` dividing 50, the rounds
visit every test goal of the benchmark exactly once. The helper reports the mean success rate over classes and
each class's rate.

One property of the helper decides how to run it: it counts, per *class*, the first ``evaluation_episodes``
evaluation episodes to end among all of that class's sub-envs, and stops the round there. Successful episodes end
early, so with several sub-envs per class the count leans towards successes and most goals of the round are never
counted (with Meta-World's default of 20 sub-envs for ML1, 3 of 20 goals per round). The default here,
``envs_per_class=1``, makes the helper's count exactly per goal: 50 rounds, each goal adapted and evaluated once.
:class:`EpisodeRecorder` keeps every episode of every sub-env, and :func:`metaworld_protocol` reports beside the
helper's number the same run counted per goal: success of each goal's ``evaluation_episodes`` evaluation episodes
(after adaptation; goals the helper cut short are left out and the count says how many remain) and of its
adaptation episodes before the first inner step (before adaptation, which the helper does not report).

The model adapts exactly as :meth:`MetaSGD.adapt_tasks <metasgd_rl.MetaSGD.adapt_tasks>` does (the library's
:func:`~metasgd_rl.estimators.adapt_tasks`, its estimator's inner surrogate, its advantages and its learned α per
step), on the episodes the protocol collected. Actions are sampled from the policy (as in training and in
``metasgd-rl evaluate``); ``deterministic=True`` uses the policy's mean in the evaluation episodes instead.

:func:`evaluate_checkpoint` runs the protocol on a checkpoint file with a cache per checkpoint digest, and
:func:`summarise_protocol_runs` aggregates runs over seeds (mean ± 95 % t-interval, IQM); both are shared by
``scripts/evaluate_metaworld.py`` and ``scripts/reproduce_metaworld.py``.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from metasgd_rl.estimators import adapt_tasks
from metasgd_rl.policies import observation_features
from metasgd_rl.sampler import EpisodeBatch, info_flags
from metasgd_rl_envs.metaworld import MetaWorldFamily, import_metaworld, load_benchmark

#: the number of goals per class in each split of the ML benchmarks
GOALS_PER_CLASS = 50


@dataclass
class EpisodeRecorder:
    """Every finished episode of every sub-env: its round, phase ("adapt" or "eval"), return and success."""

    phase: str = "adapt"
    round: int = -1
    episodes: list[dict[str, Any]] = field(default_factory=list)
    _returns: np.ndarray | None = None
    _success: np.ndarray | None = None

    def start(self, num_envs: int) -> None:
        """A new episode in every sub-env (after the vector env was reset)."""
        self._returns = np.zeros(num_envs)
        self._success = np.zeros(num_envs, dtype=bool)

    def step(self, rewards: np.ndarray, success: np.ndarray, done: np.ndarray) -> None:
        self._returns += rewards
        self._success |= success
        for i in np.flatnonzero(done):
            self.episodes.append({"round": self.round, "phase": self.phase, "env": int(i),
                                  "return": float(self._returns[i]), "success": bool(self._success[i])})
            self._returns[i], self._success[i] = 0.0, False


class RecordingVectorEnv(gym.vector.VectorWrapper):
    """Passes everything through and tells an :class:`EpisodeRecorder` each sub-env's rewards, success flags and
    episode ends (Meta-World's success flag of a step that ended an episode is in ``final_info``)."""

    def __init__(self, env: gym.vector.VectorEnv, recorder: EpisodeRecorder):
        super().__init__(env)
        self.recorder = recorder

    def call(self, name: str, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        """The sub-envs' method ``name`` (the protocol toggles and samples tasks through it)."""
        return self.env.call(name, *args, **kwargs)

    def get_attr(self, name: str) -> tuple[Any, ...]:
        return self.env.get_attr(name)

    def reset(self, *, seed: Any = None, options: Any = None):
        out = self.env.reset(seed=seed, options=options)
        self.recorder.start(self.num_envs)
        return out

    def step(self, actions: Any):
        obs, rewards, terminated, truncated, infos = self.env.step(actions)
        done = np.logical_or(terminated, truncated)
        success = info_flags(infos, "success", self.num_envs)
        final = infos.get("final_info")
        if final is not None:
            success = np.where(done, info_flags(final, "success", self.num_envs), success)
        self.recorder.step(np.asarray(rewards, dtype=np.float64), success, done)
        return obs, rewards, terminated, truncated, infos


class MetaSGDAgent:
    """A :class:`~metasgd_rl.MetaSGD` (or MAML) model as ``metaworld.evaluation``'s ``MetaLearningAgent``: one
    adapted parameter set per sub-env, inner steps on the episodes the protocol collects."""

    def __init__(self, model: Any, num_envs: int, adaptation_episodes: int, seed: int, recorder: EpisodeRecorder,
                 deterministic: bool = False):
        self.model, self.num_envs, self.episodes = model, int(num_envs), int(adaptation_episodes)
        self.recorder, self.deterministic = recorder, bool(deterministic)
        self.generator = torch.Generator(device=model.device).manual_seed(int(seed))
        self.init()

    # -- the MetaLearningAgent protocol -----------------------------------------------------------------------
    def init(self) -> None:
        """A new round: θ for every sub-env, no episodes yet."""
        self.params = {n: p.detach() for n, p in self.model.policy.task_parameters(self.num_envs).items()}
        self.batches: list[EpisodeBatch] = []
        self._steps: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        self.recorder.round += 1
        self.recorder.phase = "adapt"

    def adapt_action(self, observations: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        self.recorder.phase = "adapt"
        return self._act(observations, deterministic=False), {}

    def step(self, timestep: Any) -> None:
        done = np.logical_or(timestep.terminated, timestep.truncated)
        self._steps.append((np.asarray(timestep.observation), np.asarray(timestep.action),
                            np.asarray(timestep.reward, dtype=np.float64), done))

    def adapt(self) -> None:
        """One more inner step for every sub-env, on its first ``adaptation_episodes`` episodes since the last."""
        self.batches.append(self._batch())
        self._steps = []
        model = self.model

        def next_batch(k: int, params: dict[str, torch.Tensor]) -> tuple[EpisodeBatch, torch.Tensor]:
            return self.batches[k], model.advantages(self.batches[k])

        with torch.enable_grad():  # replays the earlier steps: the adapted parameters depend only on the batches
            adaptation = adapt_tasks(model.policy, model.step_sizes, self.num_envs, next_batch,
                                     inner_steps=len(self.batches), estimator=model.estimator, create_graph=False)
        self.params = {n: p.detach() for n, p in adaptation.params.items()}

    def eval_action(self, observations: np.ndarray) -> np.ndarray:
        self.recorder.phase = "eval"
        return self._act(observations, deterministic=self.deterministic)

    def reset(self, env_mask: np.ndarray) -> None:
        """Nothing to forget between episodes: the policy has no memory."""

    # -- helpers ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _act(self, observations: np.ndarray, deterministic: bool) -> np.ndarray:
        policy, space = self.model.policy, self.model.family.observation_space
        obs = observation_features(space, torch.as_tensor(observations, device=self.model.device))
        obs = obs.reshape(self.num_envs, 1, -1)
        if deterministic:
            mean, _ = policy.distribution_params(obs, self.params)
            return mean.reshape(self.num_envs, -1).cpu().numpy()
        noise = policy.draw_noise((self.num_envs, 1), self.generator, self.model.device)
        return policy.action_sampler(self.params)(obs, noise).reshape(self.num_envs, -1).cpu().numpy()

    def _batch(self) -> EpisodeBatch:
        """The recorded steps as an :class:`EpisodeBatch` ``[H, N, E]``: each sub-env's first E episodes."""
        n, e = self.num_envs, self.episodes
        per_env: list[list[list[int]]] = [[[]] for _ in range(n)]  # step indices of each episode of each sub-env
        for t, (_, _, _, done) in enumerate(self._steps):
            for i in range(n):
                if len(per_env[i]) <= e:
                    per_env[i][-1].append(t)
                    if done[i]:
                        per_env[i].append([])
        if any(sum(1 for ep in eps if ep) < e for eps in per_env):
            raise RuntimeError(f"the protocol collected fewer than {e} episodes for some sub-env")
        horizon = max(len(ep) for eps in per_env for ep in eps[:e])
        obs_np = np.stack([s[0] for s in self._steps])
        act_np = np.stack([s[1] for s in self._steps])
        rew_np = np.stack([s[2] for s in self._steps])
        obs = np.zeros((horizon, n, e, *obs_np.shape[2:]), dtype=np.float32)
        act = np.zeros((horizon, n, e, *act_np.shape[2:]), dtype=np.float32)
        rew = np.zeros((horizon, n, e), dtype=np.float32)
        mask = np.zeros((horizon, n, e), dtype=np.float32)
        for i, eps in enumerate(per_env):
            for j, steps in enumerate(eps[:e]):
                obs[:len(steps), i, j] = obs_np[steps, i]
                act[:len(steps), i, j] = act_np[steps, i]
                rew[:len(steps), i, j] = rew_np[steps, i]
                mask[:len(steps), i, j] = 1.0
        device, space = self.model.device, self.model.family.observation_space
        features = observation_features(space, torch.as_tensor(obs, device=device))
        return EpisodeBatch(observations=features, actions=torch.as_tensor(act, device=device),
                            rewards=torch.as_tensor(rew, device=device), mask=torch.as_tensor(mask, device=device))


def metaworld_protocol(model: Any, *, envs_per_class: int = 1, adaptation_steps: int = 1,
                       adaptation_episodes: int = 10, evaluation_episodes: int = 3, seed: int = 0,
                       split: str = "test", deterministic: bool = False,
                       horizon: int | None = None) -> dict[str, Any]:
    """Run ``metaworld.evaluation.metalearning_evaluation`` on ``model`` (its family a Meta-World family) over all
    goals of the benchmark's ``split`` classes (``envs_per_class`` must divide 50), at ``horizon`` steps per
    episode (None: the family's, the horizon the model trained at; the papers evaluate at Meta-World's 500).

    Returns plain data: the settings; ``metaworld``'s ``success`` (mean over classes), ``return`` and
    ``success_per_class``; and ``per_goal``: for each class the success of each goal's first
    ``evaluation_episodes`` evaluation episodes (``after``) and of its adaptation episodes before the first inner
    step (``before``), each averaged over the class's goals (``goals``: 50 with ``envs_per_class=1``; fewer when the
    helper cut a round short), and the mean over classes of both. ``seed`` seeds the
    policy's action noise; the goals are the benchmark's own (``metaworld`` builds them from the family's
    ``benchmark_seed``).
    """
    family = model.family
    if not isinstance(family, MetaWorldFamily):
        raise ValueError(f"the Meta-World protocol needs a Meta-World task family, not {family!r}")
    counts = [("envs_per_class", envs_per_class), ("adaptation_steps", adaptation_steps),
              ("adaptation_episodes", adaptation_episodes), ("evaluation_episodes", evaluation_episodes)]
    for name, value in counts + ([("horizon", horizon)] if horizon is not None else []):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} is not allowed; use an integer >= 1")
    horizon = family.max_episode_steps if horizon is None else horizon
    if GOALS_PER_CLASS % envs_per_class:
        raise ValueError(f"envs_per_class={envs_per_class} is not allowed; use a divisor of {GOALS_PER_CLASS} "
                         "(each sub-env then visits its share of a class's goals once)")
    import_metaworld()  # a one-line error where the extra is missing
    from metaworld.evaluation import metalearning_evaluation

    name = family.env_name if family.benchmark == "ML1" else family.benchmark
    classes = family.classes[split]
    num_envs = envs_per_class * len(classes)
    rounds = GOALS_PER_CLASS // envs_per_class
    envs = _test_envs(family, name, num_envs, split, horizon)
    recorder = EpisodeRecorder()
    recording = RecordingVectorEnv(envs, recorder)
    agent = MetaSGDAgent(model, num_envs, adaptation_episodes, seed, recorder, deterministic)
    agent.recorder.round = -1  # init() is called again by the protocol at the start of each round
    try:
        success, mean_return, per_class = metalearning_evaluation(
            agent, recording, num_evals=rounds, adaptation_steps=adaptation_steps,
            adaptation_episodes=adaptation_episodes, evaluation_episodes=evaluation_episodes)
        env_classes = _class_of_each_env(envs)
    finally:
        envs.close()
    per_goal = per_goal_success(recorder.episodes, env_classes, adaptation_episodes, evaluation_episodes)
    return {
        "protocol": "metaworld.evaluation.metalearning_evaluation",
        "benchmark": family.benchmark, "env_name": family.env_name, "benchmark_seed": family.benchmark_seed,
        "split": split, "classes": list(classes), "horizon": horizon,
        "envs_per_class": envs_per_class, "rounds": rounds, "adaptation_steps": adaptation_steps,
        "adaptation_episodes": adaptation_episodes, "evaluation_episodes": evaluation_episodes,
        "deterministic": bool(deterministic), "seed": int(seed),
        "success": float(success), "return": float(mean_return),
        "success_per_class": {str(k): float(v) for k, v in sorted(per_class.items())},
        "per_goal": per_goal,
    }


def _test_envs(family: MetaWorldFamily, name: str, num_envs: int, split: str,
               horizon: int) -> gym.vector.VectorEnv:
    """``metaworld.make_ml_envs(name, seed=family.benchmark_seed, ...)``, the protocol's vector env. Where
    ``metaworld`` has the builder ``make_ml_envs`` wraps, it is given the benchmark the family already built (the
    same tasks, built once per process), so that each evaluation does not build ML10's or ML45's tasks again
    (ML10 takes over 10 s)."""
    metaworld = import_metaworld()
    kwargs = dict(meta_batch_size=num_envs, seed=family.benchmark_seed, split=split, vector_strategy="sync",
                  terminate_on_success=True, task_select="pseudorandom", max_episode_steps=horizon)
    build = getattr(metaworld, "_make_ml_envs_inner", None)
    if build is None:
        return metaworld.make_ml_envs(name, **kwargs)
    return build(load_benchmark(family.benchmark, family.env_name, family.benchmark_seed), **kwargs)


def _class_of_each_env(envs: gym.vector.VectorEnv) -> list[str]:
    """The Meta-World class name (``"reach-v3"``) each sub-env of ``metaworld``'s vector env runs."""
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    by_class_name = {cls.__name__: name for name, cls in ALL_V3_ENVIRONMENTS.items()}
    return [by_class_name[task_name] for task_name in envs.get_attr("task_name")]


def per_goal_success(episodes: Sequence[Mapping[str, Any]], env_classes: Sequence[str], adaptation_episodes: int,
                     evaluation_episodes: int) -> dict[str, Any]:
    """Per class: the mean over its goals (one goal per sub-env and round) of the success of the goal's first
    ``evaluation_episodes`` evaluation episodes (``after``) and of its first ``adaptation_episodes`` adaptation
    episodes of the round's first inner step (``before``); ``goals`` counts them. ``mean``: over classes."""
    goals: dict[tuple[int, int], dict[str, list[bool]]] = {}
    for ep in episodes:
        goal = goals.setdefault((ep["round"], ep["env"]), {"adapt": [], "eval": []})
        goal[ep["phase"]].append(ep["success"])
    per_class: dict[str, dict[str, list[float]]] = {}
    for (_, env), phases in sorted(goals.items()):
        if len(phases["eval"]) < evaluation_episodes:
            continue  # a goal whose evaluation the helper cut short (several sub-envs per class)
        rates = per_class.setdefault(env_classes[env], {"before": [], "after": []})
        rates["before"].append(float(np.mean(phases["adapt"][:adaptation_episodes])))
        rates["after"].append(float(np.mean(phases["eval"][:evaluation_episodes])))
    classes = {name: {"before": float(np.mean(r["before"])), "after": float(np.mean(r["after"])),
                      "goals": len(r["after"])} for name, r in sorted(per_class.items())}
    return {"classes": classes,
            "mean": {"before": float(np.mean([c["before"] for c in classes.values()])),
                     "after": float(np.mean([c["after"] for c in classes.values()]))}}


def cached_protocol_result(path: Path, settings: Mapping[str, Any], cache: Path) -> dict[str, Any] | None:
    """The result :func:`evaluate_checkpoint` cached in ``cache`` for the checkpoint ``path`` (its sha256) and
    ``settings``; None when there is none or it was computed for other bytes or settings."""
    return _read_cache(cache, hashlib.sha256(path.read_bytes()).hexdigest(), settings)


def _read_cache(cache: Path, sha: str, settings: Mapping[str, Any]) -> dict[str, Any] | None:
    cached = cache / f"{sha[:16]}.json"
    if not cached.is_file():
        return None
    result = json.loads(cached.read_text())
    return result if result.get("checkpoint_sha256") == sha and result.get("settings") == dict(settings) else None


def evaluate_checkpoint(path: Path, settings: Mapping[str, Any], cache: Path) -> dict[str, Any]:
    """:func:`metaworld_protocol` of the checkpoint ``path`` with ``settings`` (its keyword arguments), cached in
    ``cache/<digest>.json``: a result is reused when the checkpoint's sha256 and the settings match, so adding a
    seed to a study re-evaluates only that run. The result also names the checkpoint, its digest, the settings,
    the method label (``"MAML (seed 0)"``), the iteration and the seconds the protocol took."""
    from metasgd_rl.io import atomic_write_text
    from metasgd_rl.report import load_checkpoint, method_label

    settings = dict(settings)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    cached = cache / f"{sha[:16]}.json"
    result = _read_cache(cache, sha, settings)
    if result is not None:
        print(f"{path}: cached ({cached})", flush=True)
        return result
    model = load_checkpoint(path)
    start = time.perf_counter()
    result = metaworld_protocol(model, **settings)
    result.update(checkpoint=str(path), checkpoint_sha256=sha, settings=settings, method=method_label(model),
                  iteration=model.iteration, seconds=round(time.perf_counter() - start, 1))
    model.family.close()
    cache.mkdir(parents=True, exist_ok=True)
    atomic_write_text(cached, json.dumps(result, indent=1) + "\n")
    print(f"{path}: {result['method']} at iteration {model.iteration}: success {result['success']:.3f} "
          f"({result['seconds']:.0f} s)", flush=True)
    return result


def summarise_protocol_runs(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per method (the result's label without its seed), over its runs (seeds): each run's numbers, and of
    Meta-World's ``success`` and the per-goal success before/after adaptation the mean ± 95 % t-interval and the
    interquartile mean (Meta-World+'s aggregate; the mean below four seeds); each class's success, mean over
    seeds."""
    from metasgd_rl.stats import interquartile_mean, mean_ci95

    methods: dict[str, list[Mapping[str, Any]]] = {}
    for result in results:
        methods.setdefault(re.sub(r" \(seed .*\)$", "", result["method"]), []).append(result)
    summary = {}
    for method, runs in methods.items():
        runs = sorted(runs, key=lambda r: r["method"])
        scores = {"success": [r["success"] for r in runs],
                  "per_goal_before": [r["per_goal"]["mean"]["before"] for r in runs],
                  "per_goal_after": [r["per_goal"]["mean"]["after"] for r in runs]}
        classes = sorted(runs[0]["success_per_class"])
        summary[method] = {
            "runs": [{"label": r["method"], "checkpoint": r["checkpoint"], "iteration": r["iteration"],
                      **{k: v[i] for k, v in scores.items()}} for i, r in enumerate(runs)],
            **{k: {"mean": mean_ci95(v)[0], "ci95": mean_ci95(v)[1], "iqm": interquartile_mean(v)}
               for k, v in scores.items()},
            "classes": {c: float(np.mean([r["success_per_class"][c] for r in runs])) for c in classes},
        }
    return summary
