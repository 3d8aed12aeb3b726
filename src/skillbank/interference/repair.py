"""Sparse rollback: rank coordinates by a damage score, reset the top ones to theta_A.

All on flattened parameter vectors (``DamageInputs``). Summed over all coordinates,
``taylor`` is the second-order prediction of A's damage and ``curvature`` twice its
second-order term; resetting coordinate i gives back roughly its own share. ``conflict``
also subtracts what the reset is predicted to cost the later domains."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class DamageInputs:
    """Flattened vectors [n] a damage score may use."""

    delta: Tensor
    """theta_now - theta_A."""
    g_a: Tensor
    """grad L_A(theta_A)."""
    hd_a: Tensor
    """H_A(theta_A) delta."""
    g_b: Tensor
    """grad L_B(theta_now), L_B = the summed smooth losses of the domains trained after A."""
    hd_b: Tensor
    """H_B(theta_now) delta."""


DamageScore = Callable[[DamageInputs], Tensor]
"""inputs -> score [n]; larger = reset first."""


def curvature_score(x: DamageInputs) -> Tensor:
    """``delta_i (H_A delta)_i``: coordinate i's part of ``delta^T H_A delta``."""
    return x.delta * x.hd_a


def taylor_score(x: DamageInputs) -> Tensor:
    """``g_A,i delta_i + 1/2 delta_i (H_A delta)_i``: coordinate i's part of the
    second-order prediction of A's damage (what resetting it should give back to A)."""
    return x.g_a * x.delta + 0.5 * x.delta * x.hd_a


def conflict_score(x: DamageInputs) -> Tensor:
    """A's expected gain minus B's expected loss when coordinate i is reset: the taylor
    score minus ``-g_B,i delta_i + 1/2 delta_i (H_B delta)_i`` (B's loss expanded at
    theta_now for a step of -delta_i)."""
    return taylor_score(x) - (-x.g_b * x.delta + 0.5 * x.delta * x.hd_b)


def magnitude_score(x: DamageInputs) -> Tensor:
    """``|delta_i|``: the largest changes first (ignores both losses)."""
    return x.delta.abs()


DAMAGE_SCORES: dict[str, DamageScore] = {
    "curvature": curvature_score,
    "taylor": taylor_score,
    "conflict": conflict_score,
    "magnitude": magnitude_score,
}
"""Registry of damage scores for ``--rollback-score``."""


def count_for(fraction: float, n: int) -> int:
    """Number of coordinates in a fraction of n (at least 1 when fraction > 0)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"rollback fraction must be in [0, 1], got {fraction}")
    return 0 if fraction == 0 else max(1, math.ceil(fraction * n))


def top_coordinates(score: Tensor, count: int) -> Tensor:
    """Indices of the ``count`` largest scores."""
    return torch.topk(score, count).indices if count else torch.zeros(0, dtype=torch.long)


def random_coordinates(n: int, count: int, seed: int) -> Tensor:
    """``count`` distinct indices in [0, n) drawn with ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=gen)[:count]


def rollback(theta_now: Tensor, theta_a: Tensor, index: Tensor) -> Tensor:
    """A copy of ``theta_now`` with the coordinates ``index`` reset to ``theta_a``."""
    out = theta_now.clone()
    out[index] = theta_a[index]
    return out
