"""LM runs in the trainer: their rollout files and their batched GRPO update.

``rollouts/step_<N>/rollout.safetensors`` of a run of kind "lm" holds, over B sampled
completions (P prompts x G samples, right-padded to T tokens): ``tokens [B, T]`` int64
(bos + prompt + completion), ``mask [B, T]`` bool (generated tokens), ``logp [B, T]``
float32 (the sampling policy's log-prob of each generated token), ``advantages [B]`` and
``rewards [B]`` float32 (the reader adds the run's per-row settings: ``clip_eps``,
``kl_coef``, ``temperature``, the ``loss_type`` token ``weight`` and, encoded as numbers,
``clip_eps_high`` (0 = clip_eps), ``ratio_mask_low`` / ``ratio_mask_high`` (0 / inf = off)).
``meta.json``: ``policy_step``, ``recent_return`` (mean reward of
the run's last rollouts), ``reward`` (this rollout's mean). Written staged + renamed.

The update is ``skillbank.lm.grpo.grpo_step`` (the in-process loss and step) over the
rows of every ready run at once, each row through its run's slot (runs with different
clip-higher or ratio-mask settings are stepped in separate groups); a run whose update
fails or turns non-finite is restored and skipped, the others keep theirs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from skillbank.algos.grpo import loss_weights
from skillbank.algos.slot_adam import SlotAdam
from skillbank.lm.grpo import GRPOConfig, grpo_step, merge_batches
from skillbank.lora import MultiLoraModel
from skillbank.service.kinds.batch import (
    GradSync,
    RunBatch,
    SlotSnapshot,
    UpdateContext,
    UpdateResult,
    keep_finite,
)
from skillbank.service.kinds.lm.config import LMRunConfig, context_length
from skillbank.service.protocol.info import TrainerInfo
from skillbank.service.protocol.paths import RunPaths
from skillbank.service.protocol.rollout_io import (
    Rollout,
    RolloutError,
    check_keys,
    load_meta,
    load_tensors,
    write_rollout,
)

LM_KEYS = ("tokens", "mask", "logp", "advantages", "rewards")
MAX_ROWS = 100_000
SERVICE_GRPO = GRPOConfig(update_epochs=2, max_grad_norm=1.0)
"""Trainer-wide GRPO settings; the loss options come from each run's orch.toml."""
GROUP_KEYS = ("clip_eps_high", "ratio_mask_low", "ratio_mask_high")
"""Per-run settings ``grpo_step`` takes for a whole batch: runs are grouped by them."""


def write_lm_rollout(
    run: RunPaths, step: int, batch: dict[str, Tensor], meta: dict[str, Any]
) -> None:
    """Publish ``rollouts/step_<step>`` of an LM run (staged folder, then rename)."""
    write_rollout(run, step, batch, meta, LM_KEYS)


def check_lm_tensors(path: Any, t: dict[str, Tensor], vocab: int, max_len: int) -> int:
    """Raise RolloutError (file + key) unless ``t`` is a well-formed LM rollout; returns B."""
    check_keys(path, t, LM_KEYS)
    tok = t["tokens"]
    if tok.dtype != torch.int64 or tok.dim() != 2:
        raise RolloutError(path, f"{tok.dtype} {tuple(tok.shape)}, expected int64 [B, T]", "tokens")
    b, w = tok.shape
    if not 1 <= b <= MAX_ROWS or not 2 <= w <= max_len:
        raise RolloutError(
            path, f"shape {(b, w)}: need 1..{MAX_ROWS} rows, 2..{max_len} tokens", "tokens"
        )
    if bool(((tok < 0) | (tok >= vocab)).any()):
        raise RolloutError(path, f"token ids outside [0, {vocab})", "tokens")
    mask = t["mask"]
    if mask.dtype != torch.bool or tuple(mask.shape) != (b, w):
        raise RolloutError(
            path, f"{mask.dtype} {tuple(mask.shape)}, expected bool [{b}, {w}]", "mask"
        )
    if bool(mask[:, 0].any()):
        raise RolloutError(path, "position 0 (bos) cannot be a generated token", "mask")
    for key, shape in (("logp", (b, w)), ("advantages", (b,)), ("rewards", (b,))):
        x = t[key]
        if x.dtype != torch.float32 or tuple(x.shape) != shape:
            raise RolloutError(
                path, f"{x.dtype} {tuple(x.shape)}, expected float32 {list(shape)}", key
            )
        if not bool(torch.isfinite(x).all()):
            raise RolloutError(path, "holds NaN or infinite values", key)
    if bool((t["logp"] > 1e-4).any()):
        raise RolloutError(path, "log-probabilities must be <= 0", "logp")
    return b


def read_lm_rollout(run: RunPaths, step: int, cfg: LMRunConfig, info: TrainerInfo) -> Rollout:
    """Read and check an LM rollout; adds the run's per-row settings from ``cfg`` (see the
    module docstring)."""
    t_path, m_path = run.rollout_tensors(step), run.rollout_meta(step)
    tensors = load_tensors(t_path)
    kw = info.base_kwargs
    rows = check_lm_tensors(t_path, tensors, int(kw["vocab_size"]), context_length(kw))
    meta = load_meta(m_path)
    ps = meta.get("policy_step")
    if not isinstance(ps, int) or isinstance(ps, bool) or not 0 <= ps <= step:
        raise RolloutError(m_path, f"must be an int in [0, {step}], got {ps!r}", "policy_step")
    recent = meta.get("recent_return")
    if recent is not None and not isinstance(recent, (int, float)):
        raise RolloutError(m_path, f"must be a number or null, got {recent!r}", "recent_return")
    tensors["clip_eps"] = torch.full((rows,), float(cfg.clip_eps))
    tensors["kl_coef"] = torch.full((rows,), float(cfg.kl_coef))
    tensors["temperature"] = torch.full((rows,), float(cfg.temperature))
    one_slot = torch.zeros(rows, dtype=torch.long)  # weights are normalised per slot
    tensors["weight"] = loss_weights(
        one_slot, tensors["mask"], cfg.loss_type, cfg.max_new_tokens
    ).float()
    settings = (cfg.clip_eps_high or 0.0, cfg.ratio_mask_low or 0.0, cfg.ratio_mask_high)
    for key, value in zip(GROUP_KEYS, settings):
        tensors[key] = torch.full((rows,), float("inf") if value is None else float(value))
    return Rollout(step, tensors, ps, [], recent, None)


def rank_share(batch: dict[str, Tensor], rank: int, world: int) -> dict[str, Tensor]:
    """Rank ``rank``'s contiguous share of the rows of ``batch``, each row keeping its
    token weight in the whole batch (``batch["weight"]``, else the token-mean weight), so
    the ranks' loss sums add up to the full loss. A rank left without rows gets row 0 at
    weight 0 (it still joins the all_reduce)."""
    from skillbank.lm.grpo import slot_token_weights

    weight = batch.get("weight")
    if weight is None:
        weight = slot_token_weights(batch["slot"], batch["mask"].bool())  # [B]
    rows = torch.tensor_split(torch.arange(weight.shape[0]), world)[rank]
    if rows.numel() == 0:
        rows, weight = torch.zeros(1, dtype=torch.long), torch.zeros_like(weight)
    share = {k: v[rows] if v.dim() > 0 else v for k, v in batch.items()}
    share["weight"] = weight[rows]
    return share


def lm_update_runs(ctx: UpdateContext, runs: Sequence[RunBatch]) -> UpdateResult:
    """Kind "lm"'s update: one GRPO step over ``runs``."""
    return lm_update(ctx.model, ctx.opt, runs, ctx.dist)


def run_settings(r: RunBatch) -> tuple[float, ...]:
    """A run's batch-wide loss settings (``GROUP_KEYS``; absent = off)."""
    off = (0.0, 0.0, float("inf"))
    return tuple(float(r.tensors[k][0]) if k in r.tensors else d for k, d in zip(GROUP_KEYS, off))


def group_config(settings: tuple[float, ...]) -> GRPOConfig:
    """``SERVICE_GRPO`` with one group's clip-higher and ratio-mask settings."""
    high, low, mask_high = settings
    return SERVICE_GRPO.model_copy(
        update={
            "clip_eps_high": high or None,
            "ratio_mask_low": low or None,
            "ratio_mask_high": None if mask_high == float("inf") else mask_high,
        }
    )


def lm_update(
    model: MultiLoraModel, opt: SlotAdam, runs: Sequence[RunBatch], dist: GradSync | None = None
) -> UpdateResult:
    """One GRPO step over every run of ``runs`` (distinct slots), failure-isolated."""
    runs = sorted(runs, key=lambda r: r.slot)
    groups: dict[tuple[float, ...], list[RunBatch]] = {}
    for r in runs:
        groups.setdefault(run_settings(r), []).append(r)
    if len(groups) > 1:  # the same order on every rank (sorted slots)
        result = UpdateResult()
        for part in groups.values():
            one = lm_update(model, opt, part, dist)
            result.skipped.update(one.skipped)
            result.stats = result.stats or one.stats
        return result
    gcfg = group_config(next(iter(groups)))
    slots = [r.slot for r in runs]
    snap = SlotSnapshot(model, opt, slots)
    opt.set_active(slots)
    for r in runs:
        opt.lr[r.slot] = r.lr
    batch = merge_batches(
        [{k: v for k, v in r.tensors.items() if k not in GROUP_KEYS} for r in runs], slots
    )
    step_batch, reduce = batch, None
    if dist is not None:  # this rank's share of the rows; gradients summed over the ranks
        step_batch = rank_share(batch, dist.rank, dist.world_size)
        reduce = lambda: dist.all_reduce_grads(opt.params, slots)  # noqa: E731
    try:
        stats = grpo_step(model, opt, step_batch, gcfg, reduce)
    except Exception as e:  # restore, then isolate the run that fails
        for k in slots:
            snap.restore(k)
        opt.set_active([])
        if len(runs) == 1:
            return UpdateResult(skipped={slots[0]: f"update failed: {type(e).__name__}: {e}"})
        result = UpdateResult()
        for r in runs:
            one = lm_update(model, opt, [r], dist)
            result.skipped.update(one.skipped)
            result.stats = one.stats or result.stats
        return result
    stats["reward"] = float(batch["rewards"].mean())
    return keep_finite(snap, opt, slots, stats)
