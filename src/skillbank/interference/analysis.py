"""Measurements for one pair (earlier domain A, later domain B) and the cumulative damage.

Notation: ``start`` = the shared parameters when B's training began, ``end`` = when it
ended, ``d_B = end - start``; ``d_A`` = A's own update. The Taylor expansion of A's loss
is taken at ``start`` (= theta_A when B comes right after A):

    D = L_A(end) - L_A(start) ~ g_A . d_B + 1/2 d_B^T H_A d_B,

g_A and H_A at ``start``; every Hessian product is a Hessian-vector product."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from skillbank.interference.hessian import (
    LossFn,
    eigen_share,
    flat_matvec,
    gradient,
    hvp,
    krylov_share,
    loss_value,
    top_eigenpairs,
)
from skillbank.interference.measures import (
    add,
    dot,
    flat,
    jaccard,
    module_cosines,
    neuron_change,
    sub,
    top_neurons,
    update_sparsity,
)
from skillbank.interference.setting import Setting

Theta = Mapping[str, Tensor]


def eigenpairs(loss: LossFn, theta: Theta, k: int, steps: int, seed: int) -> tuple[Tensor, Tensor]:
    """Top-k eigenpairs (by |value|) of H_A at ``theta``: (values [k], vectors [k, n])."""
    n = sum(t.numel() for t in theta.values())
    return top_eigenpairs(flat_matvec(loss, theta), n, k, steps, seed)


def taylor_terms(loss: LossFn, start: Theta, end: Theta) -> dict[str, float]:
    """Measured damage of ``loss`` from ``start`` to ``end`` and its two Taylor terms."""
    d = sub(end, start)
    g = gradient(loss, start)
    hd = hvp(loss, start, d)
    first, second = dot(g, d), 0.5 * dot(d, hd)
    measured = loss_value(loss, end) - loss_value(loss, start)
    return {
        "loss_start": loss_value(loss, start),
        "measured": measured,
        "first_order": first,
        "second_order": second,
        "predicted": first + second,
        "grad_update_cos": module_cosines(g, d)["global"],
    }


LINE_STEPS = (0.1, 0.25, 0.5, 1.0)
"""Fractions t of B's update at which the quadratic model is checked."""


def line_check(
    loss: LossFn, theta: Theta, d: Mapping[str, Tensor], first: float, second: float
) -> list[dict[str, float]]:
    """Measured ``L(theta + t d) - L(theta)`` next to ``t g.d + t^2 1/2 d^T H d`` for the
    fractions ``LINE_STEPS``: where along B's update the second-order model holds."""
    base = loss_value(loss, theta)
    return [
        {
            "t": t,
            "measured": loss_value(loss, add(theta, d, t)) - base,
            "predicted": t * first + t * t * second,
        }
        for t in LINE_STEPS
    ]


def neuron_sets(setting: Setting, before: Theta, after: Theta, fraction: float) -> set:
    """The top ``fraction`` most-changed neurons of each layer from ``before`` to ``after``."""
    eff_b, eff_a = setting.effective(before), setting.effective(after)
    return top_neurons(neuron_change(sub(eff_a, eff_b), setting.neuron_layers), fraction)


def measure_pair(
    setting: Setting,
    loss_a: LossFn,
    loss_b: LossFn,
    a_span: tuple[Theta, Theta],
    b_span: tuple[Theta, Theta],
    *,
    neuron_fraction: float,
    krylov_steps: int,
    eig: tuple[Tensor, Tensor],
) -> dict[str, Any]:
    """Every measure of one (A, B) pair. The damage is B's update applied at theta_A
    (the design's D = L_A(theta_A + d_B) - L_A(theta_A); the same point as the real one
    when B follows A), its Taylor terms at theta_A; ``path`` holds the same along the real
    trajectory (from the start to the end of B, expanded at the start). ``eig``: H_A's top
    eigenpairs at theta_A."""
    theta_a = a_span[1]
    start, end = b_span
    d_a, d_b = sub(a_span[1], a_span[0]), sub(end, start)
    out: dict[str, Any] = taylor_terms(loss_a, theta_a, add(theta_a, d_b))
    out["line"] = line_check(loss_a, theta_a, d_b, out["first_order"], out["second_order"])
    out["path"] = taylor_terms(loss_a, start, end)
    out["grad_cos"] = module_cosines(gradient(loss_a, start), gradient(loss_b, start))
    out["update_cos"] = module_cosines(d_a, d_b)
    out["sparsity_b"] = vars(update_sparsity(start, d_b, setting.active))
    set_a = neuron_sets(setting, *a_span, neuron_fraction)
    set_b = neuron_sets(setting, start, end, neuron_fraction)
    out["neuron_jaccard"] = jaccard(set_a, set_b)
    out["neuron_jaccard_random"] = neuron_fraction / (2 - neuron_fraction)
    out["d_b_norm"] = float(flat(d_b).norm())
    kry = krylov_share(flat_matvec(loss_a, theta_a), flat(d_b), krylov_steps)
    out["krylov"] = kry
    quad = float(kry["quad"])  # d^T H_A d = 2 x second-order term
    out["eigen_share"] = eigen_share(flat(d_b), eig[0], eig[1], quad)
    out["eigen_values"] = eig[0].tolist()
    return out


def summarize_pairs(pairs: list[dict[str, Any]]) -> dict[str, float]:
    """Correlations across pairs of predicted and measured damage."""
    from skillbank.interference.measures import pearson, spearman

    meas = [p["measured"] for p in pairs]
    out = {
        "pearson_second_order": pearson([p["second_order"] for p in pairs], meas),
        "pearson_predicted": pearson([p["predicted"] for p in pairs], meas),
        "pearson_first_order": pearson([p["first_order"] for p in pairs], meas),
        "spearman_predicted": spearman([p["predicted"] for p in pairs], meas),
        "n": float(len(pairs)),
    }
    return out
