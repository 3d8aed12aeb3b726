"""The evaluation schedule of a continual window."""

from __future__ import annotations

from skillbank.continual.window import Schedule


def test_schedule() -> None:
    sched = Schedule(batch=1024, updates=195, eval_updates=20)
    assert sched.steps == 199_680
    due = [u for u in range(1, 196) if sched.due(u)]
    assert due[:2] == [20, 40] and due[-2:] == [180, 195]  # and always the last update
