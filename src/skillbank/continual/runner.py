"""Run one strategy on one seed: the task sequence, evaluations, per-task state.

Evaluation: every ``eval_every`` steps (rounded up to whole PPO updates), at the start of
each task (after the strategy prepared it) and after its last update, every task of the
sequence is run greedily for ``eval_episodes`` episodes with fixed seeds; a task not yet
trained is evaluated with the statistics the strategy would start it from.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from skillbank.continual.checkpoint import latest_state, load_state, save_state
from skillbank.continual.paths import RunPaths, stable_file
from skillbank.continual.progress import ContinualProgress
from skillbank.continual.strategies.base import Context, Forward, Strategy
from skillbank.models import ActorCritic, ActorCriticConfig
from skillbank.normalize import ObsNorm
from skillbank.train import FullBank, evaluate_bank, train_ppo

EVAL_SEED = 424_242
"""Evaluation episodes use seeds derived from this (the same at every evaluation)."""


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
    """Greedy returns of every task with fixed episode seeds; time spent is summed."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.seconds = 0.0

    def __call__(
        self, forward: Forward, norms: list[ObsNorm], tasks: list[int] | None = None
    ) -> dict:
        start = time.perf_counter()
        idx = tasks if tasks is not None else list(range(self.ctx.num_tasks))
        specs = [self.ctx.specs[i] for i in idx]
        with torch.no_grad():
            ret = evaluate_bank(
                forward,
                specs,
                norms,
                self.ctx.action_kind,
                self.ctx.config.eval_episodes,
                EVAL_SEED,
            )
        self.seconds += time.perf_counter() - start
        return {"mean": ret.mean(1).tolist(), "std": ret.std(1).tolist()}


def new_network(ctx: Context, seed: int) -> ActorCritic:
    torch.manual_seed(seed)
    return ActorCritic(
        ActorCriticConfig(ctx.obs_dim, ctx.action_kind, ctx.action_dim, list(ctx.config.hidden))
    )


def eval_hook(
    sched: Schedule, record: Callable[[int, list[ObsNorm]], None]
) -> Callable[[dict, list[ObsNorm]], bool]:
    """A ``should_stop`` for ``train_ppo`` that never stops and records evaluations."""

    def hook(row: dict, norms: list[ObsNorm]) -> bool:
        if sched.due(row["update"]):
            record(row["steps_per_task"], norms)
        return False

    return hook


def first_task(
    ctx: Context, sched: Schedule, paths: RunPaths, progress: ContinualProgress, bar: str
) -> tuple[nn.Module, ObsNorm, dict[str, Any]]:
    """Task 0 as a full network from the seed's init, trained once per seed (cached)."""
    folder = paths.first_task(ctx.seed)
    net = new_network(ctx, ctx.seed)
    if stable_file(folder).is_file():
        tensors, norms, done = load_state(folder)
        net.load_state_dict(tensors)
        progress.skip(bar, sched.steps)
        return net, norms[0], done
    evaluator = Evaluator(ctx)
    evals: list[dict] = []
    forward: Forward = lambda x, task: net(x)  # noqa: E731

    def record(step: int, live: list[ObsNorm]) -> None:
        evals.append({"phase": 0, "step": step, **evaluator(forward, live * ctx.num_tasks)})

    start = time.perf_counter()
    record(0, [ObsNorm.identity(ctx.obs_dim)])
    progress.task(f"{bar} seed {ctx.seed}: task 1/{ctx.num_tasks}", sched.steps)
    res = train_ppo(
        FullBank([net]),
        [ctx.specs[0]],
        ctx.full_ppo,
        ctx.action_kind,
        seed=ctx.seed * 1000,
        should_stop=eval_hook(sched, record),
        on_update=lambda row: progress.advance(bar, sched.batch),
    )
    done = {"evals": evals, "wall_time_s": time.perf_counter() - start - evaluator.seconds}
    save_state(folder, net.state_dict(), res.norms, done)
    return net, res.norms[0], done


def run_sequence(
    strategy: Strategy,
    sched: Schedule,
    paths: RunPaths,
    progress: ContinualProgress,
    resume: bool,
) -> dict[str, Any]:
    """Train ``strategy`` on the whole sequence (or what is left of it); returns the
    run's record for results.json."""
    ctx, name = strategy.ctx, strategy.name
    num = ctx.num_tasks
    latest = latest_state(paths.run(name, ctx.seed)) if resume else None
    if latest is not None:
        tensors, norms, rec = load_state(latest)
        strategy.load_state_tensors(tensors)
        strategy.extras = rec["extras"]
        progress.skip(name, sched.steps * rec["next_task"])
    else:
        net, norm, first = first_task(ctx, sched, paths, progress, name)
        start = time.perf_counter()
        strategy.adopt_first(net, norm)
        norms = [norm]
        rec = {
            "evals": list(first["evals"]),
            "R_raw": [first["evals"][-1]["mean"]],
            "wall_time_s": first["wall_time_s"] + time.perf_counter() - start,
            "next_task": 1,
        }
        save_checkpoint(strategy, paths, 0, norms, rec)
    evaluator = Evaluator(ctx)
    for j in range(rec["next_task"], num):
        start = time.perf_counter()
        evaluator.seconds = 0.0
        setup = strategy.setup_task(j, norms)
        policy = strategy.policy()

        def record(step: int, live: list[ObsNorm], j: int = j, policy: Forward = policy) -> None:
            seen = [*norms, live[0]]
            todo = [strategy.start_norm(i, seen) for i in range(j + 1, num)]
            result = evaluator(policy, seen + todo)
            rec["evals"].append({"phase": j, "step": j * sched.steps + step, **result})

        record(0, [setup.init_norm])
        progress.task(f"{name} seed {ctx.seed}: task {j + 1}/{num}", sched.steps)
        res = train_ppo(
            setup.bank,
            [ctx.specs[j]],
            setup.ppo,
            ctx.action_kind,
            seed=ctx.seed * 1000 + j,
            init_norms=[setup.init_norm],
            should_stop=eval_hook(sched, record),
            extra_loss=setup.extra_loss,
            on_update=lambda row: progress.advance(name, sched.batch),
        )
        norms.append(res.norms[0])
        rec["R_raw"].append(rec["evals"][-1]["mean"])
        strategy.finish_task(j, norms[j])
        rec["wall_time_s"] += time.perf_counter() - start - evaluator.seconds
        rec["next_task"] = j + 1
        save_checkpoint(strategy, paths, j, norms, rec)
    return finish_record(strategy, norms, rec)


def save_checkpoint(
    strategy: Strategy, paths: RunPaths, j: int, norms: list[ObsNorm], rec: dict[str, Any]
) -> None:
    rec["extras"] = strategy.extras
    folder = paths.task_state(strategy.name, strategy.ctx.seed, j)
    save_state(folder, strategy.state_tensors(), norms, rec)


def finish_record(strategy: Strategy, norms: list[ObsNorm], rec: dict[str, Any]) -> dict[str, Any]:
    memory = dict(strategy.memory_bytes())
    memory["obs_norms"] = sum(2 * n.mean.size * n.mean.itemsize for n in norms)
    out = {k: v for k, v in rec.items() if k != "next_task"}
    out["memory_bytes"] = memory
    out["final_raw"] = rec["R_raw"][-1]
    return out


def run_joint(
    strategy: Any, sched: Schedule, paths: RunPaths, progress: ContinualProgress, resume: bool
) -> dict[str, Any]:
    """``multitask``: every task in one PPO run (``steps_per_task`` steps of each)."""
    ctx, name = strategy.ctx, strategy.name
    num = ctx.num_tasks
    latest = latest_state(paths.run(name, ctx.seed)) if resume else None
    if latest is not None:
        tensors, norms, rec = load_state(latest)
        strategy.load_state_tensors(tensors)
        progress.skip(name, sched.steps * num)
        return finish_record(strategy, norms, rec)
    strategy.net.load_state_dict(new_network(ctx, ctx.seed).state_dict())
    evaluator = Evaluator(ctx)
    policy = strategy.policy()
    evals: list[dict] = []

    def record(step: int, live: list[ObsNorm]) -> None:
        evals.append({"phase": 0, "step": step * num, **evaluator(policy, list(live))})

    start = time.perf_counter()
    init = strategy.initial_norms()
    record(0, init)
    progress.task(f"{name} seed {ctx.seed}: {num} tasks at once", sched.steps * num)
    res = train_ppo(
        FullBank([strategy.net]),
        ctx.specs,
        ctx.full_ppo,
        ctx.action_kind,
        seed=ctx.seed * 1000,
        init_norms=init,
        should_stop=eval_hook(sched, record),
        on_update=lambda row: progress.advance(name, sched.batch * num),
    )
    rec = {
        "evals": evals,
        "R_raw": [evals[-1]["mean"]],
        "wall_time_s": time.perf_counter() - start - evaluator.seconds,
        "extras": strategy.extras,
    }
    save_state(paths.task_state(name, ctx.seed, num - 1), strategy.state_tensors(), res.norms, rec)
    return finish_record(strategy, res.norms, rec)


def run_reference(
    ctx: Context, sched: Schedule, task: int, paths: RunPaths, progress: ContinualProgress
) -> dict[str, Any]:
    """Task ``task`` alone, from scratch (random init, full network, same steps and
    PPO settings as the sequence's full networks); its own seed stream."""
    from skillbank.library import atomic_write_json, read_json

    path = paths.reference(ctx.seed, task)
    if path.is_file():
        progress.skip("reference", sched.steps)
        return read_json(path)
    seed = 10_000 + ctx.seed * 100 + task
    net = new_network(ctx, seed)
    evaluator = Evaluator(ctx)
    steps: list[int] = []
    means: list[float] = []

    def record(step: int, live: list[ObsNorm]) -> None:
        steps.append(step)
        means.append(evaluator(lambda x, t: net(x), list(live), [task])["mean"][0])

    record(0, [ObsNorm.identity(ctx.obs_dim)])
    progress.task(f"reference seed {ctx.seed}: {ctx.specs[task].name}", sched.steps)
    train_ppo(
        FullBank([net]),
        [ctx.specs[task]],
        ctx.full_ppo,
        ctx.action_kind,
        seed=seed,
        should_stop=eval_hook(sched, record),
        on_update=lambda row: progress.advance("reference", sched.batch),
    )
    out = {
        "task": task,
        "seed": seed,
        "steps": steps,
        "mean": means,
        "final": float(np.mean(means[-1:])),
    }
    atomic_write_json(path, out)
    return out
