"""Gradients, Hessian-vector products and Lanczos on a loss of named parameters.

``LossFn`` maps a dictionary name -> tensor (the shared trainable parameters) to a scalar;
the Hessian is never formed: ``H v`` is one double backward (the gradient of ``g . v``).

Two ways to see how concentrated a quadratic form ``d^T H d`` is:
- ``eigen_share``: the top-k eigenpairs of H (Lanczos from a random start, by |eigenvalue|)
  and the part ``sum_i<k lambda_i (u_i . d)^2`` of ``d^T H d`` they hold;
- ``krylov_share``: Lanczos *started from d*. With T the m x m tridiagonal matrix and
  (theta_i, s_i) its eigenpairs, ``d^T H d = |d|^2 sum_i theta_i s_i[0]^2`` exactly (Gauss
  quadrature of the spectral measure of H seen from d); each Ritz direction i contributes
  ``c_i = |d|^2 theta_i s_i[0]^2``. The share of the k largest |c_i| (of sum |c_i|) is how
  much of the second-order term a k-dimensional subspace of B's update holds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from skillbank.interference.measures import flat, unflat

LossFn = Callable[[Mapping[str, Tensor]], Tensor]
MatVec = Callable[[Tensor], Tensor]


def _leaves(theta: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {k: t.detach().clone().requires_grad_(True) for k, t in theta.items()}


def loss_value(loss_fn: LossFn, theta: Mapping[str, Tensor]) -> float:
    with torch.no_grad():
        return float(loss_fn({k: t.detach() for k, t in theta.items()}))


def gradient(loss_fn: LossFn, theta: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``grad L(theta)`` as a dictionary (zeros for unused parameters)."""
    p = _leaves(theta)
    grads = torch.autograd.grad(loss_fn(p), list(p.values()), allow_unused=True)
    return {k: torch.zeros_like(t) if g is None else g for (k, t), g in zip(p.items(), grads)}


def hvp(loss_fn: LossFn, theta: Mapping[str, Tensor], v: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``H(theta) v`` by double backward."""
    p = _leaves(theta)
    params = list(p.values())
    grads = torch.autograd.grad(loss_fn(p), params, create_graph=True, allow_unused=True)
    gv = sum((g * v[k]).sum() for k, g in zip(p, grads) if g is not None)
    if not isinstance(gv, Tensor) or not gv.requires_grad:  # the loss is linear in theta
        return {k: torch.zeros_like(t) for k, t in p.items()}
    hv = torch.autograd.grad(gv, params, allow_unused=True)
    return {k: torch.zeros_like(t) if h is None else h for (k, t), h in zip(p.items(), hv)}


def flat_matvec(loss_fn: LossFn, theta: Mapping[str, Tensor]) -> MatVec:
    """``v [n] -> H(theta) v [n]`` on flattened parameters."""
    like = {k: t.detach() for k, t in theta.items()}

    def mv(v: Tensor) -> Tensor:
        return flat(hvp(loss_fn, like, unflat(v, like)))

    return mv


@dataclass
class Lanczos:
    """m steps of Lanczos: ``Q^T H Q = T`` with T tridiagonal (alpha on the diagonal,
    beta off it); Q [m, n] orthonormal rows, the first one the start vector."""

    alpha: Tensor
    beta: Tensor
    q: Tensor

    def tridiagonal(self) -> Tensor:
        m = self.alpha.numel()
        t = torch.diag(self.alpha)
        if m > 1:
            t += torch.diag(self.beta[: m - 1], 1) + torch.diag(self.beta[: m - 1], -1)
        return t

    def ritz(self) -> tuple[Tensor, Tensor]:
        """(Ritz values [m], their eigenvectors in T's basis [m, m] as columns)."""
        return torch.linalg.eigh(self.tridiagonal())


def lanczos(matvec: MatVec, start: Tensor, steps: int, tol: float = 1e-10) -> Lanczos:
    """Lanczos with full re-orthogonalisation (stops early when the Krylov space is
    invariant). Computed in float64."""
    n = start.numel()
    steps = min(steps, n)
    q = start.detach().double().reshape(-1)
    q = q / q.norm()
    qs, alphas, betas = [q], [], []
    for i in range(steps):
        w = matvec(qs[-1].to(start.dtype)).double()  # [n]
        a = float(w @ qs[-1])
        alphas.append(a)
        basis = torch.stack(qs)  # [i+1, n]
        for _ in range(2):  # full re-orthogonalisation, twice for stability
            w = w - basis.T @ (basis @ w)
        b = float(w.norm())
        if i == steps - 1 or b < tol * max(1.0, abs(a)):
            break
        betas.append(b)
        qs.append(w / b)
    m = len(alphas)
    return Lanczos(
        torch.tensor(alphas, dtype=torch.float64),
        torch.tensor(betas[: max(m - 1, 0)], dtype=torch.float64),
        torch.stack(qs[:m]),
    )


def top_eigenpairs(
    matvec: MatVec, dim: int, k: int, steps: int, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """Approximate top-k eigenpairs by |eigenvalue|: (values [k], vectors [k, dim]), from
    ``steps`` Lanczos steps with a random start."""
    gen = torch.Generator().manual_seed(seed)
    start = torch.randn(dim, generator=gen, dtype=torch.float64)
    lz = lanczos(matvec, start, max(steps, k))
    vals, vecs = lz.ritz()
    order = torch.argsort(vals.abs(), descending=True)[:k]
    return vals[order], (lz.q.T @ vecs[:, order]).T


def eigen_share(direction: Tensor, values: Tensor, vectors: Tensor, quad: float) -> list[float]:
    """Share of ``quad = d^T H d`` held by the first 1..k eigenpairs:
    ``sum_{i<=j} lambda_i (u_i . d)^2 / quad`` for j = 1..k."""
    proj = vectors @ direction.double()  # [k]
    part = torch.cumsum(values * proj**2, 0)
    return [float(p) / quad if quad != 0 else float("nan") for p in part]


def krylov_share(matvec: MatVec, direction: Tensor, steps: int) -> dict[str, Any]:
    """Resolve ``d^T H d`` into the Ritz directions of the Krylov space of H from d.

    Returns ``quad`` (= ``|d|^2 alpha_0``, exact), ``contrib`` (the c_i sorted by |c_i|,
    descending), ``share`` (cumulative sum of the sorted |c_i| / sum |c_i|, for k = 1..m:
    in [0, 1], the share of the term's mass), ``signed_share`` (cumulative sum of the
    sorted c_i / quad; the same when H is positive semi-definite, not monotone when
    positive and negative curvature cancel) and ``values`` (the Ritz values, same order)."""
    d = direction.detach().double()
    norm2 = float(d @ d)
    if norm2 == 0.0:
        return {"quad": 0.0, "contrib": [], "share": [], "signed_share": [], "values": []}
    lz = lanczos(matvec, d, steps)
    theta, s = lz.ritz()
    contrib = norm2 * theta * s[0] ** 2  # [m]
    order = torch.argsort(contrib.abs(), descending=True)
    quad = norm2 * float(lz.alpha[0])
    c = contrib[order]
    signed = (torch.cumsum(c, 0) / quad).tolist() if quad != 0 else [float("nan")] * c.numel()
    mass = float(c.abs().sum())
    share = (torch.cumsum(c.abs(), 0) / mass).tolist() if mass else [float("nan")] * c.numel()
    return {
        "quad": quad,
        "contrib": c.tolist(),
        "share": share,
        "signed_share": signed,
        "values": theta[order].tolist(),
    }
