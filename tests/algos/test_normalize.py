"""Observation normalisation: running statistics, JSON round trip, row-wise normalising."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from skillbank.algos.normalize import CLIP, EPS, ObsNorm, normalize_rows, stack_norms


def batches(seed: int = 0):
    rng = np.random.default_rng(seed)
    sizes = [1, 7, 0, 50, 3, 128]
    scale = np.array([1.0, 10.0, 0.01])
    shift = np.array([5.0, -3.0, 100.0])
    return [rng.normal(size=(n, 3)) * scale + shift for n in sizes]


def test_update_equals_numpy_of_concatenation_from_zero_count() -> None:
    norm = ObsNorm(np.zeros(3), np.ones(3), count=0.0)
    parts = batches()
    for b in parts:
        norm.update(b)
    allx = np.concatenate(parts)
    np.testing.assert_allclose(norm.mean, allx.mean(0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(norm.var, allx.var(0), rtol=1e-10, atol=1e-14)
    assert norm.count == allx.shape[0]


def test_update_from_identity_prior_counts_the_prior_as_weighted_data() -> None:
    """The identity prior (mean 0, var 1, count 1e-4) acts as a tiny weighted sample."""
    norm = ObsNorm.identity(3)
    parts = batches(seed=1)
    for b in parts:
        norm.update(b)
    allx = np.concatenate(parts)
    c0, n = 1e-4, allx.shape[0]
    mean = allx.sum(0) / (c0 + n)
    var = (c0 * (1.0 + mean**2) + ((allx - mean) ** 2).sum(0)) / (c0 + n)
    np.testing.assert_allclose(norm.mean, mean, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(norm.var, var, rtol=1e-8, atol=1e-14)
    np.testing.assert_allclose(norm.mean, allx.mean(0), rtol=1e-5)  # close to the data
    assert norm.count == pytest.approx(n + c0)


def test_update_order_and_split_do_not_matter() -> None:
    parts = batches(seed=2)
    one, many = ObsNorm(np.zeros(3), np.ones(3), 0.0), ObsNorm(np.zeros(3), np.ones(3), 0.0)
    one.update(np.concatenate(parts))
    for b in reversed(parts):
        many.update(b)
    np.testing.assert_allclose(one.mean, many.mean, rtol=1e-12)
    np.testing.assert_allclose(one.var, many.var, rtol=1e-10)


def test_empty_batch_is_a_no_op() -> None:
    norm = ObsNorm(np.array([1.0, 2.0]), np.array([3.0, 4.0]), 5.0)
    norm.update(np.zeros((0, 2)))
    assert (
        norm.count == 5.0 and norm.mean.tolist() == [1.0, 2.0] and norm.var.tolist() == [3.0, 4.0]
    )


def test_dict_round_trip_through_json() -> None:
    norm = ObsNorm.identity(3)
    for b in batches():
        norm.update(b)
    d = json.loads(json.dumps(norm.to_dict()))
    back = ObsNorm.from_dict(d)
    assert np.array_equal(back.mean, norm.mean) and np.array_equal(back.var, norm.var)
    assert back.count == norm.count
    assert back.mean.dtype == np.float64
    # a copy is independent
    c = back.copy()
    c.update(np.ones((4, 3)))
    assert np.array_equal(back.mean, norm.mean)


@pytest.mark.parametrize(
    "bad", [{"mean": [0.0, 1.0], "var": [1.0]}, {"mean": [[0.0]], "var": [[1.0]]}]
)
def test_from_dict_rejects_bad_shapes(bad: dict) -> None:
    with pytest.raises(ValueError):
        ObsNorm.from_dict(bad)


def test_stack_and_normalize_rows_per_row_stats() -> None:
    norms = [
        ObsNorm(np.array([0.0, 0.0]), np.array([1.0, 1.0]), 1.0),
        ObsNorm(np.array([1.0, -2.0]), np.array([4.0, 0.25]), 1.0),
        ObsNorm(np.array([10.0, 10.0]), np.array([1e-6, 1e-6]), 1.0),
    ]
    mean, inv_std = stack_norms(norms)
    assert mean.dtype == torch.float32 and mean.shape == (3, 2)
    torch.testing.assert_close(
        inv_std[1], torch.tensor([1 / np.sqrt(4 + EPS), 1 / np.sqrt(0.25 + EPS)]).float()
    )
    obs = torch.tensor([[3.0, 0.0], [3.0, 0.0], [3.0, 0.0], [10.0, 9.0], [-5.0, 1.0]])
    rows = torch.tensor([0, 1, 2, 2, 1])
    out = normalize_rows(obs, mean, inv_std, rows)
    want = torch.tensor(
        [
            [3.0, 0.0],
            [1.0, 4.0],  # (3-1)/2, (0+2)/0.5
            [-CLIP, -CLIP],  # (3-10)/1e-3 clipped
            [0.0, -CLIP],  # (10-10), (9-10)/1e-3 clipped
            [-3.0, 6.0],
        ]
    )
    torch.testing.assert_close(out, want, rtol=1e-4, atol=1e-4)
    big = normalize_rows(torch.tensor([[1e6, -1e6]]), mean, inv_std, torch.tensor([0]))
    assert big.tolist() == [[CLIP, -CLIP]] and CLIP == 10.0
