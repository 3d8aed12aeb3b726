"""Continual World metrics as pure functions on numpy arrays (no I/O, no torch).

Notation (Wolczyk et al., 2021, "Continual World"): T tasks trained in order, each for
``Delta`` env steps; ``p_i(t)`` is the score of task i at global step t, in [0, 1].

- R[j, i] = p_i(end of task j), the result matrix (rows: after task j; columns: task i).
- average performance  P = mean_i p_i(T) = mean of the last row of R.
- forgetting  F_i = p_i(end of task i) - p_i(T) = R[i, i] - R[T-1, i];
  F = (1/T) sum_i F_i  (over ALL T tasks, as in the paper; F_{T-1} = 0 by definition).
- forward transfer  FT_i = (AUC_i - AUC_i^ref) / (1 - AUC_i^ref), where
  AUC_i = (1/Delta) * integral of p_i over task i's training window, and AUC_i^ref the same
  for task i trained alone from scratch; FT = mean_i FT_i.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

FT_EPS = 1e-6
"""When ``1 - AUC_ref < FT_EPS`` (the reference is perfect from the first evaluation on),
FT_i is defined as 0: nothing is left to transfer."""


def auc(
    steps: Sequence[float] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    start: float,
    end: float,
) -> float:
    """Mean of the piecewise-linear curve through ``(steps, scores)`` over ``[start, end]``:
    the trapezoidal area divided by ``end - start``. Points outside the window are
    ignored; the curve is held constant before its first and after its last point inside
    the window (so a window with one point gives that point's score)."""
    if end <= start:
        raise ValueError(f"auc: empty window [{start}, {end}]")
    s = np.asarray(steps, dtype=np.float64)
    p = np.asarray(scores, dtype=np.float64)
    if s.shape != p.shape or s.ndim != 1:
        raise ValueError(f"auc: steps {s.shape} and scores {p.shape} must be equal 1-D")
    inside = (s >= start) & (s <= end)
    if not inside.any():
        raise ValueError(f"auc: no evaluation inside the window [{start}, {end}]")
    s, p = s[inside], p[inside]
    order = np.argsort(s, kind="stable")
    s, p = s[order], p[order]
    s = np.concatenate([[start], s, [end]])
    p = np.concatenate([[p[0]], p, [p[-1]]])
    area = float(np.sum((s[1:] - s[:-1]) * (p[1:] + p[:-1]) / 2.0))
    return area / (end - start)


def average_performance(final_scores: Sequence[float]) -> float:
    """P = mean_i p_i(T)."""
    p = np.asarray(final_scores, dtype=np.float64)
    if p.ndim != 1 or p.size == 0:
        raise ValueError(f"average_performance: expected a non-empty 1-D array, got {p.shape}")
    return float(p.mean())


def check_matrix(r: np.ndarray) -> np.ndarray:
    """``r`` as a float [T, T] array (ValueError otherwise)."""
    m = np.asarray(r, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] == 0:
        raise ValueError(f"result matrix must be square [T, T], got shape {m.shape}")
    return m


def forgetting_per_task(r: np.ndarray) -> np.ndarray:
    """F_i = R[i, i] - R[T-1, i] for every task i -> [T] (the last entry is 0)."""
    m = check_matrix(r)
    return np.diag(m) - m[-1]


def forgetting(r: np.ndarray) -> float:
    """F = mean over all T tasks of F_i (Continual World's definition)."""
    return float(forgetting_per_task(r).mean())


def forward_transfer_per_task(
    aucs: Sequence[float] | np.ndarray, ref_aucs: Sequence[float] | np.ndarray
) -> np.ndarray:
    """FT_i = (AUC_i - AUC_i^ref) / (1 - AUC_i^ref) -> [T]; 0 where 1 - AUC_ref < FT_EPS."""
    a = np.asarray(aucs, dtype=np.float64)
    b = np.asarray(ref_aucs, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"forward transfer: aucs {a.shape} and ref_aucs {b.shape} differ")
    room = 1.0 - b
    safe = np.where(room < FT_EPS, 1.0, room)
    return np.where(room < FT_EPS, 0.0, (a - b) / safe)


def forward_transfer(
    aucs: Sequence[float] | np.ndarray, ref_aucs: Sequence[float] | np.ndarray
) -> float:
    """FT = mean_i FT_i."""
    return float(forward_transfer_per_task(aucs, ref_aucs).mean())


def normalise_score(value: float | np.ndarray, low: float, high: float) -> np.ndarray:
    """``(value - low) / (high - low)`` clipped to [0, 1] (``high > low`` required)."""
    if not high > low:
        raise ValueError(f"normalise_score: need high > low, got low={low}, high={high}")
    return np.clip((np.asarray(value, dtype=np.float64) - low) / (high - low), 0.0, 1.0)


def bootstrap_interval(
    values: Sequence[float], level: float = 0.9, resamples: int = 10_000, seed: int = 0
) -> tuple[float, float, float]:
    """(mean, low, high): the mean over seeds and a percentile bootstrap interval at
    ``level`` (resampling the seeds with replacement ``resamples`` times). NaNs are
    dropped; one value gives (v, v, v); none gives three NaNs."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(v.mean())
    if v.size == 1:
        return mean, mean, mean
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(resamples, v.size))].mean(axis=1)
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [tail, 1.0 - tail])
    return mean, float(lo), float(hi)
