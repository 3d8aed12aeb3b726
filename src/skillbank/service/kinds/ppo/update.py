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

import torch

from skillbank.algos.ppo import PPOConfig, clip_grad_norm_per_slot, ppo_update
from skillbank.algos.slot_adam import SlotAdam
from skillbank.lora import MultiLoraModel
from skillbank.service.kinds.batch import (
    GradSync,
    RunBatch,
    SlotSnapshot,
    UpdateContext,
    UpdateResult,
    keep_finite,
)
from skillbank.service.kinds.ppo.config import PPORunConfig
from skillbank.service.protocol.info import TrainerInfo
from skillbank.service.protocol.paths import RunPaths
from skillbank.service.protocol.rollout_io import Rollout, read_rollout
from skillbank.training.loop import LoraBank


def read_ppo_rollout(run: RunPaths, step: int, cfg: PPORunConfig, info: TrainerInfo) -> Rollout:
    """Read and check a PPO rollout against the trainer's base (kind "ppo"'s reader)."""
    kw = info.base_kwargs
    obs_dim, action_dim = int(kw.get("obs_dim", 0)), int(kw.get("action_dim", 0))
    return read_rollout(run, step, obs_dim, str(kw.get("action_kind")), action_dim)


def ppo_update_runs(ctx: UpdateContext, runs: Sequence[RunBatch]) -> UpdateResult:
    """Kind "ppo"'s update: one batched PPO update over ``runs``."""
    return batched_update(
        ctx.model, ctx.opt, runs, ctx.ppo, ctx.action_kind, ctx.generator, ctx.dist
    )


def batched_update(
    model: MultiLoraModel,
    opt: SlotAdam,
    runs: Sequence[RunBatch],
    cfg: PPOConfig,
    action_kind: str,
    generator: torch.Generator,
    dist: GradSync | None = None,
) -> UpdateResult:
    """Update every run of ``runs`` (distinct slots) in one PPO update. With ``dist`` (a
    trainer on several ranks, see ``service.dist``) each rank computes its share of every
    minibatch's rows and the slot gradients are summed over the ranks before clipping."""
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
            opt,  # duck-typed: zero_grad() and step()
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
    return keep_finite(snap, opt, slots, stats)
