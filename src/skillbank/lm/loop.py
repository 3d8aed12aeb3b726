"""What the GRPO and SFT loops share: the optimiser of the trained slot and the step loop
that collects per-step stats."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from skillbank.algos.slot_adam import SlotAdam
from skillbank.lm.model import SlotLM


def slot_optimizer(lm: SlotLM, slot: int, learning_rate: float, optimizer: Any = None) -> Any:
    """``optimizer`` if given, else Adam on ``lm``'s slot parameters with only ``slot``
    active."""
    if optimizer is not None:
        return optimizer
    opt = SlotAdam(lm.slot_parameters(), lm.mm.num_slots, lr=learning_rate)
    opt.set_active([slot])
    return opt


def run_steps(
    steps: int,
    one_step: Callable[[int], dict[str, float]],
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> list[dict[str, float]]:
    """Call ``one_step(step)`` for each of ``steps`` steps; returns their stats, each also
    passed to ``on_step(step, stats)`` when given."""
    history = []
    for step in range(steps):
        stats = one_step(step)
        history.append(stats)
        if on_step is not None:
            on_step(step, stats)
    return history
