"""Pure measures on parameter dictionaries (name -> tensor): update sparsity, per-neuron
change, top-fraction neuron sets and their Jaccard overlap, per-module cosine, correlation.

A *delta* is ``theta_after - theta_before`` with the same names and shapes as the
parameters. No I/O, no training: every function is a few tensor operations."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

Params = Mapping[str, Tensor]

ABS_TOL = 1e-7
"""A coordinate is unchanged in absolute terms when ``|change| < ABS_TOL``."""
REL_TOL = 1e-3
"""A coordinate is unchanged in relative terms when ``|change| < REL_TOL * |theta_before|``."""


def flat(params: Params, names: Sequence[str] | None = None) -> Tensor:
    """Concatenate the tensors (in ``names`` order, default insertion order) into a vector."""
    keys = list(names) if names is not None else list(params)
    return torch.cat([params[k].detach().reshape(-1) for k in keys])


def unflat(vector: Tensor, like: Params) -> dict[str, Tensor]:
    """Split a vector back into tensors shaped like ``like`` (its insertion order)."""
    out: dict[str, Tensor] = {}
    start = 0
    for k, t in like.items():
        n = t.numel()
        out[k] = vector[start : start + n].view_as(t)
        start += n
    if start != vector.numel():
        raise ValueError(f"vector has {vector.numel()} entries, the parameters {start}")
    return out


def sub(a: Params, b: Params) -> dict[str, Tensor]:
    """``a - b`` name by name."""
    return {k: a[k].detach() - b[k].detach() for k in a}


def add(a: Params, b: Params, scale: float = 1.0) -> dict[str, Tensor]:
    """``a + scale * b`` name by name."""
    return {k: a[k].detach() + scale * b[k].detach() for k in a}


@dataclass
class Sparsity:
    """Shares of coordinates an update left unchanged."""

    abs_unchanged: float
    """Share with ``|change| < 1e-7``."""
    rel_unchanged: float
    """Share with ``|change| < 1e-3 * |theta_before|``."""
    both_unchanged: float
    """Share meeting both conditions."""
    numel: int
    """Number of coordinates."""


def update_sparsity(before: Params, delta: Params, active: Params | None = None) -> Sparsity:
    """How many coordinates an update did not change (absolute and relative thresholds),
    among the ``active`` ones (boolean masks by name; default all)."""
    d = flat(delta).abs()
    t = flat(before, list(delta)).abs()
    if active is not None:
        keep = flat(active, list(delta)).bool()
        d, t = d[keep], t[keep]
    small_abs = d < ABS_TOL
    small_rel = d < REL_TOL * t
    n = d.numel()
    return Sparsity(
        float(small_abs.sum()) / n,
        float(small_rel.sum()) / n,
        float((small_abs & small_rel).sum()) / n,
        n,
    )


@dataclass
class NeuronPart:
    """One weight that belongs to a layer's neurons: neuron ``j`` owns index ``j`` of
    dimension ``dim`` of tensor ``name`` (e.g. row j of an up projection: dim 0; column j
    of a down projection: dim 1; entry j of a bias: dim 0)."""

    name: str
    dim: int


NeuronLayers = Mapping[str, Sequence[NeuronPart]]
"""layer name -> the weights whose slices make up its neurons (equal neuron counts)."""


def neuron_change(delta: Params, layers: NeuronLayers) -> dict[str, Tensor]:
    """Per layer, the change of each neuron ``[n]``: the sum of ``|delta|`` over every
    weight slice the neuron owns (e.g. an MLP channel: its gate row, up row, down column)."""
    out: dict[str, Tensor] = {}
    for layer, parts in layers.items():
        total: Tensor | None = None
        for part in parts:
            t = delta[part.name].detach().abs()
            dims = [i for i in range(t.dim()) if i != part.dim]
            per = t.sum(dim=dims) if dims else t  # [n]
            total = per if total is None else total + per
        if total is None:
            raise ValueError(f"neuron layer {layer!r} has no weights")
        out[layer] = total
    return out


def top_neurons(change: Mapping[str, Tensor], fraction: float = 0.1) -> set[tuple[str, int]]:
    """The ``fraction`` most-changed neurons of each layer (at least one per layer), as
    ``(layer, index)`` pairs."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    out: set[tuple[str, int]] = set()
    for layer, c in change.items():
        k = max(1, math.ceil(fraction * c.numel()))
        idx = torch.topk(c, k).indices.tolist()
        out.update((layer, int(i)) for i in idx)
    return out


def jaccard(a: set, b: set) -> float:
    """``|a & b| / |a | b|`` (1.0 for two empty sets)."""
    union = a | b
    return len(a & b) / len(union) if union else 1.0


def cosine(a: Tensor, b: Tensor) -> float:
    """Cosine of two vectors; NaN when either is zero."""
    na, nb = float(a.norm()), float(b.norm())
    if na == 0.0 or nb == 0.0:
        return float("nan")
    return float(a @ b) / (na * nb)


def module_of(name: str) -> str:
    """The module a parameter belongs to: its name without the last component."""
    return name.rsplit(".", 1)[0] if "." in name else name


def module_cosines(a: Params, b: Params) -> dict[str, float]:
    """Cosine per module (parameters grouped by ``module_of``) and ``"global"``."""
    groups: dict[str, list[str]] = {}
    for k in a:
        groups.setdefault(module_of(k), []).append(k)
    out = {m: cosine(flat(a, ks), flat(b, ks)) for m, ks in groups.items()}
    out["global"] = cosine(flat(a), flat(b, list(a)))
    return out


def dot(a: Params, b: Params) -> float:
    """Inner product of two parameter dictionaries."""
    return float(sum((a[k].detach() * b[k].detach()).sum() for k in a))


def pearson(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Pearson correlation (NaN with fewer than 3 finite pairs or no variance)."""
    xa, ya = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    ok = np.isfinite(xa) & np.isfinite(ya)
    xa, ya = xa[ok], ya[ok]
    if xa.size < 3 or xa.std() == 0 or ya.std() == 0:
        return float("nan")
    return float(np.corrcoef(xa, ya)[0, 1])


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation (Pearson of the ranks; ties broken by order)."""
    xa, ya = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    ok = np.isfinite(xa) & np.isfinite(ya)
    xa, ya = xa[ok], ya[ok]
    rx = np.argsort(np.argsort(xa)).astype(np.float64)
    ry = np.argsort(np.argsort(ya)).astype(np.float64)
    return pearson(rx, ry)
