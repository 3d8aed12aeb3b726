"""VecTaskEnv: per-env physics, autoreset, episode statistics, errors."""

from __future__ import annotations

import numpy as np
import pytest

from skillbank.tasks import NonFiniteError, TaskSpec, get_suite, make_vec_env, parse_task

# A hand-made linear controller that balances default cartpole for 500 steps.
BALANCE = np.array([0.1, 0.5, 3.0, 1.0])


def test_layout_and_metadata() -> None:
    env = make_vec_env(get_suite("cartpole-physics"), 4, seed=0)
    assert env.num_envs == 28
    np.testing.assert_array_equal(env.task_ids, np.arange(28) // 4)
    assert env.obs_dim == 4 and env.action_space.n == 2
    assert env.max_episode_steps == 500 and env.max_return == 500.0
    obs = env.reset()
    assert obs.shape == (28, 4) and obs.dtype == np.float32
    assert np.all(np.abs(obs) <= 0.05)
    pend = make_vec_env([parse_task("pendulum:max_torque=3"), TaskSpec("pendulum")], 1, 0)
    assert pend.action_space.shape == (1,) and pend.action_space.high[0] == 3.0
    assert pend.max_episode_steps == 200 and pend.max_return is None


def test_each_env_follows_its_spec() -> None:
    specs = [
        TaskSpec("cartpole"),
        parse_task("cartpole/long-pole"),
        parse_task("cartpole/weak-force"),
    ]
    env = make_vec_env(specs, 2, seed=0)
    env.reset()
    backend = env.groups[0][1]
    start = np.array([0.01, -0.02, 0.03, 0.01])
    backend.state[:] = start
    singles = []
    for spec in specs:
        single = make_vec_env([spec], 1, seed=0)
        single.reset()
        single.groups[0][1].state[:] = start
        singles.append(single)
    actions = np.random.default_rng(0).integers(0, 2, size=8)
    for a in actions:
        _, _, _, _, info = env.step(np.full(6, a))
        alone = [s.step(np.array([a]))[4]["final_obs"][0] for s in singles]
        for i in range(6):
            np.testing.assert_array_equal(info["final_obs"][i], alone[i // 2])
    final = info["final_obs"]
    assert not np.allclose(final[0], final[2]) and not np.allclose(final[0], final[4])
    assert not np.allclose(final[2], final[4])


def test_cartpole_autoreset_and_episode_stats() -> None:
    env = make_vec_env([TaskSpec("cartpole")], 16, seed=3)
    obs = env.reset()
    rng = np.random.default_rng(0)
    lengths = np.zeros(16, dtype=int)
    finished = 0
    for _ in range(200):
        obs, reward, terminated, truncated, info = env.step(rng.integers(0, 2, size=16))
        lengths += 1
        assert np.all(reward == 1.0)
        done = info["done"]
        np.testing.assert_array_equal(done, terminated | truncated)
        np.testing.assert_array_equal(obs[~done], info["final_obs"][~done])
        for i in np.flatnonzero(done):
            x, _, theta, _ = info["final_obs"][i]
            assert abs(x) > 2.4 or abs(theta) > 12 * 2 * np.pi / 360
            assert np.all(np.abs(obs[i]) <= 0.05)  # already the next episode's first obs
            assert info["episode_length"][i] == lengths[i]
            assert info["episode_return"][i] == lengths[i]  # +1 per step
            lengths[i] = 0
            finished += 1
        assert np.all(info["episode_return"][~done] == 0)
    assert finished > 50


def test_cartpole_truncates_at_500() -> None:
    env = make_vec_env([TaskSpec("cartpole")], 4, seed=0)
    obs = env.reset()
    for t in range(1, 501):
        obs, _, terminated, truncated, info = env.step((obs @ BALANCE > 0).astype(np.int64))
        assert truncated.any() == (t == 500)
    assert truncated.all() and not terminated.any()
    np.testing.assert_array_equal(info["episode_return"], 500.0)
    np.testing.assert_array_equal(info["episode_length"], 500)
    assert np.all(np.abs(obs) <= 0.05) and np.abs(info["final_obs"]).max() > 0.05


def test_pendulum_truncation_keeps_final_obs() -> None:
    env = make_vec_env(get_suite("pendulum-physics"), 2, seed=0)
    env.reset()
    rewards = np.zeros(env.num_envs)
    for t in range(1, 201):
        obs, reward, terminated, truncated, info = env.step(np.full((env.num_envs, 1), 0.5))
        rewards += reward
        assert not terminated.any() and truncated.all() == (t == 200)
    np.testing.assert_allclose(info["episode_return"], rewards)
    assert np.all(np.abs(obs[:, 2]) <= 1.0)  # fresh states: |thdot| <= 1
    assert not np.allclose(obs, info["final_obs"])
    # different physics: the heavy / long / gravity variants end in different states
    assert len({tuple(np.round(f, 4)) for f in info["final_obs"][::2]}) == 5


def test_seeding_is_reproducible() -> None:
    a = make_vec_env([TaskSpec("acrobot")], 3, seed=5)
    b = make_vec_env([TaskSpec("acrobot")], 3, seed=5)
    first = a.reset()
    np.testing.assert_array_equal(first, b.reset())
    second = a.reset()  # no seed: continues the stream, deterministically
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(second, b.reset())
    np.testing.assert_array_equal(a.reset(seed=5), first)
    np.testing.assert_array_equal(
        a.reset(seed=9), make_vec_env([TaskSpec("acrobot")], 3, 9).reset()
    )


def test_action_and_usage_errors() -> None:
    env = make_vec_env([TaskSpec("cartpole")], 2, seed=0)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(2, dtype=int))
    env.reset()
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(3, dtype=int))
    with pytest.raises(ValueError, match="outside Discrete"):
        env.step(np.array([0, 2]))
    with pytest.raises(ValueError, match="observation size"):
        make_vec_env([TaskSpec("cartpole"), TaskSpec("acrobot")], 1, seed=0)
    with pytest.raises(ValueError, match="envs_per_task"):
        make_vec_env([TaskSpec("cartpole")], 0, seed=0)


def test_non_finite_observation_names_task_and_step() -> None:
    spec = parse_task("cartpole:force_mag=1e300")
    env = make_vec_env([TaskSpec("cartpole"), spec], 2, seed=0)
    env.reset()
    with pytest.raises(NonFiniteError, match=r"'cartpole:force_mag=1e\+300'.*step 1") as err:
        env.step(np.ones(4, dtype=int))
    assert err.value.task_name == spec.name and err.value.step == 1 and err.value.env_index == 2
    assert isinstance(err.value, FloatingPointError)


def test_non_finite_reward_names_task_and_step(monkeypatch: pytest.MonkeyPatch) -> None:
    env = make_vec_env(get_suite("pendulum-physics"), 1, seed=0)
    env.reset()
    backend = env.groups[0][1]
    real = backend.transition

    def broken(actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        state, reward, terminated = real(actions)
        if env._steps == 2:  # the third call to step()
            reward[3] = np.nan
        return state, reward, terminated

    monkeypatch.setattr(backend, "transition", broken)
    env.step(np.zeros((5, 1)))
    env.step(np.zeros((5, 1)))
    with pytest.raises(NonFiniteError, match=r"reward from task 'pendulum/low-gravity'.*step 3"):
        env.step(np.zeros((5, 1)))
