"""The one best-weights keeper: parameter sets, LoRA slots and full copies."""

from __future__ import annotations

import torch

from skillbank.algos.normalize import ObsNorm
from skillbank.lora import MultiLoraModel
from skillbank.training.best import BestWeights
from skillbank.training.loop import FullBank, LoraBank


def test_params_keeper_restores_the_best_and_prefers_later_ties() -> None:
    w = torch.nn.Parameter(torch.zeros(2))
    keeper = BestWeights.of_params([w])
    for value, score in [(1.0, 0.2), (2.0, 0.9), (3.0, 0.5)]:
        with torch.no_grad():
            w.fill_(value)
        keeper.offer(0, score, [ObsNorm.identity(2)], step=int(value))
    assert not keeper.last_was_best[0]
    norms = keeper.restore(0)
    assert norms is not None and len(norms) == 1
    assert w.tolist() == [2.0, 2.0] and keeper.kept[0] is not None and keeper.kept[0].step == 2
    with torch.no_grad():
        w.fill_(4.0)
    keeper.offer(0, 0.9, [ObsNorm(torch.ones(2).numpy(), torch.ones(2).numpy(), 3.0)])
    assert keeper.last_was_best[0]  # a tie goes to the later weights
    norms = keeper.restore(0)
    assert norms is not None and norms[0].count == 3.0 and w.tolist() == [4.0, 4.0]


def test_nothing_offered_restores_nothing() -> None:
    w = torch.nn.Parameter(torch.ones(3))
    keeper = BestWeights.of_params([w])
    assert keeper.restore(0) is None and keeper.best_score(0) == -float("inf")


def test_bank_keeper_is_per_member() -> None:
    torch.manual_seed(0)
    nets = [torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)]
    keeper = BestWeights.of_bank(FullBank(nets))
    before = [n.weight.detach().clone() for n in nets]
    keeper.offer(0, 1.0, [ObsNorm.identity(2)])
    keeper.offer(1, 1.0, [ObsNorm.identity(2)])
    with torch.no_grad():
        for n in nets:
            n.weight.add_(1.0)
    keeper.offer(0, 2.0, [ObsNorm.identity(2)])  # member 0 improves, member 1 does not
    keeper.offer(1, 0.5, [ObsNorm.identity(2)])
    keeper.restore(0)
    keeper.restore(1)
    assert torch.equal(nets[0].weight, before[0] + 1.0)
    assert torch.equal(nets[1].weight, before[1])


def test_lora_bank_keeper_restores_slots() -> None:
    torch.manual_seed(0)
    base = torch.nn.Sequential(torch.nn.Linear(3, 4))
    model = MultiLoraModel(base, 2, 2)
    gen = torch.Generator().manual_seed(0)
    for k in range(2):
        model.reset_slot(k, 2, 4.0, generator=gen)
    keeper = BestWeights.of_bank(LoraBank(model, [1, 0]))
    saved = model.slot_state(1)
    other = model.slot_state(0)
    keeper.offer(0, 1.0, [ObsNorm.identity(3)])  # task 0 = slot 1
    with torch.no_grad():
        for p in model.slot_parameters():
            p.add_(0.5)
    keeper.restore(0)
    for name, (a, b, _) in model.slot_state(1).items():
        assert torch.equal(a, saved[name][0]) and torch.equal(b, saved[name][1])
    for name, (a, _, _) in model.slot_state(0).items():  # slot 0 is not task 0's: unchanged
        assert torch.allclose(a, other[name][0] + 0.5)
