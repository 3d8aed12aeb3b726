"""One batched PPO update over every run that has a rollout ready.

The runs' rows are concatenated (task index k = the k-th run by slot), and
``skillbank.algos.ppo.ppo_update`` runs its epochs and stratified minibatches over them with
a ``LoraBank`` routing task k to the run's slot: one forward/backward per minibatch serves
all runs. The optimiser is the trainer's ``SlotAdam`` (per-slot learning rate and state).

Failure isolation: a run whose gradients turn non-finite (a NaN or infinite loss) is
skipped from that moment (``SlotAdam.skip_nonfinite``) and its slot is restored to its
state before the update; the other runs' updates are kept. If the batched update raises,
every slot is restored and the runs are retried one by one, so one bad run cannot block
the others.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from skillbank.algos.ppo import PPOConfig, clip_grad_norm_per_slot, ppo_update
from skillbank.algos.slot_adam import SlotAdam
from skillbank.lora.layer import MultiLoraModel
from skillbank.service.dist import Dist
from skillbank.training.loop import LoraBank


@dataclass
class RunBatch:
    """One run's part of an update."""

    slot: int
    lr: float
    tensors: dict[str, Tensor]
    kind: str = "ppo"
    """The run's kind (orch.toml ``kind``): "ppo", or a key of ``UPDATE_KINDS``."""


@dataclass(frozen=True)
class UpdateKind:
    """How the trainer reads and trains the rollouts of a non-PPO run kind."""

    read: str
    """``"module:function"``: (RunPaths, step, run config, TrainerInfo) -> Rollout, or raise
    RolloutError naming the file and the key."""
    update: str
    """``"module:function"``: (model, opt, runs, dist) -> UpdateResult."""

    def load(self, part: str) -> Callable[..., Any]:
        module, _, func = getattr(self, part).partition(":")
        return getattr(importlib.import_module(module), func)


UPDATE_KINDS: dict[str, UpdateKind] = {
    "lm": UpdateKind(
        read="skillbank.service.lm_update:read_lm_rollout",
        update="skillbank.service.lm_update:lm_update",
    ),
}
"""Run kinds whose loss is not PPO's (batched_update hands their runs to ``update``)."""


@dataclass
class UpdateResult:
    stats: dict[str, float] = field(default_factory=dict)
    skipped: dict[int, str] = field(default_factory=dict)  # slot -> why its update was dropped


class SlotSnapshot:
    """Copies of some slots' parameters and optimiser state, to undo an update."""

    def __init__(self, model: MultiLoraModel, opt: SlotAdam, slots: Sequence[int]) -> None:
        self.model, self.opt = model, opt
        self.params = {k: [p[k].detach().clone() for p in opt.params] for k in slots}
        self.optim = {k: opt.slot_state(k) for k in slots}

    @torch.no_grad()
    def restore(self, k: int) -> None:
        for p, saved in zip(self.opt.params, self.params[k]):
            p[k].copy_(saved)
        self.opt.load_slot_state(k, *self.optim[k])


def _slot_finite(opt: SlotAdam, k: int) -> bool:
    return all(bool(torch.isfinite(p[k]).all()) for p in opt.params)


def batched_update(
    model: MultiLoraModel,
    opt: SlotAdam,
    runs: Sequence[RunBatch],
    cfg: PPOConfig,
    action_kind: str,
    generator: torch.Generator,
    dist: Dist | None = None,
) -> UpdateResult:
    """Update every run of ``runs`` (distinct slots) in one PPO update. With ``dist`` (a
    trainer on several ranks, see ``service.dist``) each rank computes its share of every
    minibatch's rows and the slot gradients are summed over the ranks before clipping."""
    if runs and runs[0].kind in UPDATE_KINDS:
        return UPDATE_KINDS[runs[0].kind].load("update")(model, opt, runs, dist)
    runs = sorted(runs, key=lambda r: r.slot)
    slots = [r.slot for r in runs]
    snap = SlotSnapshot(model, opt, slots)
    keys = runs[0].tensors.keys()
    batch = {k: torch.cat([r.tensors[k] for r in runs]) for k in keys}
    batch["task"] = torch.cat(
        [torch.full((r.tensors["obs"].shape[0],), i, dtype=torch.long) for i, r in enumerate(runs)]
    )
    opt.set_active(slots)
    for r in runs:
        opt.lr[r.slot] = r.lr
    bank = LoraBank(model, slots)
    forward = bank if dist is None else dist.split_forward(bank)
    params = opt.params

    def clip(max_norm: float) -> None:
        if dist is not None:
            dist.all_reduce_grads(params, slots)
        opt.skip_nonfinite()
        clip_grad_norm_per_slot(params, max_norm)

    try:
        stats = ppo_update(
            forward,
            opt,  # type: ignore[arg-type]  # duck-typed: zero_grad() and step()
            clip,
            batch,
            action_kind,
            cfg,
            len(runs),
            generator,
        )
    except Exception as e:  # restore, then isolate the run that fails
        for k in slots:
            snap.restore(k)
        if len(runs) == 1:
            opt.set_active([])
            return UpdateResult(skipped={slots[0]: f"update failed: {type(e).__name__}: {e}"})
        result = UpdateResult()
        for r in runs:
            one = batched_update(model, opt, [r], cfg, action_kind, generator, dist)
            result.skipped.update(one.skipped)
            result.stats = one.stats or result.stats
        return result
    result = UpdateResult(stats=stats)
    for k in slots:
        if bool(opt.skipped[k]) or not _slot_finite(opt, k):
            snap.restore(k)
            result.skipped[k] = "non-finite loss or gradient: update skipped"
    opt.set_active([])
    return result
