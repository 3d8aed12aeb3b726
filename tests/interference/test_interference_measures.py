import math

import pytest
import torch

from skillbank.interference.measures import (
    NeuronPart,
    flat,
    jaccard,
    module_cosines,
    neuron_change,
    pearson,
    spearman,
    top_neurons,
    unflat,
    update_sparsity,
)
from skillbank.interference.repair import (
    DamageInputs,
    conflict_score,
    count_for,
    curvature_score,
    random_coordinates,
    rollback,
    taylor_score,
    top_coordinates,
)


def test_update_sparsity_on_hand_made_delta() -> None:
    before = {"w": torch.tensor([1.0, 1.0, 1e-6, 100.0]), "b": torch.tensor([0.0, 2.0])}
    delta = {"w": torch.tensor([0.0, 0.5, 5e-8, 0.05]), "b": torch.tensor([1e-8, 1e-4])}
    s = update_sparsity(before, delta)
    # abs < 1e-7: w0, w2, b0 -> 3 of 6
    assert s.abs_unchanged == pytest.approx(3 / 6)
    # rel < 1e-3 |theta|: w0 (0 < 1e-3), w3 (0.05 < 0.1), b1 (1e-4 < 2e-3) -> 3 of 6
    assert s.rel_unchanged == pytest.approx(3 / 6)
    assert s.both_unchanged == pytest.approx(1 / 6)  # only w0
    assert s.numel == 6
    active = {"w": torch.tensor([True, True, False, False]), "b": torch.tensor([False, True])}
    m = update_sparsity(before, delta, active)  # w0, w1, b1
    assert m.numel == 3
    assert m.abs_unchanged == pytest.approx(1 / 3) and m.rel_unchanged == pytest.approx(2 / 3)


def test_neuron_change_sums_rows_and_columns() -> None:
    delta = {
        "up.weight": torch.tensor([[1.0, -1.0], [0.0, 0.5], [0.0, 0.0]]),  # [3 neurons, 2 in]
        "gate.weight": torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 0.1]]),
        "down.weight": torch.tensor([[0.0, 0.0, 3.0]]),  # [1 out, 3 neurons]
    }
    layers = {
        "mlp": [
            NeuronPart("up.weight", 0),
            NeuronPart("gate.weight", 0),
            NeuronPart("down.weight", 1),
        ]
    }
    ch = neuron_change(delta, layers)["mlp"]
    torch.testing.assert_close(ch, torch.tensor([2.0, 2.5, 3.1]))
    assert top_neurons({"mlp": ch}, 0.3) == {("mlp", 2)}  # ceil(0.9) = 1 neuron
    assert top_neurons({"mlp": ch}, 0.5) == {("mlp", 2), ("mlp", 1)}


def test_jaccard_and_cosines() -> None:
    assert jaccard({1, 2, 3}, {2, 3, 4}) == pytest.approx(2 / 4)
    assert jaccard(set(), set()) == 1.0
    a = {
        "m.weight": torch.tensor([1.0, 0.0]),
        "m.bias": torch.tensor([0.0]),
        "n.weight": torch.tensor([1.0]),
    }
    b = {
        "m.weight": torch.tensor([0.0, 1.0]),
        "m.bias": torch.tensor([0.0]),
        "n.weight": torch.tensor([2.0]),
    }
    cos = module_cosines(a, b)
    assert cos["m"] == pytest.approx(0.0)
    assert cos["n"] == pytest.approx(1.0)
    assert cos["global"] == pytest.approx(2.0 / (math.sqrt(2) * math.sqrt(5)))


def test_flat_unflat_round_trip_and_size_check() -> None:
    like = {"a": torch.zeros(2, 3), "b": torch.zeros(4)}
    v = torch.arange(10.0)
    back = unflat(v, like)
    assert back["a"].shape == (2, 3) and back["b"].tolist() == [6.0, 7.0, 8.0, 9.0]
    assert torch.equal(flat(back), v)
    with pytest.raises(ValueError, match="11 entries"):
        unflat(torch.zeros(11), like)


def test_correlations() -> None:
    assert pearson([1, 2, 3, 4], [2, 4, 6, 8.5]) > 0.99
    assert spearman([1, 2, 3, 4], [1, 10, 100, 1000]) == pytest.approx(1.0)
    assert math.isnan(pearson([1, 2], [3, 4]))


def test_rollback_resets_exactly_the_chosen_coordinates() -> None:
    now = torch.arange(10.0)
    theta_a = -torch.arange(10.0)
    idx = torch.tensor([1, 4, 7])
    out = rollback(now, theta_a, idx)
    changed = torch.nonzero(out != now).squeeze(1)
    assert changed.tolist() == [1, 4, 7]
    assert torch.equal(out[idx], theta_a[idx])
    assert torch.equal(now, torch.arange(10.0))  # input untouched


def test_rollback_rankings_and_counts() -> None:
    delta = torch.tensor([1.0, -2.0, 0.5, 3.0])
    hd = torch.tensor([1.0, -1.0, -4.0, 0.1])
    g = torch.tensor([0.0, 0.0, 1.0, -1.0])
    x = DamageInputs(delta, g, hd, g_b=torch.zeros(4), hd_b=torch.tensor([0.0, 0.0, 0.0, 1.0]))
    s = curvature_score(x)  # [1, 2, -2, 0.3]
    assert top_coordinates(s, 2).tolist() == [1, 0]
    t = taylor_score(x)  # [0.5, 1, 0.5-1, -3+0.15]
    assert top_coordinates(t, 1).tolist() == [1]
    c = conflict_score(x)  # taylor - [0, 0, 0, 1.5]
    torch.testing.assert_close(c, t - torch.tensor([0.0, 0.0, 0.0, 1.5]))
    x.g_b = torch.tensor([-1.0, 0.0, 0.0, 0.0])  # B's loss falls along delta_0: undoing costs B
    assert conflict_score(x)[0] == pytest.approx(0.5 - 1.0)
    assert count_for(0.05, 1000) == 50 and count_for(0.001, 10) == 1 and count_for(0, 10) == 0
    r = random_coordinates(100, 20, seed=3)
    assert len(set(r.tolist())) == 20 and int(r.max()) < 100
    assert torch.equal(r, random_coordinates(100, 20, seed=3))
    with pytest.raises(ValueError):
        count_for(1.5, 10)
