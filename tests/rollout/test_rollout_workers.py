"""ProcVecEnv: sub-envs stepped in worker processes, with VecTaskEnv's results."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from skillbank.algos.normalize import ObsNorm
from skillbank.algos.ppo import PPOConfig
from skillbank.models import ActorCritic, ActorCriticConfig
from skillbank.tasks import NonFiniteError, TaskSpec, VecTaskEnv, parse_task
from skillbank.tasks.workers import ProcVecEnv, make_env, worker_seed
from skillbank.training.rollout import RolloutState, collect_rollout

SPECS = [TaskSpec("cartpole"), parse_task("cartpole/long-pole")]


def _actions(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 2, n)


def _run(env: VecTaskEnv | ProcVecEnv, actions: list[np.ndarray], seed: int = 7) -> list[tuple]:
    out = [(env.reset(seed=seed),)]
    out += [env.step(a) for a in actions]
    return out


def test_one_worker_is_identical_to_in_process() -> None:
    rng = np.random.default_rng(0)
    actions = [_actions(rng, 6) for _ in range(60)]  # long enough for episodes to end
    local = VecTaskEnv(SPECS, 3, seed=1)
    with ProcVecEnv(SPECS, 3, seed=1, workers=1) as env:
        assert env.num_envs == 6 and list(env.task_ids) == [0, 0, 0, 1, 1, 1]
        for got, want in zip(_run(env, actions), _run(local, actions)):
            for g, w in zip(got, want):
                if isinstance(w, dict):
                    assert sorted(g) == sorted(w)
                    for k in w:
                        np.testing.assert_array_equal(g[k], w[k])
                else:
                    np.testing.assert_array_equal(g, w)
                    assert g.dtype == w.dtype


def test_two_workers_hold_each_share_in_global_order() -> None:
    """Worker j's sub-envs behave exactly as an in-process VecTaskEnv of its share and
    seeds (``worker_seed``), placed back where VecTaskEnv would put them (sub-env i runs
    task i // 5)."""
    rng = np.random.default_rng(1)
    actions = [_actions(rng, 10) for _ in range(40)]
    shares = [VecTaskEnv(SPECS, 3, worker_seed(1, 0)), VecTaskEnv(SPECS, 2, worker_seed(1, 1))]
    index = [np.array([0, 1, 2, 5, 6, 7]), np.array([3, 4, 8, 9])]
    with make_env(SPECS, 5, seed=1, workers=2) as env:
        assert isinstance(env, ProcVecEnv) and env.workers == 2
        got = _run(env, actions)
    for j, (share, idx) in enumerate(zip(shares, index)):
        want = _run(share, [a[idx] for a in actions], worker_seed(7, j))
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g[0][idx], w[0])
            if len(w) > 1:
                for gi, wi in zip(g[1:4], w[1:4]):
                    np.testing.assert_array_equal(gi[idx], wi)
                for k in w[4]:
                    np.testing.assert_array_equal(g[4][k][idx], w[4][k])
    ended = sum(int(step[4]["done"].sum()) for step in got[1:])
    assert ended > 0  # episodes ended and were reset inside the workers


def test_collect_with_workers_and_errors() -> None:
    torch.manual_seed(0)
    net = ActorCritic(ActorCriticConfig(4, "discrete", 2, [16]))
    cfg = PPOConfig(envs_per_task=4, rollout_steps=32)
    with make_env(SPECS, 4, seed=0, workers=2) as env:
        state = RolloutState(env.reset(seed=0), [ObsNorm.identity(4)] * 2, None, [[], []])
        batch = collect_rollout(env, lambda x, t: net(x), state, cfg, "discrete", torch.Generator())
    assert batch["obs"].shape == (32 * 8, 4) and torch.isfinite(batch["advantages"]).all()
    assert batch["task"].tolist()[:8] == [0, 0, 0, 0, 1, 1, 1, 1]
    bad = parse_task("cartpole:force_mag=1e300")
    with ProcVecEnv([TaskSpec("cartpole"), bad], 2, seed=0, workers=2) as env:
        env.reset()
        with pytest.raises(NonFiniteError, match=r"env worker 0: .*force_mag=1e\+300") as err:
            env.step(np.ones(4, dtype=np.int64))
        assert err.value.env_index == 2  # global index of worker 0's 2nd sub-env (task 1)
        with pytest.raises(ValueError, match="4 rows"):
            env.step(np.ones(3, dtype=np.int64))
