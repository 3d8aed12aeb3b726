"""The trainer's base: a library's, a fresh actor-critic saved to ``OUT/base``, or a
causal LM copied there (``kinds.lm.base``); announced in ``OUT/trainer.json``."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from skillbank.config import ConfigError
from skillbank.io import read_json, write_json
from skillbank.library.core import LibraryError, load_policy
from skillbank.service.kinds.ppo.config import task_spaces
from skillbank.service.protocol.base import file_sha256
from skillbank.service.protocol.files import staging_dir
from skillbank.service.protocol.info import TrainerInfo
from skillbank.service.protocol.paths import BaseFiles, OutPaths
from skillbank.service.trainer.config import TrainerConfig


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
    files = out.base_files
    if files.weights.is_file():
        old = read_json(files.config, ConfigError)
        if old != config:
            raise ConfigError(
                f"{where}: field 'base_task': {out.base} holds a different base ({old}); "
                "use a new outputs folder or the same base settings"
            )
        return out.base
    torch.manual_seed(cfg.base_seed)
    net = ActorCritic(net_cfg)
    stage = staging_dir(out.staging)
    staged = BaseFiles(stage)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(staged.weights))
    write_json(staged.config, config, indent=1, sort_keys=True)
    os.replace(stage, out.base)
    return out.base


def resolve_base(cfg: TrainerConfig, out: OutPaths, where: Path) -> tuple[nn.Module, TrainerInfo]:
    """The trainer's base module and the ``trainer.json`` describing it."""
    if cfg.library is not None:
        base_dir = BaseFiles.of_library(Path(cfg.library).absolute()).folder
        if not (Path(cfg.library) / "library.json").is_file():
            raise ConfigError(f"{where}: field 'library': {cfg.library} is not a library folder")
    elif cfg.lm_base is not None:
        from skillbank.service.kinds.lm.base import lm_base_dir

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
        base_sha256=file_sha256(BaseFiles(base_dir).weights),
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
