"""SlotAdam: per-slot Adam equals torch.optim.Adam on one slot; other slots untouched."""

from __future__ import annotations

import pytest
import torch

from skillbank.algos.slot_adam import SlotAdam


@pytest.mark.parametrize("num_slots, slot", [(1, 0), (4, 2)])
def test_matches_torch_adam_on_one_slot(num_slots: int, slot: int) -> None:
    torch.manual_seed(0)
    init = torch.randn(num_slots, 6, 5)
    ref = init[slot].clone().requires_grad_(True)
    stacked = init.clone().requires_grad_(True)
    ref_opt = torch.optim.Adam([ref], lr=3e-3, eps=1e-5)
    opt = SlotAdam([stacked], num_slots, lr=99.0, eps=1e-5)
    opt.lr[slot] = 3e-3
    opt.set_active([slot])
    for i in range(40):
        g = torch.randn(6, 5) * (1 + i)
        ref.grad = g.clone()
        ref_opt.step()
        full = torch.randn(num_slots, 6, 5)  # other slots get gradients too: ignored
        full[slot] = g
        stacked.grad = full
        opt.step()
        assert torch.equal(stacked[slot], ref)  # bit-exact
    for k in range(num_slots):
        if k != slot:
            assert torch.equal(stacked[k], init[k])
    assert int(opt.steps[slot]) == 40 and int(opt.steps.sum()) == 40


def test_per_slot_learning_rates_and_step_counts() -> None:
    p = torch.zeros(3, 4, requires_grad=True)
    opt = SlotAdam([p], 3, eps=1e-5)
    opt.lr[:] = torch.tensor([1e-3, 1e-2, 1e-1], dtype=torch.float64)
    opt.set_active([0, 1, 2])
    p.grad = torch.ones(3, 4)
    opt.step()
    # first Adam step moves every weight by ~lr (m/sqrt(v) = 1)
    assert torch.allclose(p.detach()[:, 0], -torch.tensor([1e-3, 1e-2, 1e-1]), rtol=1e-4)
    opt.set_active([1])
    p.grad = torch.ones(3, 4)
    opt.step()
    assert opt.steps.tolist() == [1, 2, 1]


def test_nonfinite_gradient_skips_only_that_slot() -> None:
    p = torch.zeros(2, 3, requires_grad=True)
    opt = SlotAdam([p], 2)
    opt.set_active([0, 1])
    g = torch.ones(2, 3)
    g[1, 0] = float("nan")
    p.grad = g
    assert opt.skip_nonfinite() == [1]
    assert torch.equal(p.grad[1], torch.zeros(3))  # zeroed so per-slot clipping stays finite
    opt.step()
    assert bool((p[0] != 0).all()) and torch.equal(p[1], torch.zeros(3))
    assert opt.steps.tolist() == [1, 0]


def test_slot_state_roundtrip_and_reset() -> None:
    p = torch.zeros(2, 3, requires_grad=True)
    opt = SlotAdam([p], 2)
    p.grad = torch.ones(2, 3)
    opt.step()
    state = opt.slot_state(1)
    opt.reset_slot(1)
    assert int(opt.steps[1]) == 0 and float(opt.exp_avg[0][1].abs().sum()) == 0
    opt.load_slot_state(1, *state)
    assert int(opt.steps[1]) == 1 and torch.equal(opt.exp_avg[0][1], state[1][0])
    with pytest.raises(ValueError, match="slot dim"):
        SlotAdam([torch.zeros(3, 2)], 2)
