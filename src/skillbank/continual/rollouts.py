"""Small rollouts the strategies need: states of a finished task, a random policy's return."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from skillbank.algos.distributions import sample_seeded
from skillbank.algos.normalize import ObsNorm, normalize_rows, stack_norms
from skillbank.tasks import TaskSpec, make_vec_env
from skillbank.training.rollout import Forward


@torch.no_grad()
def sample_states(
    forward: Forward,
    spec: TaskSpec,
    norm: ObsNorm,
    action_kind: str,
    num_states: int,
    seed: int,
    envs: int = 8,
) -> Tensor:
    """``num_states`` normalised observations ``[n, obs_dim]`` visited by the policy
    (actions sampled, as in training) on ``spec``, task index 0 for ``forward``."""
    env = make_vec_env([spec], envs, seed)
    try:
        obs = env.reset(seed=seed)
        mean, inv_std = stack_norms([norm])
        gen = torch.Generator().manual_seed(seed)
        rows = torch.zeros(env.num_envs, dtype=torch.long)
        out: list[Tensor] = []
        for _ in range(-(-num_states // env.num_envs)):
            x = normalize_rows(torch.as_tensor(obs, dtype=torch.float32), mean, inv_std, rows)
            out.append(x)
            policy_out, _ = forward(x, rows)
            action = sample_seeded(action_kind, policy_out, gen)
            obs, *_ = env.step(action.numpy())
        return torch.cat(out)[:num_states]
    finally:
        env.close()


def random_policy_return(spec: TaskSpec, episodes: int, seed: int) -> float:
    """Mean return of uniformly random actions over ``episodes`` episodes (first episode
    of each sub-env)."""
    env = make_vec_env([spec], episodes, seed)
    try:
        env.reset(seed=seed)
        space = env.action_space
        space.seed(seed)
        returns = np.full(env.num_envs, np.nan)
        while np.isnan(returns).any():
            action = np.stack([space.sample() for _ in range(env.num_envs)])
            _, _, terminated, truncated, info = env.step(action)
            done = np.logical_or(terminated, truncated) & np.isnan(returns)
            returns[done] = info["episode_return"][done]
        return float(returns.mean())
    finally:
        env.close()
