"""Meta-World's own evaluation protocol (envs/metaworld_protocol.py): the agent adapts as the library does, the
episodes it is given become the right batch, and the per-goal count covers every test goal once."""

from __future__ import annotations

import hashlib
from types import SimpleNamespace

import numpy as np
import pytest
import torch

pytest.importorskip("metaworld", reason="the metaworld extra is not installed")

import metasgd_rl as msr  # noqa: E402
import metasgd_rl_envs.metaworld_protocol as protocol_module  # noqa: E402
from metasgd_rl.adaptation import inner_gradients  # noqa: E402
from metasgd_rl.estimators import INNER_FORM  # noqa: E402
from metasgd_rl_envs.metaworld_protocol import (  # noqa: E402
    EpisodeRecorder,
    MetaSGDAgent,
    metaworld_protocol,
    per_goal_success,
)


@pytest.fixture(scope="module")
def model():
    return msr.MetaSGD("MetaWorld-ML1-v0", family_kwargs=dict(env_name="reach-v3", max_episode_steps=8),
                       policy_kwargs=dict(hidden_sizes=(16,)), episodes_per_task=2, meta_batch_size=2, seed=1,
                       estimator="lvc", alpha_init=0.5)


def timestep(obs, action, reward, done):
    done = np.asarray(done, dtype=bool)
    return SimpleNamespace(observation=obs, action=action, reward=np.asarray(reward, dtype=np.float64),
                           terminated=np.zeros_like(done), truncated=done)


def test_the_agents_batch_holds_each_sub_envs_first_episodes_and_its_step_is_the_librarys(model):
    agent = MetaSGDAgent(model, num_envs=2, adaptation_episodes=2, seed=0, recorder=EpisodeRecorder())
    rng = np.random.default_rng(0)
    # sub-env 0: episodes of 3, 2 and (cut off) 1 steps; sub-env 1: 2, 3 steps and a third it does not need
    done0 = [0, 0, 1, 0, 1, 0]
    done1 = [0, 1, 0, 0, 1, 0]
    observations = rng.normal(size=(6, 2, 39))
    actions = rng.normal(size=(6, 2, 4))
    rewards = rng.normal(size=(6, 2))
    for t in range(6):
        agent.step(timestep(observations[t], actions[t], rewards[t], [done0[t], done1[t]]))
    batch = agent._batch()
    assert batch.observations.shape == (3, 2, 2, 39)
    assert batch.mask[:, 0].T.tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch.mask[:, 1].T.tolist() == [[1, 1, 0], [1, 1, 1]]
    np.testing.assert_allclose(batch.observations[:, 0, 1][:2].numpy(), observations[3:5, 0], rtol=1e-6)
    np.testing.assert_allclose(batch.actions[:, 1, 1].numpy(), actions[2:5, 1], rtol=1e-6)
    np.testing.assert_allclose(batch.rewards[:, 1, 0][:2].numpy(), rewards[0:2, 1], rtol=1e-6)
    assert float(batch.rewards[2, 0, 1]) == 0.0  # after the episode ended

    agent.adapt()
    theta = {n: p.detach().requires_grad_() for n, p in model.policy.task_parameters(2).items()}
    grads = inner_gradients(model.policy, theta, batch, model.advantages(batch), form=INNER_FORM[model.estimator],
                            create_graph=False)
    alphas = model.step_sizes.for_step(0)
    for name, p in agent.params.items():
        expected = theta[name].detach() - alphas[name].detach() * grads[name]
        assert torch.allclose(p, expected, atol=1e-6), name
        assert not torch.equal(p, theta[name].detach()), name  # the step moved every tensor


def test_too_few_episodes_for_an_inner_step_is_an_error(model):
    agent = MetaSGDAgent(model, num_envs=1, adaptation_episodes=2, seed=0, recorder=EpisodeRecorder())
    agent.step(timestep(np.zeros((1, 39)), np.zeros((1, 4)), [0.0], [1]))
    with pytest.raises(RuntimeError, match="fewer than 2 episodes"):
        agent.adapt()


def test_per_goal_success_counts_each_goals_own_first_episodes():
    episodes = []
    for env, successes in ((0, [True, False, True, True]), (1, [False, False, False, True])):
        for phase, flags in (("adapt", successes[:2]), ("eval", successes[2:])):
            episodes += [{"round": 0, "phase": phase, "env": env, "return": 0.0, "success": s} for s in flags]
    # a goal the helper cut short (no evaluation episode: another sub-env of its class ended first) is left out
    episodes.append({"round": 1, "phase": "adapt", "env": 0, "return": 0.0, "success": True})
    result = per_goal_success(episodes, ["push-v3", "reach-v3"], adaptation_episodes=2, evaluation_episodes=1)
    assert result["classes"]["push-v3"] == {"before": 0.5, "after": 1.0, "goals": 1}
    assert result["classes"]["reach-v3"] == {"before": 0.0, "after": 0.0, "goals": 1}
    assert result["mean"] == {"before": 0.25, "after": 0.5}


def test_the_protocol_runs_metaworlds_helper_over_every_test_goal_once(model, monkeypatch):
    import metaworld

    def rebuilt(*args, **kwargs):
        raise AssertionError("the protocol built the benchmark again instead of using the family's")

    with monkeypatch.context() as patch:
        patch.setattr(metaworld, "ML1", rebuilt)
        result = metaworld_protocol(model, adaptation_episodes=2, evaluation_episodes=2, seed=3)
    assert result["protocol"] == "metaworld.evaluation.metalearning_evaluation"
    assert result["rounds"] == 50 and result["envs_per_class"] == 1 and result["classes"] == ["reach-v3"]
    per_goal = result["per_goal"]
    assert per_goal["classes"]["reach-v3"]["goals"] == 50  # one sub-env, 50 rounds: every test goal once
    # with one sub-env per class the helper's count is the per-goal count
    assert result["success_per_class"]["reach-v3"] == pytest.approx(per_goal["classes"]["reach-v3"]["after"])
    assert result["success"] == pytest.approx(per_goal["mean"]["after"])
    # on Meta-World's own test env, as its documentation builds it (the benchmark built anew), the run is the
    # same: the goals are the benchmark's, the noise comes from the seed
    def public(family, name, num_envs, split, horizon):
        return metaworld.make_ml_envs_test(name, seed=family.benchmark_seed, meta_batch_size=num_envs,
                                           max_episode_steps=horizon)

    monkeypatch.setattr(protocol_module, "_test_envs", public)
    again = metaworld_protocol(model, adaptation_episodes=2, evaluation_episodes=2, seed=3)
    assert again == result


def test_bad_protocol_settings_are_refused(model):
    with pytest.raises(ValueError, match="envs_per_class=3 is not allowed; use a divisor of 50"):
        metaworld_protocol(model, envs_per_class=3)
    with pytest.raises(ValueError, match="adaptation_episodes=0 is not allowed"):
        metaworld_protocol(model, adaptation_episodes=0)
    with pytest.raises(ValueError, match="needs a Meta-World task family"):
        metaworld_protocol(msr.MetaSGD("Navigation2D-v0"))


def test_a_checkpoints_protocol_result_is_cached_per_bytes_and_settings(model, tmp_path, monkeypatch):
    calls = []

    def counted(loaded, **settings):
        calls.append(settings)
        return {"success": 0.5 + len(calls)}

    monkeypatch.setattr(protocol_module, "metaworld_protocol", counted)
    checkpoint, cache = model.save(tmp_path / "final.pt"), tmp_path / "cache"
    settings = {"adaptation_episodes": 2, "evaluation_episodes": 1, "seed": 0}
    assert protocol_module.cached_protocol_result(checkpoint, settings, cache) is None
    first = protocol_module.evaluate_checkpoint(checkpoint, settings, cache)
    assert calls == [settings] and first["success"] == 1.5
    assert first["checkpoint_sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert protocol_module.evaluate_checkpoint(checkpoint, settings, cache) == first and len(calls) == 1
    assert protocol_module.cached_protocol_result(checkpoint, settings, cache) == first
    other = settings | {"seed": 1}  # other settings: computed again, and the first result is no longer served
    assert protocol_module.cached_protocol_result(checkpoint, other, cache) is None
    assert protocol_module.evaluate_checkpoint(checkpoint, other, cache)["success"] == 2.5
    model.iteration += 1  # other bytes under the same name: computed again
    try:
        model.save(checkpoint)
    finally:
        model.iteration -= 1
    assert protocol_module.cached_protocol_result(checkpoint, other, cache) is None
    assert protocol_module.evaluate_checkpoint(checkpoint, other, cache)["success"] == 3.5 and len(calls) == 3


def test_the_protocol_runs_at_the_horizon_asked_for_and_refuses_a_bad_one(model, monkeypatch):
    built = []
    original = protocol_module._test_envs

    def recorded(family, name, num_envs, split, horizon):
        envs = original(family, name, num_envs, split, horizon)
        built.append((horizon, envs.get_attr("_max_episode_steps")))
        return envs

    monkeypatch.setattr(protocol_module, "_test_envs", recorded)
    assert metaworld_protocol(model, adaptation_episodes=2, evaluation_episodes=1)["horizon"] == 8  # the run's own
    result = metaworld_protocol(model, adaptation_episodes=2, evaluation_episodes=1, horizon=5)
    assert result["horizon"] == 5 and built == [(8, (8,)), (5, (5,))]  # each episode cut at the horizon
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match=f"horizon={bad!r} is not allowed"):
            metaworld_protocol(model, horizon=bad)
