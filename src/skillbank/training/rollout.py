"""Vector-env rollouts for PPO (with GAE) and evaluation episodes, many tasks at once."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from skillbank.algos.distributions import greedy_action, make_distribution, sample_with_logp
from skillbank.algos.normalize import CLIP, ObsNorm, normalize_rows, stack_norms
from skillbank.algos.ppo import PPOConfig, gae

Forward = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


@dataclass
class RewardScaler:
    """Divides rewards by the running std of each env's discounted return."""

    gamma: float
    num_envs: int
    ret: np.ndarray = field(init=False)
    norm: ObsNorm = field(init=False)

    def __post_init__(self) -> None:
        self.ret = np.zeros(self.num_envs)
        self.norm = ObsNorm.identity(1)

    def __call__(self, reward: np.ndarray, done: np.ndarray) -> np.ndarray:
        self.ret = self.ret * self.gamma + reward
        self.norm.update(self.ret[:, None])
        self.ret[done] = 0.0
        return reward / np.sqrt(self.norm.var[0] + 1e-8)


@dataclass
class RolloutState:
    """What carries over between rollouts: the current observations and statistics."""

    obs: np.ndarray  # [num_envs, obs_dim] raw observations
    norms: list[ObsNorm]  # one per task
    scaler: RewardScaler | None
    episode_returns: list[list[float]]  # finished episodes per task (raw reward)
    update_norms: bool = True


def collect_rollout(
    env,  # VecTaskEnv
    forward: Forward,
    state: RolloutState,
    cfg: PPOConfig,
    action_kind: str,
    generator: torch.Generator,
) -> dict[str, Tensor]:
    """Run ``cfg.rollout_steps`` steps of every env; returns a flat PPO batch.

    Observations are normalised with each task's statistics as they stand at the start of
    the rollout (so the whole rollout sees one fixed input transform, the one stored with
    the batch); the statistics are updated with the rollout's raw observations at the end.
    Box actions are sampled unbounded (their log-probability is of the raw sample) and
    clipped to the action space when sent to the environment."""
    n, steps = env.num_envs, cfg.rollout_steps
    task = torch.as_tensor(env.task_ids, dtype=torch.long)  # [N]
    mean, inv_std = stack_norms(state.norms)
    env_mean, env_inv_std = mean[task], inv_std[task]  # [N, d] per env, fixed this rollout
    low, high = _action_bounds(env, action_kind)
    raw_obs, obs_buf, act_buf, logp_buf, val_buf, rew_buf, done_buf = [], [], [], [], [], [], []
    for _ in range(steps):
        raw_obs.append(state.obs)
        obs_t = torch.as_tensor(state.obs, dtype=torch.float32)
        obs_t = ((obs_t - env_mean) * env_inv_std).clamp_(-CLIP, CLIP)
        with torch.no_grad():
            policy_out, value = forward(obs_t, task)
            action, logp = sample_with_logp(action_kind, policy_out)
        env_action = action.numpy() if low is None else np.clip(action.numpy(), low, high)
        next_obs, reward, terminated, truncated, info = env.step(env_action)
        reward = np.asarray(reward, dtype=np.float64)
        done = np.logical_or(terminated, truncated)
        for i in np.nonzero(done)[0]:
            state.episode_returns[env.task_ids[i]].append(float(info["episode_return"][i]))
        if state.scaler is not None:
            reward = state.scaler(reward, done)
        trunc_only = np.logical_and(truncated, np.logical_not(terminated))
        if trunc_only.any():  # bootstrap through time limits with V(final_obs)
            idx = torch.as_tensor(np.nonzero(trunc_only)[0])
            fin = torch.as_tensor(info["final_obs"][idx.numpy()], dtype=torch.float32)
            fin = normalize_rows(fin, mean, inv_std, task[idx])
            with torch.no_grad():
                _, v_fin = forward(fin, task[idx])
            reward[idx.numpy()] += cfg.gamma * v_fin.numpy()
        obs_buf.append(obs_t)
        act_buf.append(action)
        logp_buf.append(logp)
        val_buf.append(value)
        rew_buf.append(torch.as_tensor(reward, dtype=torch.float32))
        done_buf.append(torch.as_tensor(done, dtype=torch.float32))
        state.obs = next_obs
    last_obs = normalize_rows(torch.as_tensor(state.obs, dtype=torch.float32), mean, inv_std, task)
    with torch.no_grad():
        _, last_value = forward(last_obs, task)
    if state.update_norms:
        update_norms(state.norms, np.stack(raw_obs), env.task_ids)
    values = torch.stack(val_buf)  # [T, N]
    adv, ret = gae(
        torch.stack(rew_buf), values, torch.stack(done_buf), last_value, cfg.gamma, cfg.gae_lambda
    )
    actions = torch.stack(act_buf)  # [T, N] or [T, N, d]
    return {
        "obs": torch.stack(obs_buf).reshape(steps * n, -1),
        "actions": actions.reshape(steps * n, *actions.shape[2:]),
        "logp": torch.stack(logp_buf).reshape(-1),
        "values": values.reshape(-1),
        "advantages": adv.reshape(-1),
        "returns": ret.reshape(-1),
        "task": task.repeat(steps),
    }


def update_norms(norms: list[ObsNorm], obs: np.ndarray, task_ids: np.ndarray) -> None:
    """Fold raw observations ``obs [..., N, d]`` of envs with tasks ``task_ids [N]`` into
    each task's running statistics."""
    for k, norm in enumerate(norms):
        rows = obs[..., task_ids == k, :]
        norm.update(rows.reshape(-1, obs.shape[-1]))


def _action_bounds(env, action_kind: str) -> tuple[np.ndarray | None, np.ndarray | None]:  # noqa: ANN001
    if action_kind != "box":
        return None, None
    space = env.action_space
    return np.asarray(space.low, dtype=np.float32), np.asarray(space.high, dtype=np.float32)


@torch.no_grad()
def evaluate(
    env,  # VecTaskEnv with envs_per_task = episodes
    forward: Forward,
    norms: list[ObsNorm],
    action_kind: str,
    deterministic: bool = True,
    seed: int = 10_000,
    successes: np.ndarray | None = None,
) -> np.ndarray:
    """Return of the first episode of every env -> [num_tasks, episodes_per_task].

    ``successes`` (float array ``[num_envs]``), when given, receives each first episode's
    ``info["episode_success"]`` (1/0 for envs that report success, e.g. Meta-World; NaN)."""
    obs = env.reset(seed=seed)
    task = torch.as_tensor(env.task_ids, dtype=torch.long)
    mean, inv_std = stack_norms(norms)
    low, high = _action_bounds(env, action_kind)
    returns = np.full(env.num_envs, np.nan)
    while np.isnan(returns).any():
        x = normalize_rows(torch.as_tensor(obs, dtype=torch.float32), mean, inv_std, task)
        policy_out, _ = forward(x, task)
        if deterministic:
            action = greedy_action(action_kind, policy_out)
        else:
            action = make_distribution(action_kind, policy_out).sample()
        act = action.numpy() if low is None else np.clip(action.numpy(), low, high)
        obs, _, terminated, truncated, info = env.step(act)
        done = np.logical_or(terminated, truncated) & np.isnan(returns)
        returns[done] = info["episode_return"][done]
        if successes is not None:
            successes[done] = info.get("episode_success", np.full(env.num_envs, np.nan))[done]
    return returns.reshape(len(env.specs), -1)
