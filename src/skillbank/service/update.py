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

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from skillbank.algos.ppo import PPOConfig, clip_grad_norm_per_slot, ppo_update
from skillbank.lora import MultiLoraModel
from skillbank.service.slot_adam import SlotAdam
from skillbank.train import LoraBank


@dataclass
class RunBatch:
    """One run's part of an update."""

    slot: int
    lr: float
    tensors: dict[str, Tensor]


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
) -> UpdateResult:
    """Update every run of ``runs`` (distinct slots) in one PPO update."""
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
    params = opt.params

    def clip(max_norm: float) -> None:
        opt.skip_nonfinite()
        clip_grad_norm_per_slot(params, max_norm)

    try:
        stats = ppo_update(
            bank,
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
            one = batched_update(model, opt, [r], cfg, action_kind, generator)
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
