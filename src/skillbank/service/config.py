"""Typed configs of the service: the trainer's ``trainer.toml``, a run's ``orch.toml``, and
``OUT/trainer.json`` (what the trainer tells orchestrators and tools). Errors name the file
and the field. Light imports only (no torch): the trainer validates ``orch.toml`` with it
and the CLI parses with it before torch is loaded."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skillbank._legacy_config import update_dataclass
from skillbank.config import ConfigError, read_toml, validate_table
from skillbank.service.files import read_json_object, write_json_atomic

TRAINER_PPO_FIELDS = (
    "update_epochs",
    "num_minibatches",
    "clip_coef",
    "clip_vloss",
    "ent_coef",
    "vf_coef",
    "max_grad_norm",
    "norm_adv",
    "target_kl",
    "adam_eps",
)
"""PPOConfig fields the trainer applies to every run (the others are per run: orch.toml)."""


@dataclass
class TrainerConfig:
    """``trainer.toml``: top-level fields below, plus an optional ``[ppo]`` table with the
    PPOConfig fields in ``TRAINER_PPO_FIELDS``."""

    output_dir: str = ""
    """Outputs folder watched for ``run_*`` folders (``--out`` wins; relative paths here
    and in ``library`` are taken from the working directory)."""
    library: str | None = None
    """Library folder whose base every run shares (give this or ``base_task``)."""
    base_task: str | None = None
    """Or: a fresh actor-critic base (random init) sized for this task, saved to OUT/base."""
    lm_base: str | None = None
    """Or: a causal-LM base folder (transformers ``save_pretrained`` layout + tokenizer.json;
    "tiny-lm" = the one packaged with skillbank), copied to OUT/base; for runs of kind "lm"."""
    base_hidden: list[int] = field(default_factory=lambda: [64, 64])
    """Hidden widths of the fresh base (``base_task`` only)."""
    base_seed: int = 0
    """Initialisation seed of the fresh base (``base_task`` only)."""
    target_modules: list[str] | None = None
    """LoRA target modules; None = the library's choice (or every Linear)."""
    max_concurrent_runs: int = 4
    """Adapter slots: runs trained at once; further runs wait for a free slot."""
    rank_capacity: int = 16
    """Largest LoRA rank a run may ask for."""
    max_async_level: int = 1
    """k: a rollout of step n is collected with a policy of step >= n - k."""
    checkpoint_interval: int = 10
    """Write checkpoints/step_N every this many steps of a run (and at its last step)."""
    keep_checkpoints: int = 2
    """Stable checkpoints kept per run (older ones are deleted)."""
    keep_broadcasts: int = 4
    """Broadcast folders kept per run (must exceed max_async_level)."""
    poll_interval_s: float = 0.02
    """Sleep between scans of the outputs folder when no rollout is ready."""
    batch_window_s: float = 0.0
    """After a first rollout is ready, wait up to this long for other runs' rollouts."""
    max_nan_updates: int = 3
    """Evict a run after this many consecutive updates skipped for a non-finite loss."""
    seed: int = 0
    """Seed of the minibatch shuffling."""
    threads: int = 1
    """torch threads."""
    debug_checkpoint_delay_s: float = 0.0
    """Test only: sleep between the files of a checkpoint write."""
    ppo: dict[str, Any] = field(default_factory=dict)
    """The ``[ppo]`` table (checked against TRAINER_PPO_FIELDS)."""


def load_trainer_config(path: Path, out: str | None = None) -> TrainerConfig:
    """Read and check ``trainer.toml``; ``out`` overrides ``output_dir``."""
    data = read_toml(path)
    ppo = data.pop("ppo", {})
    if not isinstance(ppo, dict):
        raise ConfigError(f"{path}: field 'ppo' must be a table ([ppo])")
    cfg = update_dataclass(TrainerConfig(), data, str(path))
    for key in ppo:
        if key not in TRAINER_PPO_FIELDS:
            raise ConfigError(
                f"{path}: field 'ppo.{key}' is not a trainer setting; trainer fields: "
                f"{list(TRAINER_PPO_FIELDS)} (learning rate, rollout size, gamma... are per "
                "run, in control/orch.toml)"
            )
    from skillbank.algos.ppo import PPOConfig  # imports torch: only the trainer gets here

    validate_table(PPOConfig, ppo, f"{path} [ppo]")
    cfg.ppo = dict(ppo)
    if out is not None:
        cfg.output_dir = out
    check_trainer_config(cfg, path)
    return cfg


def _need(ok: bool, path: Path, name: str, problem: str) -> None:
    if not ok:
        raise ConfigError(f"{path}: field {name!r}: {problem}")


def check_trainer_config(cfg: TrainerConfig, path: Path) -> None:
    _need(bool(cfg.output_dir), path, "output_dir", "missing (or pass --out)")
    _need(
        [cfg.library, cfg.base_task, cfg.lm_base].count(None) == 2,
        path,
        "library",
        "give exactly one of 'library', 'base_task' and 'lm_base'",
    )
    hidden_ok = bool(cfg.base_hidden) and all(isinstance(h, int) and h > 0 for h in cfg.base_hidden)
    _need(hidden_ok, path, "base_hidden", f"must be a list of positive ints, got {cfg.base_hidden}")
    _need(cfg.max_concurrent_runs >= 1, path, "max_concurrent_runs", "must be >= 1")
    _need(cfg.rank_capacity >= 1, path, "rank_capacity", "must be >= 1")
    _need(cfg.max_async_level >= 0, path, "max_async_level", "must be >= 0")
    _need(cfg.checkpoint_interval >= 1, path, "checkpoint_interval", "must be >= 1")
    _need(cfg.keep_checkpoints >= 1, path, "keep_checkpoints", "must be >= 1")
    _need(
        cfg.keep_broadcasts > cfg.max_async_level,
        path,
        "keep_broadcasts",
        f"must be > max_async_level ({cfg.max_async_level})",
    )
    _need(cfg.poll_interval_s > 0, path, "poll_interval_s", "must be > 0")
    _need(cfg.batch_window_s >= 0, path, "batch_window_s", "must be >= 0")
    _need(cfg.max_nan_updates >= 1, path, "max_nan_updates", "must be >= 1")
    _need(cfg.threads >= 1, path, "threads", "must be >= 1")
    if cfg.target_modules is not None:
        ok = all(isinstance(t, str) and t for t in cfg.target_modules)
        _need(ok, path, "target_modules", "must be a list of module names")


@dataclass
class PPORunConfig:
    """``control/orch.toml`` of a PPO run (kind "ppo"): flat fields, no tables."""

    kind: str = "ppo"
    """Orchestrator kind (a registry entry; "ppo": control tasks with PPO)."""
    task: str | None = None
    """One task: "cartpole/long-pole", "cartpole:gravity=20", ... (give task or suite)."""
    suite: str | None = None
    """A named suite: all its tasks train this run's one adapter."""
    envs_per_task: int = 8
    """Parallel environments per task."""
    rollout_steps: int = 128
    """Steps per environment in each rollout."""
    max_steps: int = 100
    """Policy updates of the run; the run is done after that many."""
    learning_rate: float = 2e-3
    """Adam learning rate of this run's adapter."""
    anneal_lr: bool = True
    """Decay the learning rate linearly to 0 over max_steps."""
    rank: int = 8
    """LoRA rank of a fresh adapter (a converted checkpoint keeps its own)."""
    alpha: float | None = None
    """LoRA alpha (scaling alpha / rank); None = 2 * rank."""
    gamma: float = 0.99
    """Discount factor."""
    gae_lambda: float = 0.95
    """GAE lambda."""
    normalize_reward: bool = False
    """Scale rewards by the running std of the discounted return."""
    seed: int = 0
    """Seed of the environments, the fresh adapter and the action sampling."""
    env_workers: int = 0
    """Step the environments in this many worker processes (0: in the orchestrator's own
    process; at most envs_per_task are used). See docs/scale.md."""


@dataclass
class TrainerInfo:
    """``OUT/trainer.json``: what orchestrators, the converter and tools need to know."""

    base_dir: str
    """Folder with the base's config.json and model.safetensors."""
    base_sha256: str
    """Digest of the base's model.safetensors (``library add`` checks it)."""
    base_kind: str
    base_kwargs: dict[str, Any]
    base_obs_norm: dict[str, Any] | None
    target_modules: list[str] | None
    rank_capacity: int
    max_concurrent_runs: int
    max_async_level: int
    library: str | None = None
    pid: int = 0


def write_trainer_info(path: Path, info: TrainerInfo) -> None:
    write_json_atomic(path, dataclasses.asdict(info))


def read_trainer_info(path: Path) -> TrainerInfo:
    data = read_json_object(path)
    names = {f.name for f in dataclasses.fields(TrainerInfo)}
    missing = [f.name for f in dataclasses.fields(TrainerInfo) if f.name not in data]
    required = [m for m in missing if m not in ("library", "pid")]
    if required:
        raise ConfigError(f"{path}: missing field(s) {required}")
    return TrainerInfo(**{k: v for k, v in data.items() if k in names})


def _finite(x: float) -> bool:
    return math.isfinite(x)


def check_ppo_run(cfg: PPORunConfig, path: Path, info: TrainerInfo) -> list:
    """Check a PPO run config against the trainer; returns its TaskSpecs."""
    _need(cfg.rank >= 1, path, "rank", f"must be >= 1, got {cfg.rank}")
    _need(
        cfg.rank <= info.rank_capacity,
        path,
        "rank",
        f"{cfg.rank} is above the trainer's rank capacity {info.rank_capacity}",
    )
    _need(cfg.alpha is None or (cfg.alpha > 0 and _finite(cfg.alpha)), path, "alpha", "must be > 0")
    _need(cfg.envs_per_task >= 1, path, "envs_per_task", "must be >= 1")
    _need(cfg.rollout_steps >= 1, path, "rollout_steps", "must be >= 1")
    _need(cfg.env_workers >= 0, path, "env_workers", f"must be >= 0, got {cfg.env_workers}")
    _need(cfg.max_steps >= 1, path, "max_steps", "must be >= 1")
    lr_ok = cfg.learning_rate > 0 and _finite(cfg.learning_rate)
    _need(lr_ok, path, "learning_rate", f"must be > 0, got {cfg.learning_rate}")
    _need(0 < cfg.gamma <= 1, path, "gamma", f"must be in (0, 1], got {cfg.gamma}")
    _need(0 <= cfg.gae_lambda <= 1, path, "gae_lambda", f"must be in [0, 1], got {cfg.gae_lambda}")
    _need(
        (cfg.task is None) != (cfg.suite is None), path, "task", "give exactly one of task, suite"
    )
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
        _need(
            got == want,
            path,
            name,
            f"task {spec.name!r} has obs/action {got}, the trainer's base expects {want}",
        )
    return specs


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


def load_run_config(path: Path, info: TrainerInfo) -> tuple[Any, list]:
    """Read and check a run's ``orch.toml`` (any registered kind) -> (config, task specs)."""
    from skillbank.service.kinds import get_kind

    data = read_toml(path)
    kind_name = data.get("kind", "ppo")
    if not isinstance(kind_name, str):
        raise ConfigError(f"{path}: field 'kind' must be a string")
    try:
        kind = get_kind(kind_name)
    except KeyError as e:
        raise ConfigError(f"{path}: field 'kind': {e.args[0]}") from None
    for key, value in data.items():
        if isinstance(value, dict):
            raise ConfigError(f"{path}: field {key!r}: tables are not allowed in orch.toml")
    cfg = update_dataclass(kind.config_cls(), data, str(path))
    return cfg, kind.check(cfg, path, info)
