"""Run one strategy on one seed: the task sequence (or all tasks at once for
``multitask``), the single-task references, and the per-task state for ``--resume``.

At the start of each task (after the strategy prepared it), during it and at its end,
every task of the sequence is evaluated (``window.py``); a task not yet trained is
evaluated with the statistics the strategy would start it from.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from skillbank.algos.normalize import ObsNorm
from skillbank.continual.checkpoint import latest_state, load_state, save_state
from skillbank.continual.paths import ContinualPaths, stable_file
from skillbank.continual.progress import ContinualProgress
from skillbank.continual.strategies.base import Context, Forward, Strategy
from skillbank.continual.window import (
    VALID_SEED,
    Evaluator,
    Schedule,
    mean_score,
    train_window,
)
from skillbank.models import ActorCritic, ActorCriticConfig
from skillbank.training.loop import FullBank


def new_network(ctx: Context, seed: int) -> ActorCritic:
    """A freshly initialised actor-critic (``torch.manual_seed(seed)`` first)."""
    torch.manual_seed(seed)
    net_cfg = ActorCriticConfig(
        obs_dim=ctx.obs_dim,
        action_kind=ctx.action_kind,
        action_dim=ctx.action_dim,
        hidden=list(ctx.config.hidden),
    )
    return ActorCritic(net_cfg)


def first_task(
    ctx: Context, sched: Schedule, paths: ContinualPaths, progress: ContinualProgress, bar: str
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
    norms = train_window(
        ctx,
        sched,
        evaluator,
        bank=FullBank([net]),
        specs=[ctx.specs[0]],
        ppo=ctx.full_ppo,
        seed=ctx.seed * 1000,
        init_norms=None,
        record=record,
        validate=lambda live: mean_score(evaluator(forward, live, [0], VALID_SEED)),
        on_update=lambda row: progress.advance(bar, sched.batch),
    )
    done = {"evals": evals, "wall_time_s": time.perf_counter() - start - evaluator.seconds}
    save_state(folder, net.state_dict(), norms, done)
    return net, norms[0], done


def resume_state(
    strategy: Any, paths: ContinualPaths, resume: bool
) -> tuple[list[ObsNorm], dict[str, Any]] | None:
    """With ``resume``: load the strategy's newest saved state into it and return its
    (statistics, progress record); None when there is none (or no ``resume``)."""
    latest = latest_state(paths.run(strategy.name, strategy.ctx.seed)) if resume else None
    if latest is None:
        return None
    tensors, norms, rec = load_state(latest)
    strategy.load_state_tensors(tensors)
    return norms, rec


def run_sequence(
    strategy: Strategy,
    sched: Schedule,
    paths: ContinualPaths,
    progress: ContinualProgress,
    resume: bool,
) -> dict[str, Any]:
    """Train ``strategy`` on the whole sequence (or what is left of it after the last
    saved task); returns the run's record for results.json."""
    ctx, name = strategy.ctx, strategy.name
    num = ctx.num_tasks
    saved = resume_state(strategy, paths, resume)
    if saved is not None:
        norms, rec = saved
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

        def validate(live: list[ObsNorm], j: int = j, policy: Forward = policy) -> float:
            return mean_score(evaluator(policy, live, [j], VALID_SEED))

        record(0, [setup.init_norm])
        progress.task(f"{name} seed {ctx.seed}: task {j + 1}/{num}", sched.steps)
        final = train_window(
            ctx,
            sched,
            evaluator,
            bank=setup.bank,
            specs=[ctx.specs[j]],
            ppo=setup.ppo,
            seed=ctx.seed * 1000 + j,
            init_norms=[setup.init_norm],
            record=record,
            validate=validate,
            extra_loss=setup.extra_loss,
            on_update=lambda row: progress.advance(name, sched.batch),
        )
        norms.append(final[0])
        rec["R_raw"].append(rec["evals"][-1]["mean"])
        strategy.finish_task(j, norms[j])
        rec["wall_time_s"] += time.perf_counter() - start - evaluator.seconds
        rec["next_task"] = j + 1
        save_checkpoint(strategy, paths, j, norms, rec)
    return finish_record(strategy, norms, rec)


def save_checkpoint(
    strategy: Strategy, paths: ContinualPaths, j: int, norms: list[ObsNorm], rec: dict[str, Any]
) -> None:
    rec["extras"] = strategy.extras
    folder = paths.task_state(strategy.name, strategy.ctx.seed, j)
    save_state(folder, strategy.state_tensors(), norms, rec)


def finish_record(strategy: Strategy, norms: list[ObsNorm], rec: dict[str, Any]) -> dict[str, Any]:
    """The run's record: evaluations, R (raw returns), memory by part, wall time, notes."""
    memory = dict(strategy.memory_bytes())
    memory["obs_norms"] = sum(2 * n.mean.size * n.mean.itemsize for n in norms)
    out = {k: v for k, v in rec.items() if k != "next_task"}
    out["memory_bytes"] = memory
    out["final_raw"] = rec["R_raw"][-1]
    return out


def run_joint(
    strategy: Any, sched: Schedule, paths: ContinualPaths, progress: ContinualProgress, resume: bool
) -> dict[str, Any]:
    """``multitask``: every task in one PPO run (``steps_per_task`` steps of each), from
    the seed's init; validated on the mean over tasks."""
    ctx, name = strategy.ctx, strategy.name
    num = ctx.num_tasks
    saved = resume_state(strategy, paths, resume)
    if saved is not None:
        progress.skip(name, sched.steps * num)
        return finish_record(strategy, *saved)
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
    norms = train_window(
        ctx,
        sched,
        evaluator,
        bank=FullBank([strategy.net]),
        specs=ctx.specs,
        ppo=ctx.full_ppo,
        seed=ctx.seed * 1000,
        init_norms=init,
        record=record,
        validate=lambda live: mean_score(evaluator(policy, live, None, VALID_SEED)),
        on_update=lambda row: progress.advance(name, sched.batch * num),
    )
    rec = {
        "evals": evals,
        "R_raw": [evals[-1]["mean"]],
        "wall_time_s": time.perf_counter() - start - evaluator.seconds,
        "extras": strategy.extras,
    }
    save_state(paths.task_state(name, ctx.seed, num - 1), strategy.state_tensors(), norms, rec)
    return finish_record(strategy, norms, rec)


def run_reference(
    ctx: Context, sched: Schedule, task: int, paths: ContinualPaths, progress: ContinualProgress
) -> dict[str, Any]:
    """Task ``task`` alone, from scratch (random init, full network, same steps, PPO
    settings and ``keep_best`` rule as the sequence's full networks); own seed stream."""
    from skillbank.io import read_json, write_json

    path = paths.reference(ctx.seed, task)
    if path.is_file():
        progress.skip("reference", sched.steps)
        return read_json(path)
    seed = 10_000 + ctx.seed * 100 + task
    net = new_network(ctx, seed)
    evaluator = Evaluator(ctx)
    forward: Forward = lambda x, t: net(x)  # noqa: E731
    steps: list[int] = []
    means: list[float] = []

    def record(step: int, live: list[ObsNorm]) -> None:
        steps.append(step)
        means.append(evaluator(forward, live, [task])["mean"][0])

    record(0, [ObsNorm.identity(ctx.obs_dim)])
    progress.task(f"reference seed {ctx.seed}: {ctx.specs[task].name}", sched.steps)
    train_window(
        ctx,
        sched,
        evaluator,
        bank=FullBank([net]),
        specs=[ctx.specs[task]],
        ppo=ctx.full_ppo,
        seed=seed,
        init_norms=None,
        record=record,
        validate=lambda live: mean_score(evaluator(forward, live, [task], VALID_SEED)),
        on_update=lambda row: progress.advance("reference", sched.batch),
    )
    out = {"task": task, "seed": seed, "steps": steps, "mean": means, "final": means[-1]}
    write_json(path, out)
    return out
