"""``OUT/trainer.json``: what the trainer tells orchestrators, the converter and tools.

Light imports only (no torch): the CLI and tools read it before torch is loaded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, NonNegativeInt, PositiveInt

from skillbank.config import Config, ConfigError, validate_table
from skillbank.io import read_json, write_json


class TrainerInfo(Config):
    """The trainer's announcement (written at start, read by every other process)."""

    base_dir: str
    """Folder with the base's config.json and model.safetensors."""
    base_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    """Digest of the base's model.safetensors (``library add`` checks it)."""
    base_kind: str
    """Base kind of the base's config.json ("actor_critic", "causal_lm", ...)."""
    base_kwargs: dict[str, Any]
    """Constructor arguments of the base (obs_dim, action_kind, vocab_size, ...)."""
    base_obs_norm: dict[str, Any] | None
    """Observation statistics of the base (a library's), or None."""
    target_modules: list[str] | None
    """LoRA target modules of every slot; None = every Linear."""
    rank_capacity: PositiveInt
    """Largest LoRA rank a run may ask for."""
    max_concurrent_runs: PositiveInt
    """Adapter slots of the trainer."""
    max_async_level: NonNegativeInt
    """k: a rollout of step n is collected with a policy of step >= n - k."""
    library: str | None = None
    """The library whose base is shared, or None."""
    pid: NonNegativeInt = 0
    """The trainer's process id."""


def write_trainer_info(path: Path, info: TrainerInfo) -> None:
    write_json(path, info.to_dict(), indent=1, sort_keys=True, make_parent=False)


def read_trainer_info(path: Path) -> TrainerInfo:
    """``OUT/trainer.json``; ``ConfigError`` naming the file (and field) otherwise."""
    return validate_table(TrainerInfo, read_json(path, ConfigError), str(path))
