"""The PPO training loop for a policy bank: K tasks, one batched update per minibatch.

A *bank* maps each row of a batch to its task's parameters:
- ``LoraBank``: task k -> LoRA slot k of one ``MultiLoraModel`` (the base frozen);
- ``FullBank``: task k -> its own full copy of the network (full fine-tuning, or the
  base itself when K = 1).
The same loop (``train_ppo``) trains both; ``skillbank train-base``, ``train-skills`` and
``--full-finetune`` are thin wrappers around it.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from skillbank.algos.normalize import ObsNorm
from skillbank.algos.ppo import PPOConfig, clip_grad_norm_per_slot, ppo_update
from skillbank.lora import MultiLoraModel
from skillbank.tasks import TaskSpec, VecTaskEnv, make_vec_env
from skillbank.training.rollout import (
    RewardScaler,
    RolloutState,
    collect_rollout,
    evaluate,
    update_norms,
)


class LoraBank:
    """Task k of the batch -> slot ``slots[k]`` of a multi-LoRA model."""

    def __init__(self, model: MultiLoraModel, slots: Sequence[int]) -> None:
        self.model = model
        self.slot_table = torch.tensor(list(slots), dtype=torch.long)

    def __call__(self, x: Tensor, task: Tensor) -> tuple[Tensor, Tensor]:
        with self.model.slots(self.slot_table[task]):
            return self.model.base(x)

    def parameters(self) -> list[nn.Parameter]:
        return self.model.slot_parameters()

    def clip_grads(self, max_norm: float) -> None:
        clip_grad_norm_per_slot(self.parameters(), max_norm)


class FullBank:
    """Task k of the batch -> its own full network ``models[k]``."""

    def __init__(self, models: Sequence[nn.Module]) -> None:
        self.models = list(models)
        for m in self.models:
            m.requires_grad_(True)

    def __call__(self, x: Tensor, task: Tensor) -> tuple[Tensor, Tensor]:
        if len(self.models) == 1:
            return self.models[0](x)
        pis: list[Tensor] = []
        vals: list[Tensor] = []
        idxs: list[Tensor] = []
        for k, model in enumerate(self.models):
            idx = torch.nonzero(task == k).squeeze(1)
            if idx.numel():
                pi, v = model(x[idx])
                pis.append(pi)
                vals.append(v)
                idxs.append(idx)
        order = torch.cat(idxs)
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(order.numel())
        return torch.cat(pis)[inverse], torch.cat(vals)[inverse]

    def parameters(self) -> list[nn.Parameter]:
        return [p for m in self.models for p in m.parameters()]

    def clip_grads(self, max_norm: float) -> None:
        for m in self.models:
            nn.utils.clip_grad_norm_(m.parameters(), max_norm)


Bank = LoraBank | FullBank


@dataclass
class TrainResult:
    """What a run returns: final statistics and the learning curves."""

    norms: list[ObsNorm]
    curves: list[dict] = field(default_factory=list)  # one row per update
    eval_returns: np.ndarray | None = None  # [K, episodes]
    wall_time: float = 0.0  # training seconds (rollouts + updates, without callbacks)
    steps_per_task: int = 0
    retired: list[int | None] | None = None  # per task: step it stopped training (None: never)


def make_adam(params: list[nn.Parameter], lr: float, eps: float) -> torch.optim.Optimizer:
    """Adam with the fused kernel where this torch build has it for these tensors."""
    try:
        return torch.optim.Adam(params, lr=lr, eps=eps, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr, eps=eps)


def train_ppo(
    bank: Bank,
    specs: Sequence[TaskSpec],
    cfg: PPOConfig,
    action_kind: str,
    *,
    seed: int = 0,
    init_norms: Sequence[ObsNorm] | None = None,
    on_update: Callable[[dict], None] | None = None,
    eval_episodes: int = 0,
    should_stop: Callable[[dict, list[ObsNorm]], bool] | None = None,
    extra_loss: Callable[[], tuple[Tensor, dict[str, float]]] | None = None,
    env: VecTaskEnv | None = None,
    train_tasks: Callable[[], Sequence[bool]] | None = None,
) -> TrainResult:
    """Train every task of ``specs`` in its own part of ``bank`` for ``cfg.total_steps``
    env steps each. ``on_update`` gets each row of the curves; ``should_stop(row, norms)``
    may end the run early (e.g. when an evaluation with the current observation statistics
    ``norms`` reaches a threshold). ``extra_loss`` is added to every minibatch's PPO loss
    (see ``ppo_update``). ``env``: an existing vector env for ``specs`` (else one is made
    and closed here). ``train_tasks()`` (asked before each update) marks the tasks still
    trained: the rows of the others are left out of the update (e.g. tasks already
    solved), so they cost their rollouts only."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    own_env = env is None
    if env is None:
        env = make_vec_env(list(specs), cfg.envs_per_task, seed)
    k = len(specs)
    norms = [n.copy() for n in init_norms] if init_norms else [ObsNorm.identity(env.obs_dim)] * k
    norms = [n.copy() for n in norms]
    scaler = RewardScaler(cfg.gamma, env.num_envs) if cfg.normalize_reward else None
    state = RolloutState(env.reset(seed=seed), norms, scaler, [[] for _ in range(k)])
    if not init_norms:  # fresh statistics: start from the first observations
        update_norms(norms, state.obs, env.task_ids)
    params = bank.parameters()
    optimizer = make_adam(params, cfg.learning_rate, cfg.adam_eps)
    batch_per_update = cfg.envs_per_task * cfg.rollout_steps
    num_updates = max(1, cfg.total_steps // batch_per_update)
    result = TrainResult(norms=norms)
    start = time.perf_counter()
    hook_time = 0.0  # time spent in on_update / should_stop, not counted as training
    for update in range(1, num_updates + 1):
        if cfg.anneal_lr:
            for group in optimizer.param_groups:
                group["lr"] = cfg.learning_rate * (1.0 - (update - 1) / num_updates)
        batch = collect_rollout(env, bank, state, cfg, action_kind, gen)
        if train_tasks is not None:
            keep = torch.as_tensor(list(train_tasks()), dtype=torch.bool)
            if not bool(keep.all()):
                if not bool(keep.any()):
                    break
                rows = keep[batch["task"]]
                batch = {name: v[rows] for name, v in batch.items()}
        stats = ppo_update(
            bank, optimizer, bank.clip_grads, batch, action_kind, cfg, k, gen, extra_loss
        )
        elapsed = time.perf_counter() - start - hook_time
        steps = update * batch_per_update
        recent = [float(np.mean(r[-10:])) if r else float("nan") for r in state.episode_returns]
        row = {
            "update": update,
            "steps_per_task": steps,
            "time": elapsed,
            "sps": steps * k / elapsed,
            "lr": optimizer.param_groups[0]["lr"],
            "episodic_return": recent,
            **stats,
        }
        result.curves.append(row)
        hook_start = time.perf_counter()
        if on_update is not None:
            on_update(row)
        stop = should_stop is not None and should_stop(row, norms)
        hook_time += time.perf_counter() - hook_start
        if stop:
            break
    if own_env:
        env.close()
    result.wall_time = time.perf_counter() - start - hook_time
    result.steps_per_task = result.curves[-1]["steps_per_task"]
    if eval_episodes:
        result.eval_returns = evaluate_bank(bank, specs, norms, action_kind, eval_episodes, seed)
    return result


def evaluate_bank(
    bank: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]],
    specs: Sequence[TaskSpec],
    norms: Sequence[ObsNorm],
    action_kind: str,
    episodes: int,
    seed: int = 0,
) -> np.ndarray:
    """Greedy returns [K, episodes]: task k run by part k of the bank with norms[k]."""
    env = make_vec_env(list(specs), episodes, seed + 10_000)
    try:
        return evaluate(env, bank, list(norms), action_kind, seed=seed + 10_000)
    finally:
        env.close()


def full_copies(base: nn.Module, k: int) -> FullBank:
    """K trainable deep copies of ``base`` (full fine-tuning)."""
    return FullBank([copy.deepcopy(base) for _ in range(k)])
