"""The shared base: the trainer resolves it (a library's base, or a fresh one saved to
``OUT/base``) and announces it in ``OUT/trainer.json``; orchestrators, the converter and
``library add`` load it from there."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from skillbank.config import ConfigError
from skillbank.library.core import LibraryError, load_policy
from skillbank.lora.layer import MultiLoraModel
from skillbank.service.config import TrainerConfig, TrainerInfo, task_spaces
from skillbank.service.files import read_json_object, staging_dir, write_json_atomic
from skillbank.service.paths import OutPaths

WEIGHTS = "model.safetensors"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fresh_base(cfg: TrainerConfig, out: OutPaths, where: Path) -> Path:
    """Write (once) a randomly initialised actor-critic for ``cfg.base_task`` to OUT/base."""
    from skillbank.models import ActorCritic, ActorCriticConfig
    from skillbank.tasks import parse_task

    try:
        spec = parse_task(str(cfg.base_task))
    except ValueError as e:
        raise ConfigError(f"{where}: field 'base_task': {e}") from e
    obs_dim, kind, dim = task_spaces(spec)
    net_cfg = ActorCriticConfig(obs_dim, kind, dim, list(cfg.base_hidden))
    config = {
        "kind": "actor_critic",
        "kwargs": net_cfg.to_dict(),
        "obs_norm": None,
        "task": spec.to_dict(),
        "target_modules": None,
        "seed": cfg.base_seed,
    }
    if (out.base / WEIGHTS).is_file():
        old = read_json_object(out.base / "config.json")
        if old != config:
            raise ConfigError(
                f"{where}: field 'base_task': {out.base} holds a different base ({old}); "
                "use a new outputs folder or the same base settings"
            )
        return out.base
    torch.manual_seed(cfg.base_seed)
    net = ActorCritic(net_cfg)
    stage = staging_dir(out.staging)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(stage / WEIGHTS))
    write_json_atomic(stage / "config.json", config)
    os.replace(stage, out.base)
    return out.base


def resolve_base(cfg: TrainerConfig, out: OutPaths, where: Path) -> tuple[nn.Module, TrainerInfo]:
    """The trainer's base module and the ``trainer.json`` describing it."""
    if cfg.library is not None:
        base_dir = Path(cfg.library).absolute() / "base"
        if not (Path(cfg.library) / "library.json").is_file():
            raise ConfigError(f"{where}: field 'library': {cfg.library} is not a library folder")
    elif cfg.lm_base is not None:
        from skillbank.service.lm_base import lm_base_dir

        base_dir = lm_base_dir(cfg.lm_base, out, where).absolute()
    else:
        base_dir = _fresh_base(cfg, out, where).absolute()
    try:
        module, config = load_policy(base_dir)
    except (LibraryError, KeyError, ValueError, RuntimeError, OSError) as e:
        raise ConfigError(f"{where}: field 'library': cannot load the base ({e})") from e
    targets = cfg.target_modules if cfg.target_modules is not None else config.get("target_modules")
    info = TrainerInfo(
        base_dir=str(base_dir),
        base_sha256=file_sha256(base_dir / WEIGHTS),
        base_kind=config["kind"],
        base_kwargs=config["kwargs"],
        base_obs_norm=config.get("obs_norm"),
        target_modules=list(targets) if targets is not None else None,
        rank_capacity=cfg.rank_capacity,
        max_concurrent_runs=cfg.max_concurrent_runs,
        max_async_level=cfg.max_async_level,
        library=str(Path(cfg.library).absolute()) if cfg.library else None,
        pid=os.getpid(),
    )
    return module, info


def load_base(info: TrainerInfo, check_digest: bool = True) -> nn.Module:
    """The base announced in ``trainer.json`` (checked against its digest)."""
    base_dir = Path(info.base_dir)
    if check_digest and file_sha256(base_dir / WEIGHTS) != info.base_sha256:
        raise ConfigError(
            f"{base_dir / WEIGHTS}: differs from the base the trainer announced "
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
