"""The numpy families equal Gymnasium's environments at default parameters."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from skillbank.tasks import TaskSpec, make_vec_env

CASES = [
    ("cartpole", "CartPole-v1", 400),
    ("pendulum", "Pendulum-v1", 450),
    ("mountaincar-continuous", "MountainCarContinuous-v0", 1100),
    ("acrobot", "Acrobot-v1", 600),
]


@pytest.mark.parametrize(("family", "gym_id", "steps"), CASES)
def test_reset_matches_gymnasium_seeding(family: str, gym_id: str, steps: int) -> None:
    env = make_vec_env([TaskSpec(family)], 2, seed=7)
    ref, _ = gym.make(gym_id).reset(seed=7)
    np.testing.assert_array_equal(env.reset()[0], ref)


@pytest.mark.parametrize(("family", "gym_id", "steps"), CASES)
def test_steps_match_gymnasium(family: str, gym_id: str, steps: int) -> None:
    n = 3
    env = make_vec_env([TaskSpec(family)], n, seed=1)
    env.reset()
    backend = env.groups[0][1]  # numpy backend: backend.state is the [n, state_dim] array
    refs = [gym.make(gym_id) for _ in range(n)]
    for i, ref in enumerate(refs):
        ref.reset(seed=i)
        ref.action_space.seed(100 + i)
        ref.unwrapped.state = backend.state[i].copy()
    assert env.max_episode_steps == refs[0].spec.max_episode_steps
    episodes = 0
    for _ in range(steps):
        actions = [ref.action_space.sample() for ref in refs]
        if family == "mountaincar-continuous":  # also exercise clipping of out-of-range actions
            actions = [a * np.float32(1.5) for a in actions]
        obs, reward, terminated, truncated, info = env.step(np.array(actions))
        for i, ref in enumerate(refs):
            r_obs, r_rew, r_term, r_trunc, _ = ref.step(actions[i])
            np.testing.assert_allclose(info["final_obs"][i], r_obs, atol=1e-5, rtol=0)
            assert reward[i] == pytest.approx(r_rew, abs=1e-5)
            assert (terminated[i], truncated[i]) == (r_term, r_trunc)
            if info["done"][i]:
                episodes += 1
                ref.reset()
                ref.unwrapped.state = backend.state[i].copy()
    assert episodes >= 3  # episode ends (and the copies after reset) were exercised
