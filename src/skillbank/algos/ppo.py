"""PPO (clipped surrogate) for many skills at once: pure tensor maths, no I/O.

Read top to bottom: config -> GAE -> loss -> one update over a rollout batch.

Every row of a batch carries its task index ``task``; the policy bank maps rows to their
own parameters (a LoRA slot, or a full copy), so K skills train in one forward/backward
per minibatch. Minibatches are stratified (equal rows per task, rows grouped by task),
which keeps each task's gradient scale the same as training it alone and lets the
multi-LoRA layers take their fast path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Protocol

import torch
from pydantic import Field, NonNegativeFloat, PositiveFloat, PositiveInt
from torch import Tensor

from skillbank.algos.distributions import log_prob_entropy
from skillbank.config import Config

Unit = Annotated[float, Field(ge=0.0, le=1.0)]


class PPOConfig(Config):
    """PPO hyperparameters (CleanRL defaults unless noted)."""

    total_steps: PositiveInt = 100_000
    """Environment steps per task."""
    envs_per_task: PositiveInt = 8
    """Parallel environments per task."""
    rollout_steps: PositiveInt = 128
    """Steps per environment between updates."""
    learning_rate: NonNegativeFloat = 2.5e-4
    """Adam learning rate (annealed linearly to 0 when ``anneal_lr``)."""
    anneal_lr: bool = True
    """Linearly decay the learning rate over the run."""
    gamma: Unit = 0.99
    """Discount factor."""
    gae_lambda: Unit = 0.95
    """GAE lambda."""
    num_minibatches: PositiveInt = 4
    """Minibatches per epoch."""
    update_epochs: PositiveInt = 4
    """Passes over each rollout."""
    clip_coef: NonNegativeFloat = 0.2
    """Surrogate clipping range."""
    clip_vloss: bool = True
    """Clip the value loss around the old values."""
    ent_coef: float = 0.01
    """Entropy bonus."""
    vf_coef: NonNegativeFloat = 0.5
    """Value-loss weight."""
    max_grad_norm: PositiveFloat = 0.5
    """Gradient-norm clip, applied per task (per slot or per full copy)."""
    norm_adv: bool = True
    """Normalise advantages per minibatch and task."""
    target_kl: float | None = None
    """Stop the epoch loop early when approx_kl exceeds this."""
    adam_eps: PositiveFloat = 1e-5
    """Adam epsilon."""
    normalize_reward: bool = False
    """Scale rewards by the running std of the discounted return (use for Box tasks)."""


def gae(
    rewards: Tensor,  # [T, N]
    values: Tensor,  # [T, N]
    dones: Tensor,  # [T, N] 1.0 where the episode ended at step t
    last_value: Tensor,  # [N] value of the observation after the last step
    gamma: float,
    lam: float,
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation -> (advantages [T, N], returns [T, N]).

    A truncated episode should have ``gamma * V(final_obs)`` already added to its reward.
    """
    steps = rewards.shape[0]
    adv = torch.zeros_like(rewards)
    last = torch.zeros_like(last_value)
    next_value = last_value
    for t in reversed(range(steps)):
        live = 1.0 - dones[t]
        delta = rewards[t] + gamma * next_value * live - values[t]
        last = delta + gamma * lam * live * last
        adv[t] = last
        next_value = values[t]
    return adv, adv + values


def normalize_per_task(adv: Tensor, task: Tensor, num_tasks: int) -> Tensor:
    """Zero-mean, unit-std advantages within each task of a minibatch."""
    if num_tasks == 1:
        centred = adv - adv.mean()
        return centred / (centred.square().mean().sqrt() + 1e-8)
    counts = torch.bincount(task, minlength=num_tasks).clamp(min=1).to(adv.dtype)
    mean = torch.zeros(num_tasks, dtype=adv.dtype).index_add_(0, task, adv) / counts
    centred = adv - mean[task]
    var = torch.zeros(num_tasks, dtype=adv.dtype).index_add_(0, task, centred**2) / counts
    return centred / (var[task].sqrt() + 1e-8)


STAT_NAMES = ("policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac")


def ppo_loss(
    policy_out: Tensor,  # [B, n_out]
    value: Tensor,  # [B]
    batch: dict[str, Tensor],
    action_kind: str,
    cfg: PPOConfig,
    num_tasks: int,
) -> tuple[Tensor, dict[str, float]]:
    """Clipped-surrogate loss over a minibatch; returns (loss, statistics)."""
    logp, entropy = log_prob_entropy(action_kind, policy_out, batch["actions"])
    log_ratio = logp - batch["logp"]
    ratio = log_ratio.exp()
    adv = batch["advantages"]
    if cfg.norm_adv:
        adv = normalize_per_task(adv, batch["task"], num_tasks)
    pg_loss = torch.max(-adv * ratio, -adv * ratio.clamp(1 - cfg.clip_coef, 1 + cfg.clip_coef))
    if cfg.clip_vloss:
        v_clipped = batch["values"] + (value - batch["values"]).clamp(-cfg.clip_coef, cfg.clip_coef)
        v_loss = 0.5 * torch.max(
            (value - batch["returns"]) ** 2, (v_clipped - batch["returns"]) ** 2
        )
    else:
        v_loss = 0.5 * (value - batch["returns"]) ** 2
    # The sum over tasks of each task's mean loss, so each task's gradient is as large as
    # if it were trained alone, whatever its share of the rows.
    row_loss = pg_loss - cfg.ent_coef * entropy + cfg.vf_coef * v_loss
    if num_tasks == 1:
        loss = row_loss.mean()
    else:
        counts = torch.bincount(batch["task"], minlength=num_tasks).to(row_loss.dtype)
        loss = (row_loss / counts[batch["task"]]).sum()
    with torch.no_grad():
        values = torch.stack(
            [
                pg_loss.mean(),
                v_loss.mean(),
                entropy.mean(),
                ((ratio - 1) - log_ratio).mean(),
                ((ratio - 1).abs() > cfg.clip_coef).to(ratio.dtype).mean(),
            ]
        ).tolist()
    return loss, dict(zip(STAT_NAMES, values))


def explained_variance(pred: Tensor, target: Tensor) -> float:
    var = target.var()
    return float("nan") if var == 0 else float(1 - (target - pred).var() / var)


def stratified_minibatches(
    task: Tensor, num_tasks: int, num_minibatches: int, generator: torch.Generator
) -> list[Tensor]:
    """Row indices of each minibatch: every task shuffled and split into equal parts, the
    parts concatenated in task order (so rows arrive grouped by task, equal counts)."""
    per_task = [torch.nonzero(task == k).squeeze(1) for k in range(num_tasks)]
    parts = [
        p[torch.randperm(p.numel(), generator=generator)].tensor_split(num_minibatches)
        for p in per_task
    ]
    return [torch.cat([parts[k][i] for k in range(num_tasks)]) for i in range(num_minibatches)]


class Optimizer(Protocol):
    """What ``ppo_update`` needs of an optimiser (torch's, or the service's SlotAdam)."""

    def zero_grad(self, set_to_none: bool = True) -> None: ...

    def step(self) -> object: ...


def ppo_update(
    forward: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]],
    optimizer: Optimizer,
    clip_grads: Callable[[float], None],
    batch: dict[str, Tensor],
    action_kind: str,
    cfg: PPOConfig,
    num_tasks: int,
    generator: torch.Generator,
    extra_loss: Callable[[], tuple[Tensor, dict[str, float]]] | None = None,
) -> dict[str, float]:
    """``update_epochs`` passes of minibatch PPO over a flat batch.

    ``batch`` holds flat tensors: obs (normalised), actions, logp, values, advantages,
    returns, task. ``forward(obs, task)`` -> (policy_out, value) runs each row with its
    task's parameters; ``clip_grads(max_norm)`` clips gradients per task. ``extra_loss()``
    (optional) is added to every minibatch's loss, e.g. a continual-learning penalty or a
    behaviour-cloning term; it returns (loss, statistics).
    """
    stats: dict[str, list[float]] = {}
    # One float matrix holding every column, so a minibatch is one gather, not seven.
    names = list(batch)
    cols = [batch[k].reshape(batch[k].shape[0], -1).to(torch.float32) for k in names]
    widths = [c.shape[1] for c in cols]
    packed = torch.cat(cols, dim=1)  # [B, sum(widths)]
    for _ in range(cfg.update_epochs):
        epoch_kl: list[float] = []
        for idx in stratified_minibatches(batch["task"], num_tasks, cfg.num_minibatches, generator):
            parts = packed.index_select(0, idx).split(widths, dim=1)
            mb = {
                k: part.reshape(-1, *batch[k].shape[1:]).to(batch[k].dtype)
                for k, part in zip(names, parts)
            }
            policy_out, value = forward(mb["obs"], mb["task"])
            loss, s = ppo_loss(policy_out, value, mb, action_kind, cfg, num_tasks)
            if extra_loss is not None:
                extra, extra_stats = extra_loss()
                loss = loss + extra
                s = {**s, **extra_stats}
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            clip_grads(cfg.max_grad_norm)
            optimizer.step()
            for k, v in s.items():
                stats.setdefault(k, []).append(v)
            epoch_kl.append(s["approx_kl"])
        if cfg.target_kl is not None and sum(epoch_kl) / len(epoch_kl) > cfg.target_kl:
            break
    out = {k: sum(v) / len(v) for k, v in stats.items()}
    out["explained_variance"] = explained_variance(batch["values"], batch["returns"])
    return out


def clip_grad_norm_per_slot(params: Sequence[Tensor], max_norm: float) -> None:
    """Clip the gradients of stacked per-slot parameters (leading dim = slot) per slot."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    sq = sum(g.reshape(g.shape[0], -1).pow(2).sum(1) for g in grads)  # [S]
    assert isinstance(sq, Tensor)  # grads is not empty
    scale = (max_norm / (sq.sqrt() + 1e-6)).clamp(max=1.0)  # [S]
    for g in grads:
        g.mul_(scale.view(-1, *([1] * (g.dim() - 1))))
