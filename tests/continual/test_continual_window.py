"""Keeping the best validated weights of a window; the evaluation schedule."""

from __future__ import annotations

import torch

from skillbank.algos.normalize import ObsNorm
from skillbank.continual.window import BestKeeper, Schedule


def test_best_keeper_restores_the_best_and_prefers_later_ties() -> None:
    w = torch.nn.Parameter(torch.zeros(2))
    keeper = BestKeeper([w])
    for value, score in [(1.0, 0.2), (2.0, 0.9), (3.0, 0.5)]:
        with torch.no_grad():
            w.fill_(value)
        keeper.offer(score, [ObsNorm.identity(2)])
    assert not keeper.last_was_best
    norms = keeper.restore()
    assert w.tolist() == [2.0, 2.0] and len(norms) == 1
    with torch.no_grad():
        w.fill_(4.0)
    keeper.offer(0.9, [ObsNorm(torch.ones(2).numpy(), torch.ones(2).numpy(), 3.0)])
    assert keeper.last_was_best  # a tie goes to the later weights
    assert keeper.restore()[0].count == 3.0 and w.tolist() == [4.0, 4.0]


def test_schedule() -> None:
    sched = Schedule(batch=1024, updates=195, eval_updates=20)
    assert sched.steps == 199_680
    due = [u for u in range(1, 196) if sched.due(u)]
    assert due[:2] == [20, 40] and due[-2:] == [180, 195]  # and always the last update
