"""Meta-World tasks and suites (v3 names). Env tests skip when the metaworld extra is absent."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from skillbank.algos.normalize import ObsNorm
from skillbank.tasks import GymTaskError, get_suite, make_vec_env, parse_task
from skillbank.tasks.metaworld_tasks import CW10, MT10
from skillbank.training.rollout import evaluate


def _has_metaworld() -> bool:
    try:
        import metaworld  # noqa: F401
    except ImportError:
        return False
    return True


needs_metaworld = pytest.mark.skipif(
    not _has_metaworld(), reason='metaworld not installed (pip install "skillbank[metaworld]")'
)


def test_suites_are_plain_data_in_v3_names() -> None:
    mt10 = get_suite("mt10")
    assert [s.kwargs["env_name"] for s in mt10] == MT10 and len(get_suite("mt50")) == 50
    assert all(s.name.startswith("metaworld/") and s.name.endswith("-v3") for s in mt10)
    cw10, cw20 = get_suite("cw10"), get_suite("cw20")
    assert [s.kwargs["env_name"] for s in cw10][:3] == [
        "hammer-v3",
        "push-wall-v3",
        "faucet-close-v3",
    ]
    assert cw20 == cw10 + cw10 and [s.kwargs["env_name"] for s in cw10] == CW10
    onehot = get_suite("mt10-onehot")
    assert [(s.task_index, s.num_tasks) for s in onehot] == [(i, 10) for i in range(10)]
    assert len({s.name for s in onehot}) == 10 and onehot[3].name == "metaworld/door-open-v3#3/10"
    spec = parse_task("metaworld:push-v3")
    assert spec == mt10[1] == parse_task("metaworld/push-v3")
    assert spec.info.max_episode_steps == 500 and spec.kwargs["terminate_on_success"] is False
    assert parse_task("metaworld:push-v3?seed=3").kwargs["seed"] == 3
    with pytest.raises(GymTaskError, match=r"unknown Meta-World v3 task 'push-v2'"):
        parse_task("metaworld:push-v2")


@needs_metaworld
def test_metaworld_env_steps_reports_success_and_conditions() -> None:
    specs = get_suite("mt10-onehot")[:2]
    env = make_vec_env(specs, 1, seed=0)
    obs = env.reset()
    assert env.obs_dim == 39 + 10 and env.action_space.shape == (4,)
    np.testing.assert_array_equal(obs[:, 39:], np.eye(10, dtype=np.float32)[:2])
    assert env.max_episode_steps == 500
    for _ in range(3):
        obs, reward, term, trunc, info = env.step(np.zeros((2, 4)))
    assert np.isfinite(reward).all() and not info["done"].any()
    env.close()


@needs_metaworld
def test_evaluate_reports_success_rate() -> None:
    # reach-v3 with a short limit: a zero policy never succeeds, so success is 0 (not NaN)
    spec = parse_task("metaworld:reach-v3?max_episode_steps=20")
    env = make_vec_env([spec], 2, seed=0)
    success = np.full(env.num_envs, np.nan)

    def forward(x: torch.Tensor, task: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros(len(x), 8), torch.zeros(len(x))

    returns = evaluate(env, forward, [ObsNorm.identity(39)], "box", successes=success)
    env.close()
    assert returns.shape == (1, 2) and np.isfinite(returns).all()
    np.testing.assert_array_equal(success, [0.0, 0.0])


@needs_metaworld
def test_scripted_reach_policy_succeeds() -> None:
    from metaworld.policies import SawyerReachV3Policy

    policy = SawyerReachV3Policy()
    env = make_vec_env([parse_task("metaworld:reach-v3?max_episode_steps=150")], 1, seed=1)
    obs = env.reset()
    for _ in range(150):
        obs, _, _, _, info = env.step(policy.get_action(obs[0])[None])
        if info["done"][0]:
            break
    env.close()
    assert info["done"][0] and info["episode_success"][0] == 1.0


def test_metaworld_tasks_use_the_metaworld_ppo_profile() -> None:
    from skillbank.algos.ppo_defaults import NET_DEFAULTS, default_ppo, profile_of

    spec = get_suite("mt10")[0]
    assert profile_of(spec) == "metaworld" and "init_log_std" in NET_DEFAULTS["metaworld"]
    cfg = default_ppo(spec, "lora")
    assert cfg.rollout_steps == 500 and cfg.learning_rate == 1e-3
