"""What every kind's batched update shares: its inputs (``RunBatch``, ``UpdateContext``),
its result, and undoing one slot's update (``SlotSnapshot``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor

from skillbank.algos.slot_adam import SlotAdam
from skillbank.lora import MultiLoraModel

Forward = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


class GradSync(Protocol):
    """What an update needs of a multi-rank trainer (``service.trainer.dist.Dist``)."""

    rank: int
    world_size: int

    def all_reduce_grads(self, params: Sequence[Tensor], slots: Sequence[int]) -> None: ...

    def split_forward(self, forward: Forward) -> Forward: ...


@dataclass
class RunBatch:
    """One run's part of an update."""

    slot: int
    lr: float
    tensors: dict[str, Tensor]
    kind: str = "ppo"
    """The run's kind (orch.toml ``kind``): the registry entry whose update trains it."""


@dataclass
class UpdateContext:
    """The trainer's state an update works on."""

    model: MultiLoraModel
    opt: SlotAdam
    ppo: Any
    """The trainer-wide PPOConfig (kind "ppo")."""
    action_kind: str
    generator: torch.Generator
    dist: GradSync | None = None


@dataclass
class UpdateResult:
    stats: dict[str, float] = field(default_factory=dict)
    skipped: dict[int, str] = field(default_factory=dict)  # slot -> why its update was dropped

    def merge(self, other: UpdateResult) -> None:
        self.stats = {**self.stats, **other.stats}
        self.skipped.update(other.skipped)


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


def slot_finite(opt: SlotAdam, k: int) -> bool:
    return all(bool(torch.isfinite(p[k]).all()) for p in opt.params)


def keep_finite(
    snap: SlotSnapshot, opt: SlotAdam, slots: Sequence[int], stats: dict[str, float]
) -> UpdateResult:
    """After an update: restore (and report) every slot that went non-finite."""
    result = UpdateResult(stats=stats)
    for k in slots:
        if bool(opt.skipped[k]) or not slot_finite(opt, k):
            snap.restore(k)
            result.skipped[k] = "non-finite loss or gradient: update skipped"
    opt.set_active([])
    return result
