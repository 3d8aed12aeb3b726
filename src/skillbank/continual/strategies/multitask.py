"""``multitask``: every task trained at once in one shared network (the reference).

Same single-headed network and per-task normalisers as ``finetune``; each PPO update mixes
all tasks (equal rows per task), for ``steps_per_task`` steps of every task, so the total
budget equals the sequence's. Only P (and the final scores) is defined for it.
"""

from __future__ import annotations

from skillbank.algos.normalize import ObsNorm
from skillbank.continual.strategies.base import register
from skillbank.continual.strategies.shared import SharedNetwork


@register
class Multitask(SharedNetwork):
    name = "multitask"
    description = "all tasks trained together in one shared network (reference: P only)"
    sequential = False
    shares_first_task = False

    def initial_norms(self) -> list[ObsNorm]:
        return [ObsNorm.identity(self.ctx.obs_dim) for _ in self.ctx.specs]
