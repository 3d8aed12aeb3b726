"""The gym task family: any Gymnasium env (id or entry point) with kwargs and wrappers."""

from __future__ import annotations

from pathlib import Path

import gym_user_envs  # noqa: F401  (registers SbChain-v0)
import gymnasium
import numpy as np
import pytest

from skillbank.config import load_toml
from skillbank.tasks import (
    GymTaskConfig,
    GymTaskError,
    GymTaskSpec,
    NonFiniteError,
    TaskSpec,
    make_vec_env,
    parse_task,
    task_from_dict,
)
from skillbank.tasks.workers import make_env


def test_text_form_parses_kwargs_and_reserved_keys() -> None:
    spec = parse_task("gym:LunarLander-v3?gravity=-5.0,enable_wind=true,turbulence_power=1")
    assert isinstance(spec, GymTaskSpec) and spec.env_id == "LunarLander-v3"
    assert spec.kwargs == {"enable_wind": True, "gravity": -5.0, "turbulence_power": 1}
    assert parse_task(spec.name) == spec
    spec = parse_task("gym:SbChain-v0?length=3,wrappers=gym_user_envs:Negate,max_episode_steps=7")
    assert spec.wrappers == ("gym_user_envs:Negate",) and spec.max_episode_steps == 7
    assert spec.info.max_episode_steps == 7
    assert parse_task("gym:SbChain-v0").info.max_episode_steps == 20  # from the env spec
    assert parse_task("gym:gym_user_envs:BadObs").info.max_episode_steps == 1000  # none: 1000
    with pytest.raises(GymTaskError, match="given twice"):
        parse_task("gym:CartPole-v1?a=1,a=2")


def test_spec_round_trips_as_plain_data() -> None:
    spec = GymTaskSpec(
        env_id="SbChain-v0", kwargs={"length": 3}, wrappers=("gym_user_envs:Negate",)
    )
    d = spec.to_dict()
    assert d["family"] == "gym" and d["kwargs"] == {"length": 3}
    assert task_from_dict(d) == spec and TaskSpec.from_dict(d) == spec
    assert hash(task_from_dict(d)) == hash(spec)
    assert spec != GymTaskSpec(env_id="SbChain-v0", kwargs={"length": 4})
    with pytest.raises(GymTaskError, match="unknown field"):
        task_from_dict({**d, "colour": 1})
    with pytest.raises(GymTaskError, match="not plain JSON"):
        GymTaskSpec(env_id="SbChain-v0", kwargs={"x": object()})


def test_toml_task_table(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text(
        '[task]\nenv_id = "SbChain-v0"\nkwargs = {length = 6}\n'
        'wrappers = ["gym_user_envs:Negate"]\n'
    )
    spec = load_toml(path, GymTaskConfig, "task").to_spec()
    assert spec == GymTaskSpec(
        env_id="SbChain-v0", kwargs={"length": 6}, wrappers=("gym_user_envs:Negate",)
    )
    path.write_text('[task]\nenv_id = "SbChain-v0"\nkwarg = {length = 6}\n')
    with pytest.raises(ValueError, match="kwarg"):
        load_toml(path, GymTaskConfig, "task")


def test_same_observations_as_gymnasium() -> None:
    env = make_vec_env([parse_task("gym:CartPole-v1")], 2, seed=3)
    obs = env.reset()
    ref = [gymnasium.make("CartPole-v1") for _ in range(2)]
    expect = np.stack([r.reset(seed=3 + i)[0] for i, r in enumerate(ref)])
    np.testing.assert_array_equal(obs, expect)
    for _ in range(5):
        obs, reward, term, trunc, _ = env.step(np.array([1, 0]))
    expect = np.stack([r.step(a)[0] for r, a in zip(ref, [1, 0]) for _ in range(5)][4::5])
    np.testing.assert_allclose(obs, expect)
    assert env.max_episode_steps == 500 and env.obs_dim == 4
    env.close()


def test_dict_observation_flattened_wrappers_and_one_hot() -> None:
    plain = parse_task("gym:SbChain-v0")
    wrapped = parse_task("gym:SbChain-v0?wrappers=gym_user_envs:Negate")
    env = make_vec_env([plain, wrapped], 1, seed=0)
    obs = env.reset()
    assert env.obs_dim == 3  # pos (1) + one-hot of Discrete(2)
    assert obs[0, 0] >= 0 and obs[1, 0] <= 0 and obs[1, 0] == -obs[0, 0] or obs[0, 0] == 0
    env.close()
    cond = [plain.conditioned(k, 3) for k in range(3)]
    assert cond[1].name == "gym:SbChain-v0?task_index=1,num_tasks=3"
    env = make_vec_env(cond, 2, seed=0)
    obs = env.reset()
    assert env.obs_dim == 6
    np.testing.assert_array_equal(obs[:, 3:], np.repeat(np.eye(3, dtype=np.float32), 2, axis=0))
    env.close()


def test_per_task_limits_success_and_differing_kwargs() -> None:
    short = parse_task("gym:SbChain-v0?length=50,max_episode_steps=3")
    reach = parse_task("gym:SbChain-v0?length=2")
    env = make_vec_env([short, reach], 1, seed=0)
    env.reset()
    lengths: dict[int, list[int]] = {0: [], 1: []}
    success: dict[int, list[float]] = {0: [], 1: []}
    for _ in range(9):
        _, _, term, trunc, info = env.step(np.array([1, 1]))
        for i in np.flatnonzero(info["done"]):
            lengths[i].append(int(info["episode_length"][i]))
            success[i].append(float(info["episode_success"][i]))
        assert not trunc[1] or term[1]
    assert lengths[0] == [3, 3, 3] and success[0] == [0.0, 0.0, 0.0]
    assert set(lengths[1]) <= {1, 2} and success[1] and all(s == 1.0 for s in success[1])
    env.close()


def test_async_workers_match_sync() -> None:
    specs = [parse_task("gym:CartPole-v1"), parse_task("gym:CartPole-v1?sutton_barto_reward=true")]
    sync = make_env(specs, 2, seed=5, workers=0)
    procs = make_env(specs, 2, seed=5, workers=2)
    assert type(procs.groups[0][1].vec).__name__ == "AsyncVectorEnv"
    np.testing.assert_array_equal(sync.reset(), procs.reset())
    for t in range(30):
        a = np.array([t % 2, 1, 0, (t // 3) % 2])
        out_s, out_p = sync.step(a), procs.step(a)
        for x, y in zip(out_s[:4], out_p[:4]):
            np.testing.assert_array_equal(x, y)
    sync.close()
    procs.close()


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("gym:NoSuchEnv-v0", r"'gym:NoSuchEnv-v0'.*not a registered"),
        ("gym:no_such_module:Env", r"entry point 'no_such_module:Env' cannot be imported"),
        ("gym:CartPole-v1?colour=3", r"'gym:CartPole-v1\?colour=3'.*colour"),
        ("gym:gym_user_envs:BadObs", r"'gym:gym_user_envs:BadObs'.*unsupported observation space"),
        ("gym:SbChain-v0?wrappers=gym_user_envs:Nope", r"wrapper 'gym_user_envs:Nope'"),
        ("gym:Pendulum-v1?wrappers=gym_user_envs:Negate", r"Negate'.*failed in reset: IndexError"),
    ],
)
def test_bad_tasks_give_one_error_naming_the_task(text: str, match: str) -> None:
    with pytest.raises(GymTaskError, match=match):
        make_vec_env([parse_task(text)], 1, seed=0).reset()


def test_entry_point_and_unsupported_action_space() -> None:
    spec = GymTaskSpec(env_id="gymnasium.envs.classic_control.cartpole:CartPoleEnv")
    env = make_vec_env([spec], 2, seed=0)  # an entry point that is not a registered id
    assert env.obs_dim == 4 and env.max_episode_steps == 1000
    env.close()
    with pytest.raises(GymTaskError, match=r"'gym:gym_user_envs:BadAction'.*action space Multi"):
        make_vec_env([parse_task("gym:gym_user_envs:BadAction")], 1, seed=0)


def test_nan_from_the_env_names_the_task() -> None:
    env = make_vec_env([parse_task("gym:SbChain-v0?length=40,nan_at=2")], 1, seed=0)
    env.reset()
    env.step(np.array([1]))
    with pytest.raises(NonFiniteError, match=r"task 'gym:SbChain-v0\?length=40,nan_at=2'"):
        env.step(np.array([1]))
    env.close()
