"""Running observation normalisation (per task), saved with each skill as plain JSON."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

CLIP = 10.0
EPS = 1e-8


@dataclass
class ObsNorm:
    """Running mean and variance of observations (parallel-variance update)."""

    mean: np.ndarray  # [obs_dim] float64
    var: np.ndarray  # [obs_dim] float64
    count: float = 1e-4

    @classmethod
    def identity(cls, obs_dim: int) -> ObsNorm:
        return cls(np.zeros(obs_dim), np.ones(obs_dim), 1e-4)

    def update(self, batch: np.ndarray) -> None:
        """Fold a batch ``[n, obs_dim]`` into the statistics."""
        batch = np.asarray(batch, dtype=np.float64).reshape(-1, self.mean.shape[0])
        n = batch.shape[0]
        if n == 0:
            return
        b_mean, b_var = batch.mean(0), batch.var(0)
        delta = b_mean - self.mean
        total = self.count + n
        self.mean = self.mean + delta * n / total
        m2 = self.var * self.count + b_var * n + delta**2 * self.count * n / total
        self.var = m2 / total
        self.count = total

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "var": self.var.tolist(), "count": float(self.count)}

    @classmethod
    def from_dict(cls, d: dict) -> ObsNorm:
        mean = np.asarray(d["mean"], dtype=np.float64)
        var = np.asarray(d["var"], dtype=np.float64)
        if mean.shape != var.shape or mean.ndim != 1:
            raise ValueError(f"obs_norm mean {mean.shape} and var {var.shape} must be equal 1-D")
        return cls(mean, var, float(d.get("count", 1e-4)))

    def copy(self) -> ObsNorm:
        return ObsNorm(self.mean.copy(), self.var.copy(), self.count)


def stack_norms(norms: list[ObsNorm]) -> tuple[Tensor, Tensor]:
    """(mean [K, obs_dim], inv_std [K, obs_dim]) float32 tensors for row-wise normalising."""
    mean = torch.tensor(np.stack([n.mean for n in norms]), dtype=torch.float32)
    inv_std = torch.tensor(
        1.0 / np.sqrt(np.stack([n.var for n in norms]) + EPS), dtype=torch.float32
    )
    return mean, inv_std


def normalize_rows(obs: Tensor, mean: Tensor, inv_std: Tensor, rows: Tensor) -> Tensor:
    """Normalise ``obs [B, d]`` with the statistics ``rows [B]`` picks from ``mean``/``inv_std``."""
    return ((obs - mean[rows]) * inv_std[rows]).clamp(-CLIP, CLIP)
