"""``skillbank continual``: every strategy x seed on one task sequence, then results.json
and report.html. Refuses an output folder holding another run unless told to resume it
(``resume``: skip finished work, continue unfinished sequences from their last completed
task) or to replace it (``overwrite``)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from skillbank.continual.config import ContinualConfig
from skillbank.continual.paths import ContinualPaths
from skillbank.continual.progress import ContinualProgress
from skillbank.continual.rollouts import random_policy_return
from skillbank.continual.runner import run_joint, run_reference, run_sequence
from skillbank.continual.strategies import Context, get_strategy
from skillbank.continual.window import EVAL_SEED, Schedule
from skillbank.errors import ConfigError, SkillbankError
from skillbank.io import nan_to_none, read_json, withdraw_dir, write_json
from skillbank.tasks import TaskSpec, get_suite

FORMAT = "skillbank-continual/1"


def select_tasks(config: ContinualConfig) -> list[TaskSpec]:
    """The suite's tasks in training order (ValueError naming the valid suites/indices)."""
    try:
        suite = get_suite(config.suite)
    except ValueError as e:  # an unknown suite name (tasks raises a plain ValueError)
        if isinstance(e, SkillbankError):
            raise
        raise ConfigError(f"field suite: {e}") from None
    if config.tasks is None:
        return suite
    bad = [i for i in config.tasks if not 0 <= i < len(suite)]
    if bad:
        listing = ", ".join(f"{i}={s.name}" for i, s in enumerate(suite))
        raise ConfigError(
            f"field tasks: task indices {bad} not in suite {config.suite!r}; valid: {listing}"
        )
    return [suite[i] for i in config.tasks]


def prepare_folder(
    paths: ContinualPaths, config: ContinualConfig, resume: bool, overwrite: bool
) -> None:
    if resume and overwrite:
        raise ConfigError("command line: give either --resume or --overwrite, not both")
    holds_run = any(p.exists() for p in paths.owned())
    if holds_run and overwrite:
        for p in paths.owned():
            if p.is_dir():
                withdraw_dir(p)
            elif p.exists():
                p.unlink()
    elif holds_run and not resume:
        raise ConfigError(
            f"{paths.root}: this folder holds another run ({paths.config.name}, "
            f"{paths.state.name}/); use --resume to continue it or --overwrite to replace it"
        )
    elif resume and paths.config.is_file():
        old = ContinualConfig.from_dict(read_json(paths.config), str(paths.config))
        diff = old.mismatch(config)
        if diff:
            pairs = "; ".join(f"{k}: {getattr(old, k)!r} -> {getattr(config, k)!r}" for k in diff)
            raise ConfigError(f"{paths.config}: cannot resume with a different config ({pairs})")
    write_json(paths.config, config.to_dict())


def make_context(config: ContinualConfig, specs: list[TaskSpec], seed: int) -> Context:
    """Shapes and PPO settings of the sequence: ``default_ppo(spec, "base")`` for full
    networks, ``default_ppo(spec, "lora")`` for skills, ``steps_per_task`` steps each."""
    from skillbank.algos.ppo_defaults import default_ppo
    from skillbank.tasks.spaces import spaces_of

    shapes = {spaces_of(s)[:3] for s in specs}
    if len(shapes) != 1:
        raise ConfigError(
            f"field tasks: tasks of one sequence need one observation and action shape: {shapes}"
        )
    obs_dim, kind, dim = shapes.pop()
    over = {"total_steps": config.steps_per_task}
    if config.envs_per_task is not None:
        over["envs_per_task"] = config.envs_per_task
    full = default_ppo(specs[0], "base").replace(**over)
    lora = default_ppo(specs[0], "lora").replace(**over)
    if config.full_lr is not None:
        full = full.replace(learning_rate=config.full_lr)
    if config.lora_lr is not None:
        lora = lora.replace(learning_rate=config.lora_lr)
    if full.envs_per_task * full.rollout_steps != lora.envs_per_task * lora.rollout_steps:
        raise ConfigError(
            "field envs_per_task: full and LoRA PPO settings must collect the same steps per update"
        )
    return Context(specs, config, kind, obs_dim, dim, full, lora, seed)


def make_schedule(ctx: Context) -> Schedule:
    """Whole PPO updates per task and the evaluation interval in updates."""
    batch = ctx.full_ppo.envs_per_task * ctx.full_ppo.rollout_steps
    updates = max(1, ctx.config.steps_per_task // batch)
    every = max(1, -(-ctx.config.eval_every // batch))
    return Schedule(batch, updates, every)


def normalisation(specs: list[TaskSpec], references: dict[str, list[dict]], episodes: int) -> dict:
    """Per-task rule: ``return / max_return`` when the family has one, else
    ``(R - R_random) / (R_ref - R_random)`` with R_random the mean return of uniform
    random actions and R_ref the single-task references' final return (mean over seeds);
    both clipped to [0, 1]."""
    tasks = []
    for i, spec in enumerate(specs):
        if spec.info.max_return is not None:
            tasks.append(
                {
                    "name": spec.name,
                    "rule": "return / max_return",
                    "low": 0.0,
                    "high": float(spec.info.max_return),
                }
            )
            continue
        finals = [ref["final"] for runs in references.values() for ref in runs if ref["task"] == i]
        if not finals:
            raise ConfigError(
                f"field references: task {spec.name!r} has no known max return: its scores "
                "are normalised by the single-task references, so references must be on"
            )
        low = random_policy_return(spec, episodes, EVAL_SEED)
        high = sum(finals) / len(finals)
        if not high > low:
            high = low + max(1e-6, 0.01 * abs(low))
        tasks.append(
            {
                "name": spec.name,
                "low": low,
                "high": high,
                "rule": "(R - R_random) / (R_reference_final - R_random)",
            }
        )
    return {"clip": [0.0, 1.0], "tasks": tasks}


def references(
    ctx: Context, sched: Schedule, paths: ContinualPaths, progress: ContinualProgress
) -> list[dict[str, Any]]:
    """One single-task reference per position; a task visited twice reuses the run of
    its first visit (the same task trained alone)."""
    first: dict[TaskSpec, int] = {}
    out: list[dict[str, Any]] = []
    for i, spec in enumerate(ctx.specs):
        if spec in first:
            out.append({**out[first[spec]], "task": i})
            progress.skip("reference", sched.steps)
            continue
        first[spec] = i
        out.append(run_reference(ctx, sched, i, paths, progress))
    return out


def run_continual(
    config: ContinualConfig,
    out: Path,
    resume: bool = False,
    overwrite: bool = False,
    quiet: bool = False,
    report: bool = True,
) -> dict[str, Any]:
    """Run everything ``config`` asks for; returns the results (also in OUT/results.json;
    ``report``: also write OUT/report.html)."""
    classes = {name: get_strategy(name) for name in config.strategies}
    specs = select_tasks(config)
    unbounded = [s.name for s in specs if s.info.max_return is None]
    if unbounded and not config.references:
        raise ConfigError(
            f"field references: tasks {unbounded} have no known max return: their scores are "
            "normalised by the single-task references, which references=False "
            "(--no-references) turns off"
        )
    paths = ContinualPaths(out)
    prepare_folder(paths, config, resume, overwrite)
    ctx0 = make_context(config, specs, config.first_seed)
    sched = make_schedule(ctx0)
    seeds = config.seed_list
    per_run = {n: sched.steps * len(specs) for n in classes}
    totals = {"reference": sched.steps * len(specs) * len(seeds)} if config.references else {}
    totals.update({n: steps * len(seeds) for n, steps in per_run.items()})
    results: dict[str, Any] = {
        "format": FORMAT,
        "config": config.to_dict(),
        "tasks": [s.to_dict() for s in specs],
        "task_names": [s.name for s in specs],
        "steps_per_task": sched.steps,
        "eval_every_steps": sched.eval_updates * sched.batch,
        "ppo": {"full": ctx0.full_ppo.to_dict(), "lora": ctx0.lora_ppo.to_dict()},
        "strategy_info": {
            n: {"sequential": c.sequential, "description": c.description}
            for n, c in classes.items()
        },
        "reference": {},
        "runs": {n: {} for n in classes},
    }
    with ContinualProgress(totals, quiet) as progress:
        for seed in seeds if config.references else []:
            ctx = replace(ctx0, seed=seed)
            results["reference"][str(seed)] = references(ctx, sched, paths, progress)
        results["normalisation"] = normalisation(specs, results["reference"], config.eval_episodes)
        for name, cls in classes.items():
            for seed in seeds:
                strategy = cls(replace(ctx0, seed=seed))
                run = run_sequence if cls.sequential else run_joint
                results["runs"][name][str(seed)] = run(strategy, sched, paths, progress, resume)
                save_results(paths, results)
    save_results(paths, results)
    if report:
        from skillbank.continual.report import write_report

        write_report(results, paths.report)
    return results


def save_results(paths: ContinualPaths, results: dict[str, Any]) -> None:
    """Write results.json with the current summary (atomic; undefined values as null)."""
    from skillbank.continual.summary import summarise

    if "normalisation" in results:
        results["summary"] = summarise(results)
    write_json(paths.results, nan_to_none(results))
