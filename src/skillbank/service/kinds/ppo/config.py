"""``control/orch.toml`` of a PPO run (kind "ppo"). Light imports only (no torch): the
trainer validates with it and the CLI parses with it before torch is loaded."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, NonNegativeInt, PositiveInt

from skillbank.config import Config, ConfigError
from skillbank.service.kinds.fields import PositiveFinite, Seed, check_rank, need
from skillbank.service.protocol.info import TrainerInfo

Unit = Annotated[float, Field(ge=0.0, le=1.0)]


class PPORunConfig(Config):
    """A run of kind "ppo": flat fields, no tables."""

    kind: Literal["ppo"] = "ppo"
    """Run kind (a registry entry; "ppo": control tasks with PPO)."""
    task: str | None = None
    """One task: "cartpole/long-pole", "cartpole:gravity=20", ... (give task or suite)."""
    suite: str | None = None
    """A named suite: all its tasks train this run's one adapter."""
    envs_per_task: PositiveInt = 8
    """Parallel environments per task."""
    rollout_steps: PositiveInt = 128
    """Steps per environment in each rollout."""
    max_steps: PositiveInt = 100
    """Policy updates of the run; the run is done after that many."""
    learning_rate: PositiveFinite = 2e-3
    """Adam learning rate of this run's adapter."""
    anneal_lr: bool = True
    """Decay the learning rate linearly to 0 over max_steps."""
    rank: PositiveInt = 8
    """LoRA rank of a fresh adapter (a converted checkpoint keeps its own)."""
    alpha: PositiveFinite | None = None
    """LoRA alpha (scaling alpha / rank); None = 2 * rank."""
    gamma: Annotated[float, Field(gt=0.0, le=1.0)] = 0.99
    """Discount factor."""
    gae_lambda: Unit = 0.95
    """GAE lambda."""
    normalize_reward: bool = False
    """Scale rewards by the running std of the discounted return."""
    seed: Seed = 0
    """Seed of the environments, the fresh adapter and the action sampling."""
    env_workers: NonNegativeInt = 0
    """Step the environments in this many worker processes (0: in the orchestrator's own
    process; at most envs_per_task are used). See docs/scale.md."""


def check_ppo_run(cfg: PPORunConfig, path: Path, info: TrainerInfo) -> list[Any]:
    """Check a PPO run config against the trainer; returns its TaskSpecs."""
    check_rank(cfg.rank, path, info.rank_capacity)
    need((cfg.task is None) != (cfg.suite is None), path, "task", "give exactly one of task, suite")
    from skillbank.tasks import get_suite, parse_task

    name = "task" if cfg.task is not None else "suite"
    try:
        specs = [parse_task(cfg.task)] if cfg.task is not None else get_suite(str(cfg.suite))
    except ValueError as e:
        raise ConfigError(f"{path}: field {name!r}: {e}") from e
    kw = info.base_kwargs
    want = (kw.get("obs_dim"), kw.get("action_kind"), kw.get("action_dim"))
    for spec in specs:
        got = task_spaces(spec)
        need(
            got == want,
            path,
            name,
            f"task {spec.name!r} has obs/action {got}, the trainer's base expects {want}",
        )
    return list(specs)


def task_spaces(spec: Any) -> tuple[int, str, int]:
    """(obs_dim, action kind, action dim) of a task."""
    from skillbank.tasks import make_vec_env

    env = make_vec_env([spec], 1, 0)
    try:
        space = env.action_space
        if space.__class__.__name__ == "Discrete":
            return env.obs_dim, "discrete", int(space.n)  # type: ignore[attr-defined]
        return env.obs_dim, "box", int(math.prod(space.shape or ()))
    finally:
        env.close()


def ppo_skill_task(cfg: PPORunConfig) -> dict[str, Any]:
    """The ``task`` record of a library skill made from a PPO run."""
    from skillbank.tasks import get_suite, parse_task

    if cfg.task is not None:
        return dict(parse_task(cfg.task).to_dict())
    return {"suite": cfg.suite, "tasks": [s.to_dict() for s in get_suite(str(cfg.suite))]}
