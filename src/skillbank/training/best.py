"""Keep the best weights: one keeper for every place that restores the best-scoring
weights and observation statistics of a run (``train-base``, ``train-skills``, full
fine-tuning, the continual windows).

``BestWeights`` holds, per *member* (a LoRA slot, a full copy, or a whole parameter set),
the state and statistics of its best score offered so far; ties go to the later offer
(the longer-trained weights). ``EvalKeeper`` is the ``should_stop`` hook of ``train_ppo``
that evaluates a bank every few updates and offers each task's greedy score.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import torch
from torch import Tensor

from skillbank.algos.normalize import ObsNorm
from skillbank.tasks import TaskSpec
from skillbank.training.loop import Bank, LoraBank, evaluate_bank

S = TypeVar("S")


@dataclass
class Kept(Generic[S]):
    """What was kept for one member: its state, statistics, score and training step."""

    state: S
    norms: list[ObsNorm]
    score: float
    step: int


class BestWeights(Generic[S]):
    """Per member k: the state (``save(k)``) and statistics at its best score offered so
    far (ties: the later). ``restore(k)`` loads it back with ``load(k, state)``."""

    def __init__(self, save: Callable[[int], S], load: Callable[[int, S], None], members: int):
        self.save, self.load = save, load
        self.kept: list[Kept[S] | None] = [None] * members
        self.last_was_best = [False] * members

    @classmethod
    def of_bank(cls, bank: Bank) -> BestWeights[object]:
        """One member per task of ``bank``: its LoRA slot or its full copy."""
        if isinstance(bank, LoraBank):
            model, table = bank.model, bank.slot_table
            return BestWeights(
                lambda k: model.slot_state(int(table[k])),
                lambda k, s: model.load_slot_state(int(table[k]), s),  # type: ignore[arg-type]
                len(table),
            )
        return BestWeights(
            lambda k: {n: v.detach().clone() for n, v in bank.models[k].state_dict().items()},
            lambda k, s: bank.models[k].load_state_dict(s),  # type: ignore[arg-type]
            len(bank.models),
        )

    @classmethod
    def of_params(cls, params: Sequence[Tensor]) -> BestWeights[list[Tensor]]:
        """One member: all of ``params`` (copied back in place)."""
        plist = list(params)

        @torch.no_grad()
        def load(_: int, saved: list[Tensor]) -> None:
            for p, w in zip(plist, saved):
                p.copy_(w)

        return BestWeights(lambda _: [p.detach().clone() for p in plist], load, 1)

    def best_score(self, k: int = 0) -> float:
        kept = self.kept[k]
        return -float("inf") if kept is None else kept.score

    def offer(self, k: int, score: float, norms: Sequence[ObsNorm], step: int = 0) -> bool:
        """Keep member k's current state if ``score`` is its best so far (or ties it)."""
        best = score >= self.best_score(k)
        self.last_was_best[k] = best
        if best:
            self.kept[k] = Kept(self.save(k), [n.copy() for n in norms], score, step)
        return best

    def restore(self, k: int = 0) -> list[ObsNorm] | None:
        """Load member k's kept state; returns a copy of its kept statistics (None when
        nothing was offered)."""
        kept = self.kept[k]
        if kept is None:
            return None
        self.load(k, kept.state)
        return [n.copy() for n in kept.norms]


class EvalKeeper:
    """``should_stop`` hook for a bank of K tasks: every ``every`` updates, evaluate every
    task greedily (one batched run) and keep, per task, the weights and statistics of its
    best evaluation; ``restore`` puts them back at the end. The same rule for LoRA slots
    and full copies, so comparisons between them stay fair.

    With ``solved`` set, a task whose score reaches it on ``patience`` consecutive
    evaluations is retired: ``active()`` (``train_ppo``'s ``train_tasks``) stops training
    it, it is no longer evaluated, and the run stops once every task is retired. Without
    it, the keeper never stops the run."""

    def __init__(
        self,
        bank: Bank,
        specs: Sequence[TaskSpec],
        kind: str,
        every: int,
        episodes: int,
        seed: int,
        solved: float | None = None,
        patience: int = 2,
    ) -> None:
        self.bank, self.specs, self.kind = bank, list(specs), kind
        self.every, self.episodes, self.seed = every, episodes, seed
        self.weights = BestWeights.of_bank(bank)
        self.history: list[tuple[int, list[float]]] = []
        self.solved, self.patience = solved, patience
        self.streak = [0] * len(self.specs)
        self.retired: list[int | None] = [None] * len(self.specs)  # step it stopped training

    def active(self) -> list[bool]:
        """Per task: still trained (not retired as solved)."""
        return [r is None for r in self.retired]

    def _evaluate(self, tasks: list[int], norms: list[ObsNorm]) -> list[float]:
        """Mean greedy return of each task in ``tasks`` (one batched run)."""
        if len(tasks) == len(self.specs):
            return (
                evaluate_bank(self.bank, self.specs, norms, self.kind, self.episodes, self.seed)
                .mean(1)
                .tolist()
            )
        table = torch.tensor(tasks, dtype=torch.long)

        def forward(x: Tensor, task: Tensor) -> tuple[Tensor, Tensor]:
            return self.bank(x, table[task])

        specs, sub_norms = [self.specs[k] for k in tasks], [norms[k] for k in tasks]
        return (
            evaluate_bank(forward, specs, sub_norms, self.kind, self.episodes, self.seed)
            .mean(1)
            .tolist()
        )

    def __call__(self, row: dict, norms: list[ObsNorm]) -> bool:
        if row["update"] % self.every:
            return False
        live = [k for k, r in enumerate(self.retired) if r is None]
        scores = dict(zip(live, self._evaluate(live, norms)))
        step = int(row["steps_per_task"])
        self.history.append(
            (step, [float(scores.get(k, float("nan"))) for k in range(len(self.specs))])
        )
        for k, score in scores.items():
            self.weights.offer(k, float(score), [norms[k]], step)
            if self.solved is not None:
                self.streak[k] = self.streak[k] + 1 if score >= self.solved else 0
                if self.streak[k] >= self.patience:
                    self.retired[k] = step
        return self.solved is not None and all(r is not None for r in self.retired)

    def restore(self, norms: list[ObsNorm]) -> None:
        """Load every task's kept weights and put its statistics into ``norms[k]``."""
        for k in range(len(self.specs)):
            kept = self.weights.restore(k)
            if kept is not None:
                norms[k] = kept[0]
