import pytest
import torch
from interference_toy import mlp
from torch.autograd.functional import hessian

from skillbank.interference.hessian import (
    eigen_share,
    flat_matvec,
    gradient,
    hvp,
    krylov_share,
    lanczos,
    top_eigenpairs,
)
from skillbank.interference.measures import flat, unflat


def _tiny() -> tuple[dict, object]:
    gen = torch.Generator().manual_seed(1)
    theta = {
        "l1.weight": torch.randn(8, 4, generator=gen),
        "l2.weight": torch.randn(3, 8, generator=gen),
    }
    x, y = torch.randn(16, 4, generator=gen), torch.randn(16, 3, generator=gen)

    def loss(p: dict) -> torch.Tensor:
        return ((mlp(p, x) - y) ** 2).mean()

    return theta, loss


def test_hvp_matches_explicit_hessian() -> None:
    theta, loss = _tiny()
    like = {k: t for k, t in theta.items()}
    h = hessian(lambda v: loss(unflat(v, like)), flat(theta))  # [n, n]
    v = torch.randn(h.shape[0], generator=torch.Generator().manual_seed(2))
    got = flat(hvp(loss, theta, unflat(v, like)))
    torch.testing.assert_close(got, h @ v, rtol=1e-4, atol=1e-5)
    g = flat(gradient(loss, theta))
    ref = torch.func.grad(lambda t: loss(unflat(t, like)))(flat(theta))
    torch.testing.assert_close(g, ref)


def test_hvp_of_unused_parameter_is_zero() -> None:
    theta, loss = _tiny()
    theta["unused"] = torch.ones(5)
    hv = hvp(loss, theta, {k: torch.ones_like(t) for k, t in theta.items()})
    assert torch.equal(hv["unused"], torch.zeros(5))
    assert hv["l1.weight"].abs().sum() > 0


def _sym(n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(n, n, generator=gen, dtype=torch.float64)
    return (a + a.T) / 2


def test_lanczos_top_eigenvalues_match_eigvalsh() -> None:
    m = _sym(30, 0)
    # a few well-separated large eigenvalues on top of the random bulk
    q, _ = torch.linalg.qr(
        torch.randn(30, 30, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    )
    m = (
        m
        + q[:, :3] @ torch.diag(torch.tensor([40.0, -30.0, 20.0], dtype=torch.float64)) @ q[:, :3].T
    )
    ref = torch.linalg.eigvalsh(m)
    ref_top = ref[torch.argsort(ref.abs(), descending=True)[:3]]
    vals, vecs = top_eigenpairs(lambda v: m @ v, 30, 3, steps=20, seed=0)
    torch.testing.assert_close(vals, ref_top, rtol=1e-6, atol=1e-6)
    for lam, u in zip(vals, vecs):  # eigenvectors: m u = lam u
        torch.testing.assert_close(m @ u, lam * u, rtol=1e-5, atol=1e-5)
    full, _ = lanczos(lambda v: m @ v, torch.ones(30, dtype=torch.float64), 30).ritz()
    torch.testing.assert_close(full, ref, rtol=1e-8, atol=1e-8)


def test_krylov_share_is_exact_and_low_dimensional() -> None:
    n = 20
    q, _ = torch.linalg.qr(
        torch.randn(n, n, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    )
    lam = torch.linspace(1.0, 10.0, n, dtype=torch.float64)
    h = q @ torch.diag(lam) @ q.T
    d = 3.0 * q[:, -1] + 0.5 * q[:, 0]  # two eigen-directions
    out = krylov_share(lambda v: h @ v, d, steps=8)
    quad = float(d @ h @ d)
    assert abs(out["quad"] - quad) < 1e-9
    assert abs(out["share"][-1] - 1.0) < 1e-9
    assert len(out["share"]) == 2  # Krylov space from d is 2-dimensional
    assert abs(out["share"][0] - 9.0 * 10.0 / quad) < 1e-9  # the lambda=10 direction
    # eigen share with the exact top eigenpairs agrees
    es = eigen_share(d, lam.flip(0)[:1], q[:, -1:].T, quad)
    assert abs(es[0] - out["share"][0]) < 1e-9


def test_flat_matvec_matches_hvp_on_model() -> None:
    theta, loss = _tiny()
    mv = flat_matvec(loss, theta)
    v = torch.randn(flat(theta).numel(), generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(mv(v), flat(hvp(loss, theta, unflat(v, theta))))


def test_krylov_share_with_indefinite_curvature() -> None:
    h = torch.diag(torch.tensor([3.0, -2.0, 0.5], dtype=torch.float64))
    d = torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64)
    out = krylov_share(lambda v: h @ v, d, steps=3)
    assert out["quad"] == pytest.approx(1.5)
    assert out["contrib"] == pytest.approx([3.0, -2.0, 0.5])
    assert out["share"] == pytest.approx([3 / 5.5, 5 / 5.5, 1.0])  # mass: monotone, ends at 1
    assert out["signed_share"] == pytest.approx([2.0, 1 / 1.5, 1.0])  # cancels: not monotone
