"""One task's training window: PPO with periodic evaluations and, optionally, the best
validated weights kept at the end.

Evaluation (the numbers the metrics use): every ``eval_every`` steps (rounded up to whole
PPO updates) and after the last update, greedy episodes with fixed seeds (``EVAL_SEED``).
Validation (only with ``keep_best``): at the same times, the task(s) being trained are
run on other fixed seeds (``VALID_SEED``); at the end of the window the weights and
statistics that scored best there (ties: the later) are restored and evaluated again at
the window's last step. PPO's last iterate on CartPole can be far below its best (measured
in docs/continual.md), which ``train-base`` handles the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from skillbank.algos.normalize import ObsNorm
from skillbank.algos.ppo import PPOConfig
from skillbank.continual.strategies.base import Context, ExtraLoss, Forward
from skillbank.tasks import TaskSpec
from skillbank.training.best import BestWeights
from skillbank.training.loop import evaluate_bank, train_ppo

EVAL_SEED = 424_242
"""Evaluation episodes use seeds derived from this (the same at every evaluation)."""
VALID_SEED = EVAL_SEED + 50_000
"""Validation episodes (for ``keep_best``) use seeds derived from this: disjoint from the
evaluation episodes."""


@dataclass
class Schedule:
    """Step bookkeeping shared by every run of an experiment."""

    batch: int
    """Env steps per task per PPO update."""
    updates: int
    """PPO updates per task."""
    eval_updates: int
    """Evaluate every this many updates."""

    @property
    def steps(self) -> int:
        """Env steps per task actually trained."""
        return self.batch * self.updates

    def due(self, update: int) -> bool:
        return update % self.eval_updates == 0 or update == self.updates


class Evaluator:
    """Greedy returns with fixed episode seeds; the time spent is summed in ``seconds``."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.seconds = 0.0

    def __call__(
        self,
        forward: Forward,
        norms: Sequence[ObsNorm],
        tasks: Sequence[int] | None = None,
        seed: int = EVAL_SEED,
    ) -> dict[str, list[float]]:
        """Mean and std of the returns of ``tasks`` (positions in the sequence; default
        all), task ``tasks[k]`` run with ``norms[k]`` and ``forward(x, tasks[k])``."""
        start = time.perf_counter()
        idx = list(tasks) if tasks is not None else list(range(self.ctx.num_tasks))
        table = torch.tensor(idx, dtype=torch.long)

        def remapped(x: Tensor, task: Tensor) -> tuple[Tensor, Tensor]:
            return forward(x, table[task])

        with torch.no_grad():
            ret = evaluate_bank(
                remapped,
                [self.ctx.specs[i] for i in idx],
                list(norms),
                self.ctx.action_kind,
                self.ctx.config.eval_episodes,
                seed,
            )
        self.seconds += time.perf_counter() - start
        return {"mean": ret.mean(1).tolist(), "std": ret.std(1).tolist()}


def train_window(
    ctx: Context,
    sched: Schedule,
    evaluator: Evaluator,
    *,
    bank: Any,
    specs: list[TaskSpec],
    ppo: PPOConfig,
    seed: int,
    init_norms: list[ObsNorm] | None,
    record: Callable[[int, list[ObsNorm]], None],
    validate: Callable[[list[ObsNorm]], float],
    on_update: Callable[[dict], None],
    extra_loss: ExtraLoss | None = None,
) -> list[ObsNorm]:
    """Train ``bank`` on ``specs`` for one window; ``record(step, live_norms)`` evaluates,
    ``validate(live_norms)`` scores for ``keep_best``. Returns the final statistics."""
    keeper = BestWeights.of_params(bank.parameters()) if ctx.config.keep_best else None

    def hook(row: dict, norms: list[ObsNorm]) -> bool:
        if sched.due(row["update"]):
            record(row["steps_per_task"], norms)
            if keeper is not None:
                keeper.offer(0, validate(norms), norms, row["steps_per_task"])
        return False

    res = train_ppo(
        bank,
        specs,
        ppo,
        ctx.action_kind,
        seed=seed,
        init_norms=init_norms,
        should_stop=hook,
        extra_loss=extra_loss,
        on_update=on_update,
    )
    kept = None if keeper is None or keeper.last_was_best[0] else keeper.restore(0)
    if kept is None:
        return list(res.norms)
    norms = kept
    record(sched.steps, norms)
    return norms


def mean_score(result: dict[str, list[float]]) -> float:
    return float(np.mean(result["mean"]))
