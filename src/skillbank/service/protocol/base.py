"""The shared base as announced in ``OUT/trainer.json``: orchestrators, the converter and
``library add`` load it from there (``service.trainer.base`` resolves it)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from torch import nn

from skillbank.config import ConfigError
from skillbank.library.core import load_policy
from skillbank.lora import MultiLoraModel
from skillbank.service.protocol.info import TrainerInfo
from skillbank.service.protocol.paths import BaseFiles


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_base(info: TrainerInfo, check_digest: bool = True) -> nn.Module:
    """The base announced in ``trainer.json`` (checked against its digest)."""
    base_dir = Path(info.base_dir)
    weights = BaseFiles(base_dir).weights
    if check_digest and file_sha256(weights) != info.base_sha256:
        raise ConfigError(
            f"{weights}: differs from the base the trainer announced "
            "(trainer.json field 'base_sha256')"
        )
    module, _ = load_policy(base_dir)
    return module


def slot_model(base: nn.Module, info: TrainerInfo, num_slots: int) -> MultiLoraModel:
    """A multi-LoRA model laid out like the trainer's (same targets and capacity)."""
    return MultiLoraModel(base, num_slots, info.rank_capacity, info.target_modules)


def base_name(info: TrainerInfo) -> str:
    """``base_model_name_or_path`` written into adapters."""
    return info.library or info.base_dir
