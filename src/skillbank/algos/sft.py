"""Supervised fine-tuning maths (no I/O): masked negative log-likelihood."""

from __future__ import annotations

from torch import Tensor


def sft_loss(logp: Tensor, mask: Tensor) -> Tensor:
    """Mean NLL of the masked tokens; ``logp``, ``mask``: [B, T]."""
    m = mask.float()
    return -(logp * m).sum() / m.sum().clamp(min=1)
