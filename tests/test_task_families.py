"""Task-family API: registry, the family checker, the Navigation2D protocol and vectorisation."""

from __future__ import annotations

import functools
import math
import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.wrappers import TimeLimit
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import metasgd_rl as msr
from metasgd_rl import registry
from metasgd_rl.family import EpisodeVectorEnv, Task, TaskFamily, as_generator, check_split
from metasgd_rl_envs.navigation import Navigation2DEnv, Navigation2DFamily, Navigation2DRandomStartFamily

NAVIGATION_IDS = ("Navigation2D-v0", "Navigation2D-RandomStart-v0")
NAVIGATION_FAMILIES = (Navigation2DFamily, Navigation2DRandomStartFamily)


# ---------------------------------------------------------------------------------------------------------
# registry


@pytest.fixture
def new_id() -> Iterator[Callable[[], str]]:
    """Hands out unique family ids and removes whatever a test registered under them."""
    added: list[str] = []

    def make() -> str:
        family_id = f"Test{uuid.uuid4().hex[:10]}-v0"
        added.append(family_id)
        return family_id

    yield make
    for family_id in added:
        registry._REGISTRY.pop(family_id, None)


def test_builtin_families_come_from_entry_points_without_importing_their_package(tmp_path):
    assert set(NAVIGATION_IDS) <= set(msr.list_task_families())
    # a fresh interpreter outside the repository: ids are found through the installed entry points, and
    # neither importing the library nor listing the families imports the `metasgd_rl_envs` package
    code = (
        "import sys, metasgd_rl\n"
        "before = 'metasgd_rl_envs' in sys.modules or 'envs' in sys.modules\n"
        "ids = metasgd_rl.list_task_families()\n"
        "after = 'metasgd_rl_envs' in sys.modules or 'envs' in sys.modules\n"
        "print(before, after, 'Navigation2D-v0' in ids, 'Navigation2D-RandomStart-v0' in ids)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False", "True", "True"]


def test_unknown_family_leads_with_a_close_match_and_says_where_the_ids_are_listed():
    with pytest.raises(KeyError) as info:
        msr.make_task_family("Navigation2D-v1")
    message = str(info.value)
    assert message.startswith("task family 'Navigation2D-v1' is not registered; did you mean 'Navigation2D-v0'")
    assert message.endswith("(metasgd-rl families lists them)") and len(message) < 250
    assert "entry point" not in message and "your_package" not in message  # a typo is not a family to register


def test_duplicate_id_with_another_target_is_refused(new_id):
    family_id = new_id()
    msr.register_task_family(family_id, entry_point="metasgd_rl_envs.navigation:Navigation2DFamily")
    msr.register_task_family(family_id, entry_point="metasgd_rl_envs.navigation:Navigation2DFamily")  # same: allowed
    with pytest.raises(ValueError, match=re.escape(repr(family_id))):
        msr.register_task_family(family_id, entry_point="metasgd_rl_envs.navigation:Navigation2DRandomStartFamily")
    assert type(msr.make_task_family(family_id)) is Navigation2DFamily  # the first registration stands


def test_an_entry_point_naming_a_re_export_is_the_same_target_as_the_decorated_class(new_id):
    family_id = new_id()
    msr.register_task_family(family_id, entry_point="metasgd_rl_envs:Navigation2DFamily")  # a package re-export
    msr.register_task_family(family_id, entry_point="metasgd_rl_envs.navigation:Navigation2DFamily")  # no conflict
    with pytest.raises(ValueError, match="already registered"):
        msr.register_task_family(family_id, entry_point="metasgd_rl_envs.discrete:Navigation2DFamily2")


def test_decorator_registers_and_returns_the_class(new_id):
    family_id = new_id()

    class ShortNavigation(Navigation2DFamily):
        pass

    assert msr.register_task_family(family_id, max_episode_steps=7)(ShortNavigation) is ShortNavigation
    family = msr.make_task_family(family_id)
    assert type(family) is ShortNavigation
    assert family.id == family_id
    assert family.max_episode_steps == 7
    assert msr.make_task_family(family_id, max_episode_steps=3).max_episode_steps == 3  # kwargs override
    assert family_id in msr.list_task_families()


def test_decorator_refuses_a_class_that_is_not_a_task_family(new_id):
    family_id = new_id()
    with pytest.raises(TypeError, match="TaskFamily"):
        msr.register_task_family(family_id)(dict)
    assert family_id not in msr.list_task_families()


def test_entry_point_that_does_not_import_names_it_and_the_missing_module(new_id):
    family_id = new_id()
    msr.register_task_family(family_id, entry_point="no_such_module_for_metasgd_tests:Family")
    with pytest.raises(ImportError) as info:
        msr.make_task_family(family_id)
    message = str(info.value)
    assert message.startswith(f"task family {family_id!r} (declared by register_task_family): could not import "
                              "entry point 'no_such_module_for_metasgd_tests:Family'")
    assert message.endswith("install the package that provides the module 'no_such_module_for_metasgd_tests'")


# ---------------------------------------------------------------------------------------------------------
# check_task_family on good and broken families


class CounterEnv(gym.Env):
    """Pays ``reward`` every step and terminates after ``length`` steps; counts its resets and steps."""

    metadata = {"render_modes": []}
    observation_space = spaces.Box(-10.0, 10.0, shape=(2,), dtype=np.float32)
    action_space = spaces.Discrete(2)

    def __init__(self, length: int, reward: float):
        self.length, self.reward = int(length), float(reward)
        self.seeds: list[int | None] = []
        self.step_calls = 0
        self._t = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.seeds.append(seed)
        self._t = 0
        return self._obs(), {}

    def step(self, action):
        self.step_calls += 1
        self._t += 1
        return self._obs(), self.reward, self._t >= self.length, False, {}

    def _obs(self) -> np.ndarray:
        return np.array([self._t, self.reward], dtype=np.float32)


class CounterFamily(TaskFamily):
    """Implements only ``make_env``: its vector env is the generic :class:`EpisodeVectorEnv`.

    Episodes last 1 to 5 steps depending on the task; training rewards are positive, test rewards negative.
    """

    observation_space = CounterEnv.observation_space
    action_space = CounterEnv.action_space
    max_episode_steps = 5

    def sample_tasks(self, n: int, rng: np.random.Generator, split: str = "train") -> list[Task]:
        sign = 1.0 if check_split(split) == "train" else -1.0
        rng = as_generator(rng)
        return [{"length": int(rng.integers(1, 6)), "reward": sign * float(rng.uniform(1, 2))} for _ in range(n)]

    def make_env(self, task: Task) -> gym.Env:
        return CounterEnv(**task)


class NumpyTasks(Navigation2DFamily):
    def sample_tasks(self, n, rng, split="train"):
        return [{"goal": np.asarray(task["goal"])} for task in super().sample_tasks(n, rng, split)]


class IgnoresTask(Navigation2DFamily):
    def make_env(self, task):
        return TimeLimit(Navigation2DEnv(goal=(0.0, 0.0)), max_episode_steps=self.max_episode_steps)


class ReversedVectorTasks(Navigation2DFamily):
    def make_vector_env(self, tasks, episodes_per_task):
        return super().make_vector_env(list(tasks)[::-1], episodes_per_task)


class GlobalRNGTasks(Navigation2DFamily):
    def sample_tasks(self, n, rng, split="train"):
        check_split(split)
        return [{"goal": np.random.uniform(-0.5, 0.5, size=2).tolist()} for _ in range(n)]  # noqa: NPY002


class UnseededEnv(Navigation2DEnv):
    def reset(self, *, seed=None, options=None):  # forgets super().reset(seed=seed)
        return np.zeros(2, dtype=np.float32), {}


class UnseededEnvFamily(Navigation2DFamily):
    def make_env(self, task):
        return UnseededEnv(goal=task["goal"])


class AutoresetVector(Navigation2DFamily):
    """Uses gymnasium's SyncVectorEnv, which resets a finished sub-env on the next step."""

    def make_vector_env(self, tasks, episodes_per_task):
        fns = [functools.partial(self.make_env, task) for task in tasks for _ in range(episodes_per_task)]
        return gym.vector.SyncVectorEnv(fns)


@pytest.mark.parametrize("family_id", NAVIGATION_IDS)
def test_navigation_families_pass_the_check(family_id):
    msr.check_task_family(msr.make_task_family(family_id))


def test_generic_vectorised_family_passes_the_check():
    msr.check_task_family(CounterFamily(), steps=10)  # episodes of 1-5 steps: exercises frozen sub-envs


@pytest.mark.parametrize(
    ("family", "message"),
    [
        (NumpyTasks(), "(task 0: 'goal' is a numpy.ndarray: convert numpy arrays with .tolist())"),
        (IgnoresTask(), "give identical observations and rewards: the task parameters do not reach the environment"),
        (ReversedVectorTasks(), "sub-env 0 of make_vector_env(tasks, 2) must behave like make_env(tasks[0])"),
        (UnseededEnvFamily(), "gymnasium's env checker rejects make_env(task): AssertionError"),
        (AutoresetVector(max_episode_steps=5), "was stepped or reset after its episode ended"),
    ],
    ids=["numpy-task", "task-ignored", "vector-tasks-reversed", "env-checker", "vector-autoreset"],
)
def test_broken_families_fail_the_check_with_a_clear_message(family, message):
    with pytest.raises(msr.TaskFamilyCheckError) as info:
        msr.check_task_family(family, steps=10)
    assert str(info.value).startswith(f"{type(family).__name__}: ")
    assert message in str(info.value)


def test_family_sampling_from_the_global_rng_fails_the_check():
    state = np.random.get_state()  # noqa: NPY002  (GlobalRNGTasks draws from it: leave it as it was)
    try:
        family = GlobalRNGTasks()
        family.id = "GlobalRNG-v0"
        with pytest.raises(msr.TaskFamilyCheckError, match=r"^GlobalRNG-v0: .*different tasks for the same seed"):
            msr.check_task_family(family)
    finally:
        np.random.set_state(state)  # noqa: NPY002


class UnboundedCounterEnv(CounterEnv):
    observation_space = spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32)  # gymnasium's checker warns


class UnboundedCounterFamily(CounterFamily):
    observation_space = UnboundedCounterEnv.observation_space

    def make_env(self, task: Task) -> gym.Env:
        return UnboundedCounterEnv(**task)


def test_the_check_returns_a_report_with_the_checkers_warnings_as_plain_text():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing may leak out of the check
        report = msr.check_task_family(UnboundedCounterFamily(), steps=10)
    assert isinstance(report, msr.TaskFamilyReport) and report.family == "UnboundedCounterFamily"
    assert "gymnasium's env checker" in " ".join(report.passed) and "stable-baselines3's env checker" in report.passed
    assert report.skipped == []
    assert "A Box observation space minimum value is -infinity. This is probably too low." in report.warnings
    assert len(report.warnings) == len(set(report.warnings)) >= 2
    text = str(report)
    assert "\x1b" not in text and "WARN:" not in text
    assert text.splitlines()[0] == (f"task family UnboundedCounterFamily: {len(report.passed)} checks passed, "
                                    f"0 skipped, {len(report.warnings)} warnings")
    assert "  warning  A Box observation space maximum value is infinity. This is probably too high." in text

    single = NavigationFamilyWithOneTask()
    skipped = msr.check_task_family(single).skipped
    assert skipped == ["different tasks give different rollouts"], skipped


class NavigationFamilyWithOneTask(Navigation2DFamily):
    disjoint_splits = True

    def sample_tasks(self, n, rng, split="train"):
        check_split(split)
        return [{"goal": [0.25, 0.25] if split == "train" else [-0.25, -0.25]} for _ in range(n)]


def test_a_failed_check_keeps_the_report_so_far_on_the_error():
    with pytest.raises(msr.TaskFamilyCheckError) as info:
        msr.check_task_family(IgnoresTask(), steps=10)
    report = info.value.report
    assert "determinism for a fixed task, seed and actions" in report.passed
    assert "make_vector_env matches single envs" not in report.passed


def test_check_error_is_a_value_error():
    assert issubclass(msr.TaskFamilyCheckError, ValueError)


# ---------------------------------------------------------------------------------------------------------
# Navigation2D protocol


def _nav_env(goal: Sequence[float], random_start: bool = False) -> gym.Env:
    family = Navigation2DRandomStartFamily() if random_start else Navigation2DFamily()
    return family.make_env({"goal": list(goal)})


def test_actions_are_clipped_to_a_tenth_per_coordinate():
    env = _nav_env([0.5, 0.5])
    env.reset(seed=0)
    obs, *_ = env.step(np.array([1.0, -5.0]))
    np.testing.assert_array_equal(obs, np.float32([0.1, -0.1]))
    obs, *_ = env.step(np.array([0.03, 0.25]))
    np.testing.assert_allclose(obs, [0.13, 0.0], atol=1e-7)


def test_reward_is_minus_the_distance_to_the_goal_after_the_move():
    env = _nav_env([0.3, 0.4])
    env.reset(seed=0)
    _, reward, terminated, truncated, _ = env.step(np.array([0.05, 0.1]))
    assert reward == pytest.approx(-math.hypot(0.3 - 0.05, 0.4 - 0.1), abs=1e-6)
    assert (terminated, truncated) == (False, False)
    _, reward, *_ = env.step(np.array([1.0, 1.0]))  # clipped: moves to (0.15, 0.2)
    assert reward == pytest.approx(-math.hypot(0.3 - 0.15, 0.4 - 0.2), abs=1e-6)


def test_episode_terminates_when_both_coordinates_are_within_a_hundredth():
    env = _nav_env([0.05, -0.15])
    env.reset(seed=0)
    # x on the goal but y 0.05 away, then 0.015 away: not yet; then 0.005 away: done
    for action, done in (([0.05, -0.1], False), ([0.0, -0.035], False), ([0.0, -0.01], True)):
        _, reward, terminated, truncated, _ = env.step(np.array(action))
        assert (terminated, truncated) == (done, False)
    assert reward == pytest.approx(-0.005, abs=1e-6)


def test_episode_is_truncated_after_100_steps():
    family = Navigation2DFamily()
    assert family.max_episode_steps == 100
    env = family.make_env({"goal": [0.5, 0.5]})
    env.reset(seed=0)
    flags = [env.step(np.zeros(2, dtype=np.float32))[2:4] for _ in range(100)]
    assert flags[:99] == [(False, False)] * 99
    assert flags[99] == (False, True)


def test_fixed_start_is_the_origin():
    env = _nav_env([0.2, 0.2])
    for seed in range(5):
        np.testing.assert_array_equal(env.reset(seed=seed)[0], np.zeros(2, dtype=np.float32))


def test_random_start_is_uniform_in_the_square_and_seeded():
    env = _nav_env([0.2, 0.2], random_start=True)
    starts = np.stack([env.reset(seed=seed)[0] for seed in range(200)])
    assert np.all((starts >= -0.5) & (starts <= 0.5))
    assert len(np.unique(starts, axis=0)) == 200  # a different start for every seed
    assert starts.min() < -0.45 and starts.max() > 0.45  # spread over the square, not around the origin
    np.testing.assert_array_equal(env.reset(seed=3)[0], starts[3])  # same seed, same start


@pytest.mark.parametrize("split", ["train", "test"])
def test_goals_are_uniform_in_the_square_and_reproducible(split):
    family = Navigation2DFamily()
    tasks = family.sample_tasks(2000, np.random.default_rng(1), split=split)
    goals = np.array([task["goal"] for task in tasks])
    assert goals.shape == (2000, 2)
    assert np.all((goals >= -0.5) & (goals <= 0.5))
    assert goals.min() < -0.49 and goals.max() > 0.49
    np.testing.assert_allclose(goals.mean(axis=0), 0.0, atol=0.03)
    assert family.sample_tasks(2000, np.random.default_rng(1), split=split) == tasks


def test_test_goals_differ_from_training_goals_drawn_with_the_same_seed():
    family = Navigation2DFamily()
    train = family.sample_tasks(20, np.random.default_rng(0), split="train")
    test = family.sample_tasks(20, np.random.default_rng(0), split="test")
    assert not {tuple(t["goal"]) for t in train} & {tuple(t["goal"]) for t in test}
    with pytest.raises(ValueError, match="split"):
        family.sample_tasks(2, np.random.default_rng(0), split="valid")


# ---------------------------------------------------------------------------------------------------------
# single env == vector env


def _step_side_by_side(venv, envs, obs, goals, rng, drive, horizon) -> tuple[np.ndarray, np.ndarray]:
    """Step the vector env and its single twins with the same actions until every episode ended.

    Sub-envs listed in ``drive`` head straight for their goal until their episode ends; the others, and
    finished ones (which must not move), act at random in [-0.3, 0.3] (mostly clipped). Returns the step
    at which each episode ended and the final termination flags.
    """
    n = len(envs)
    ended = np.zeros(n, dtype=int)
    for t in range(1, horizon + 1):
        actions = rng.uniform(-0.3, 0.3, size=(n, 2)).astype(np.float32)
        steer = [i for i in drive if not ended[i]]
        actions[steer] = goals[steer] - obs[steer]
        previous = obs
        obs, rewards, terminated, truncated, _ = venv.step(actions)
        for i, env in enumerate(envs):
            if ended[i]:  # frozen: no reward, flags stay, position stays
                assert rewards[i] == 0.0 and (terminated[i] or truncated[i])
                np.testing.assert_array_equal(obs[i], previous[i])
                continue
            single_obs, reward, term, trunc, _ = env.step(actions[i])
            np.testing.assert_array_equal(obs[i], single_obs)
            assert rewards[i] == reward
            assert (terminated[i], truncated[i]) == (term, trunc)
            if term or trunc:
                ended[i] = t
    assert ended.all()
    return ended, terminated


@pytest.mark.parametrize("family_cls", NAVIGATION_FAMILIES)
@pytest.mark.parametrize("drive", [[], [0, 5, 11]], ids=["random", "some-reach-goal"])
def test_single_env_matches_vector_env(family_cls, drive):
    family, episodes, seed = family_cls(), 4, 123
    tasks = family.sample_tasks(3, np.random.default_rng(seed))
    venv = family.make_vector_env(tasks, episodes)
    assert venv.num_envs == 12
    envs = [family.make_env(tasks[i // episodes]) for i in range(12)]
    goals = np.array([tasks[i // episodes]["goal"] for i in range(12)], dtype=np.float32)
    rng = np.random.default_rng(seed)
    for round_seed in (seed, None):  # a seeded reset, then one that continues the sub-envs' generators
        obs, _ = venv.reset(seed=round_seed)
        single = [env.reset(seed=None if round_seed is None else round_seed + i)[0] for i, env in enumerate(envs)]
        np.testing.assert_array_equal(obs, np.stack(single))
        ended, terminated = _step_side_by_side(venv, envs, obs, goals, rng, drive, family.max_episode_steps)
        assert (ended == 100).any()  # some ran to the time limit
        assert np.all(ended[drive] <= 12) and terminated[drive].all()  # those driven to the goal stop early


# ---------------------------------------------------------------------------------------------------------
# generic vectorisation (TaskFamily.make_vector_env -> EpisodeVectorEnv)

COUNTER_TASKS = [{"length": 2, "reward": 1.0}, {"length": 5, "reward": 10.0}, {"length": 3, "reward": 100.0}]


def _run_counter_episode(venv: EpisodeVectorEnv, steps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = [venv.step(np.zeros(venv.num_envs, dtype=np.int64)) for _ in range(steps)]
    rewards, terminated, truncated = (np.stack([row[k] for row in rows]) for k in (1, 2, 3))
    return rewards, terminated, truncated


def test_generic_vector_env_runs_one_episode_of_task_i_over_e_per_sub_env():
    episodes = 2
    venv = CounterFamily().make_vector_env(COUNTER_TASKS, episodes)
    assert isinstance(venv, EpisodeVectorEnv) and venv.num_envs == 6
    lengths = np.array([COUNTER_TASKS[i // episodes]["length"] for i in range(6)])
    task_rewards = np.array([COUNTER_TASKS[i // episodes]["reward"] for i in range(6)])
    steps = np.arange(1, 8)[:, None]  # more steps than the longest episode

    for round_number in (1, 2):  # the second reset starts a new episode everywhere
        obs, _ = venv.reset(seed=7)
        np.testing.assert_array_equal(obs, np.stack([np.zeros(6), task_rewards], axis=1))
        rewards, terminated, truncated = _run_counter_episode(venv, 7)
        np.testing.assert_array_equal(rewards, np.where(steps <= lengths, task_rewards, 0.0))
        np.testing.assert_array_equal(terminated, steps >= lengths)  # sticky once done
        assert not truncated.any()
        assert [env.step_calls for env in venv.envs] == list(round_number * lengths)  # no steps after done
        assert [env.seeds[-1] for env in venv.envs] == [7 + i for i in range(6)]
    final_obs = venv.step(np.zeros(6, dtype=np.int64))[0]
    np.testing.assert_array_equal(final_obs, np.stack([lengths, task_rewards], axis=1))  # frozen at the end


def test_generic_vector_env_checks_episodes_per_task():
    with pytest.raises(ValueError, match="episodes_per_task"):
        CounterFamily().make_vector_env(COUNTER_TASKS, 0)


class DictActionEnv(gym.Env):
    """Pays the first coordinate of its action's "move" entry: shows which action a sub-env received."""

    observation_space = spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
    action_space = spaces.Dict({"flag": spaces.Discrete(2), "move": spaces.Box(-1.0, 1.0, (2,), np.float32)})

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(1, dtype=np.float32), {}

    def step(self, action):
        return np.zeros(1, dtype=np.float32), float(action["move"][0]), False, False, {}


def test_generic_vector_env_splits_composite_actions_per_sub_env():
    venv = EpisodeVectorEnv([DictActionEnv] * 3)
    venv.reset(seed=0)
    venv.action_space.seed(0)
    actions = venv.action_space.sample()
    rewards = venv.step(actions)[1]
    np.testing.assert_allclose(rewards, actions["move"][:, 0])


# ---------------------------------------------------------------------------------------------------------
# gymnasium and SB3


def test_gymnasium_make_builds_a_navigation_env():
    env = gym.make("metasgd_rl_envs:metasgd_rl/Navigation2D-v0", goal=[0.2, 0.1])
    assert env.spec.max_episode_steps == 100
    np.testing.assert_array_equal(env.unwrapped.goal, np.float32([0.2, 0.1]))
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(obs, np.zeros(2, dtype=np.float32))
    _, reward, *_ = env.step(np.float32([0.1, 0.1]))
    assert reward == pytest.approx(-0.1, abs=1e-6)
    random_start = gym.make("metasgd_rl_envs:metasgd_rl/Navigation2D-RandomStart-v0", goal=[0.2, 0.1])
    assert np.any(random_start.reset(seed=0)[0] != 0.0)


@pytest.mark.parametrize("family_cls", NAVIGATION_FAMILIES)
def test_sb3_check_env_accepts_family_envs(family_cls):
    family = family_cls()
    task = family.sample_tasks(1, np.random.default_rng(0))[0]
    sb3_check_env(family.make_env(task), warn=False)


def test_asynchronous_generic_vector_env_also_runs_exactly_one_episode():
    family = CounterFamily()
    family.asynchronous = True
    venv = family.make_vector_env(COUNTER_TASKS, 2)
    try:
        assert not isinstance(venv, EpisodeVectorEnv) and venv.num_envs == 6
        lengths = np.array([COUNTER_TASKS[i // 2]["length"] for i in range(6)])
        task_rewards = np.array([COUNTER_TASKS[i // 2]["reward"] for i in range(6)])
        steps = np.arange(1, 8)[:, None]
        for _ in range(2):
            venv.reset(seed=7)
            rewards, terminated, truncated = _run_counter_episode(venv, 7)
            np.testing.assert_array_equal(rewards, np.where(steps <= lengths, task_rewards, 0.0))
            np.testing.assert_array_equal(terminated, steps >= lengths)
            assert not truncated.any()
    finally:
        venv.close()
    msr.check_task_family(family)
