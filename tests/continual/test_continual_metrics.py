"""Continual World metrics on small hand-made matrices and curves (values by hand)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from skillbank.continual import metrics

R = np.array(
    [
        [0.9, 0.1, 0.0],
        [0.2, 0.8, 0.1],
        [0.3, 0.4, 1.0],
    ]
)


def test_auc_trapezoid() -> None:
    # 0 -> 1 over [0, 50] (area 25), then 1 over [50, 100] (area 50): 75 / 100
    assert metrics.auc([0, 50, 100], [0.0, 1.0, 1.0], 0, 100) == pytest.approx(0.75)
    # the same curve in a later window; points outside it are ignored
    steps, vals = [0, 100, 150, 200, 250], [1.0, 0.0, 1.0, 1.0, 0.0]
    assert metrics.auc(steps, vals, 100, 200) == pytest.approx(0.75)


def test_auc_holds_ends_constant() -> None:
    # 0.2 on [0, 10] (2), mean 0.4 on [10, 90] (32), 0.6 on [90, 100] (6): 40 / 100
    assert metrics.auc([10, 90], [0.2, 0.6], 0, 100) == pytest.approx(0.4)
    assert metrics.auc([50], [0.3], 0, 100) == pytest.approx(0.3)


def test_auc_bad_input() -> None:
    with pytest.raises(ValueError, match="empty window"):
        metrics.auc([0], [1.0], 5, 5)
    with pytest.raises(ValueError, match="no evaluation"):
        metrics.auc([0, 1], [1.0, 1.0], 5, 10)


def test_average_performance_is_mean_of_last_row() -> None:
    assert metrics.average_performance(R[-1]) == pytest.approx((0.3 + 0.4 + 1.0) / 3)


def test_forgetting() -> None:
    # F_i = R[i, i] - R[T-1, i] = [0.9 - 0.3, 0.8 - 0.4, 1.0 - 1.0]
    assert metrics.forgetting_per_task(R) == pytest.approx([0.6, 0.4, 0.0])
    assert metrics.forgetting(R) == pytest.approx(1.0 / 3.0)  # mean over all 3 tasks
    # no forgetting when every column keeps its diagonal value
    kept = np.array([[1.0, 0.2], [1.0, 0.7]])
    assert metrics.forgetting(kept) == 0.0
    # improving later counts as negative forgetting (backward transfer)
    assert metrics.forgetting(np.array([[0.5, 0.0], [0.9, 1.0]])) == pytest.approx(-0.2)
    with pytest.raises(ValueError, match="square"):
        metrics.forgetting(np.zeros((2, 3)))


def test_forward_transfer() -> None:
    # task 0: same AUC as the reference -> 0; task 1: (0.8 - 0.6) / (1 - 0.6) = 0.5
    assert metrics.forward_transfer_per_task([0.5, 0.8], [0.5, 0.6]) == pytest.approx([0.0, 0.5])
    assert metrics.forward_transfer([0.5, 0.8], [0.5, 0.6]) == pytest.approx(0.25)
    # slower than the reference: (0.2 - 0.6) / 0.4 = -1
    assert metrics.forward_transfer([0.2], [0.6]) == pytest.approx(-1.0)
    # a perfect reference leaves nothing to transfer: defined as 0, not a division by 0
    assert metrics.forward_transfer([1.0], [1.0]) == 0.0


def test_normalise_score_clips() -> None:
    out = metrics.normalise_score(np.array([-10.0, 250.0, 600.0]), 0.0, 500.0)
    assert out == pytest.approx([0.0, 0.5, 1.0])
    assert metrics.normalise_score(-150.0, -200.0, -100.0) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="high > low"):
        metrics.normalise_score(1.0, 2.0, 2.0)


def test_bootstrap_interval() -> None:
    assert metrics.bootstrap_interval([0.4, 0.4, 0.4]) == pytest.approx((0.4, 0.4, 0.4))
    assert metrics.bootstrap_interval([0.7]) == (0.7, 0.7, 0.7)
    # two seeds 0 and 1: resampled means are 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4,
    # so the 5% and 95% quantiles are 0 and 1
    mean, lo, hi = metrics.bootstrap_interval([0.0, 1.0])
    assert (mean, lo, hi) == pytest.approx((0.5, 0.0, 1.0))
    mean, lo, hi = metrics.bootstrap_interval([0.1, 0.2, 0.3, float("nan")])
    assert mean == pytest.approx(0.2) and 0.1 <= lo <= 0.2 <= hi <= 0.3
    assert all(math.isnan(v) for v in metrics.bootstrap_interval([]))
