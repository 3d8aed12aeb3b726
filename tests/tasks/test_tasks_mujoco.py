"""MuJoCo families (skipped when mujoco is not installed)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from skillbank.tasks import TaskSpec, make_vec_env, parse_task


def test_missing_mujoco_gives_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mujoco", None)  # makes `import mujoco` fail
    with pytest.raises(ImportError, match=r'pip install "skillbank\[mujoco\]"'):
        make_vec_env([TaskSpec("hopper")], 1, seed=0)


def test_physics_scales_change_the_model() -> None:
    pytest.importorskip("mujoco")
    spec = TaskSpec("halfcheetah", {"gravity_scale": 0.5, "mass_scale": 2.0, "friction_scale": 0.3})
    env = make_vec_env([TaskSpec("halfcheetah"), spec], 1, seed=0)
    default, scaled = env.groups[0][1].envs
    np.testing.assert_allclose(default.model.opt.gravity, [0.0, 0.0, -9.81])
    np.testing.assert_allclose(scaled.model.opt.gravity, [0.0, 0.0, -4.905])
    np.testing.assert_allclose(scaled.model.body_mass, 2.0 * default.model.body_mass)
    np.testing.assert_allclose(scaled.model.geom_friction, 0.3 * default.model.geom_friction)
    assert env.obs_dim == 17 and env.action_space.shape == (6,) and env.max_episode_steps == 1000
    obs = env.reset()
    env.step(np.zeros((2, 6)))
    obs, *_ = env.step(np.zeros((2, 6)))
    assert obs.dtype == np.float32 and not np.allclose(obs[0], obs[1])
    env.close()


def test_halfcheetah_vel_reward() -> None:
    pytest.importorskip("mujoco")
    plain = make_vec_env([TaskSpec("halfcheetah")], 1, seed=4)
    vel = make_vec_env([parse_task("halfcheetah-vel/target-2")], 1, seed=4)
    np.testing.assert_array_equal(plain.reset(), vel.reset())
    actions = np.random.default_rng(0).uniform(-1, 1, size=(5, 1, 6))
    for a in actions:
        obs_p, r_plain, *_ = plain.step(a)
        obs_v, r_vel, *_ = vel.step(a)
        np.testing.assert_array_equal(obs_p, obs_v)
        ctrl = 0.1 * np.sum(a**2)
        x_velocity = r_plain[0] + ctrl  # HalfCheetah-v5: reward = x_velocity - ctrl_cost
        assert r_vel[0] == pytest.approx(-abs(x_velocity - 2.0) - ctrl, abs=1e-9)


def test_hopper_and_walker_terminate_and_reset() -> None:
    pytest.importorskip("mujoco")
    env = make_vec_env([TaskSpec("hopper", {"gravity_scale": 1.5})], 2, seed=0)
    assert env.obs_dim == 11 and env.action_space.shape == (3,)
    env.reset()
    rng = np.random.default_rng(0)
    ended = False
    for _ in range(200):
        _, _, terminated, _, info = env.step(rng.uniform(-1, 1, size=(2, 3)))
        ended |= bool(terminated.any())
        assert np.all(info["episode_length"][info["done"]] > 0)
    assert ended
    walker = make_vec_env([TaskSpec("walker2d")], 1, seed=0)
    assert walker.reset().shape == (1, 17)
