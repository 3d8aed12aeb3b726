"""GRPO-style policy-gradient maths on tensors (no I/O): group-relative advantages, the
token-level clipped surrogate with TRL's loss normalisations, and the KL penalty.

Names follow TRL's ``GRPOConfig``: ``scale_rewards`` ("group", "batch", "none") and
``loss_type``:

- ``grpo``: each completion's token mean, then the mean over completions;
- ``bnpo`` / ``dapo``: the sum over all completion tokens / their number (token level;
  ``dapo`` is TRL's name when the count spans the whole accumulated batch, which is what
  one batch here is);
- ``dr_grpo``: the token sum / (completions x ``max_completion_length``).

With several slots in one batch, each slot's rows are normalised on their own, so every
slot weighs 1 in total whatever its share of the batch (``loss_weights``).
"""

from __future__ import annotations

import torch
from torch import Tensor

LOSS_TYPES: tuple[str, ...] = ("grpo", "bnpo", "dapo", "dr_grpo")
SCALE_REWARDS: tuple[str, ...] = ("group", "batch", "none")


def group_advantages(
    rewards: Tensor, group_size: int, scale_std: bool = False, scale: str = "none"
) -> Tensor:
    """A = r - mean of its group (rows are groups of ``group_size`` consecutive samples),
    divided by the group's std (``scale="group"`` or ``scale_std``), the batch's std
    (``"batch"``) or nothing (``"none"``)."""
    if scale not in SCALE_REWARDS:
        raise ValueError(f"scale_rewards {scale!r}: expected one of {SCALE_REWARDS}")
    r = rewards.view(-1, group_size)  # [P, G]
    adv = r - r.mean(1, keepdim=True)
    if scale_std or scale == "group":
        adv = adv / (r.std(1, keepdim=True) + 1e-4)
    elif scale == "batch":
        adv = adv / (r.std() + 1e-4)
    return adv.reshape(-1)  # [P*G]


def _per_slot(slot: Tensor, values: Tensor) -> Tensor:
    """[B]: the sum of ``values`` over the rows sharing each row's slot."""
    uniq, inv = torch.unique(slot, return_inverse=True)
    totals = torch.zeros(len(uniq), dtype=values.dtype).index_add_(0, inv, values)
    return totals[inv]


def slot_token_weights(slot: Tensor, mask: Tensor) -> Tensor:
    """[B]: 1 / (number of completion tokens of all rows sharing the row's slot)."""
    return 1.0 / _per_slot(slot.cpu(), mask.float().sum(1).cpu()).clamp(min=1)


def loss_weights(
    slot: Tensor, mask: Tensor, loss_type: str = "dapo", max_completion_length: int = 0
) -> Tensor:
    """[B] per-row token weights for ``grpo_loss`` implementing ``loss_type`` per slot."""
    if loss_type in ("bnpo", "dapo"):
        return slot_token_weights(slot, mask)
    rows = _per_slot(slot.cpu(), torch.ones(slot.shape[0]))
    if loss_type == "grpo":
        return 1.0 / (rows * mask.float().sum(1).cpu().clamp(min=1))
    if loss_type == "dr_grpo":
        length = max_completion_length or int(mask.shape[1])
        return torch.full_like(rows, 1.0) / (rows * length)
    raise ValueError(f"loss_type {loss_type!r}: expected one of {LOSS_TYPES}")


def grpo_loss(
    logp: Tensor,
    old_logp: Tensor,
    adv: Tensor,
    mask: Tensor,
    weight: Tensor,
    clip_eps: float | Tensor,
    kl_coef: float | Tensor = 0.0,
    ref_logp: Tensor | None = None,
    clip_eps_high: float | Tensor | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """GRPO loss over tokens. ``logp``/``old_logp``/``ref_logp``/``mask``: [B, T];
    ``adv``: [B]; ``weight``: [B] (``loss_weights``); ``clip_eps`` (and the upper bound
    ``clip_eps_high``, DAPO's clip-higher, default = ``clip_eps``) and ``kl_coef``: one
    value or one per row [B] (runs of the service). The KL term is the k3 estimator
    exp(ref - logp) - (ref - logp) - 1 of KL(pi || ref), weighted like the surrogate."""
    m = mask.float()
    w = weight[:, None] * m  # [B, T]
    ratio = torch.exp(logp - old_logp)  # [B, T]
    a = adv[:, None]
    eps = torch.as_tensor(clip_eps, dtype=logp.dtype).reshape(-1, 1)  # [B or 1, 1]
    high = eps if clip_eps_high is None else torch.as_tensor(clip_eps_high, dtype=logp.dtype)
    high = high.reshape(-1, 1)
    surr = torch.minimum(ratio * a, torch.clamp(ratio, 1 - eps, 1 + high) * a)
    loss = -(surr * w).sum()
    stats = {}
    if ref_logp is not None:
        beta = torch.as_tensor(kl_coef, dtype=logp.dtype).reshape(-1, 1)  # [B or 1, 1]
        d = ref_logp - logp
        kl = torch.exp(d) - d - 1  # [B, T]
        loss = loss + (beta * kl * w).sum()
        stats["kl"] = float((kl.detach() * m).sum() / m.sum().clamp(min=1))
    with torch.no_grad():
        n = m.sum().clamp(min=1)
        clipped = (ratio < 1 - eps) | (ratio > 1 + high)
        stats["clip_frac"] = float((clipped.float() * m).sum() / n)
        stats["ratio_mean"] = float((ratio * m).sum() / n)
    return loss, stats


def ratio_mask(logp: Tensor, old_logp: Tensor, mask: Tensor, low: float, high: float) -> Tensor:
    """prime-rl's importance-ratio masking: ``mask`` without the tokens whose ratio
    pi / pi_old lies outside [low, high] (they carry no gradient at all)."""
    ratio = torch.exp(logp.detach() - old_logp)
    return mask & (ratio >= low) & (ratio <= high)
