"""``skillbank library add LIB OUT/run_x``: a run's newest stable adapter becomes a skill."""

from __future__ import annotations

import os
from pathlib import Path

from skillbank.config import ConfigError
from skillbank.io import read_json
from skillbank.library.core import PolicyLibrary
from skillbank.service.kinds import KINDS, load_run_config
from skillbank.service.protocol.base import file_sha256, load_base
from skillbank.service.protocol.checkpoint import load_rank_file, norm_from_tensors
from skillbank.service.protocol.info import read_trainer_info
from skillbank.service.protocol.paths import BaseFiles, OutPaths, run_from_dir
from skillbank.service.tools.status import latest_return


def add_run_to_library(
    library: str | os.PathLike[str],
    run_dir: str | os.PathLike[str],
    name: str | None = None,
    overwrite: bool = False,
) -> tuple[str, int]:
    """Add the run's newest stable checkpoint to ``library`` as a skill -> (name, step).

    The library is created from the trainer's base when it does not exist yet; an existing
    library must have the same base (checked by digest)."""
    run = run_from_dir(run_dir)
    step = run.newest_stable_checkpoint()
    if step is None:
        raise FileNotFoundError(f"{run.checkpoints}: no STABLE checkpoint yet")
    tensors = load_rank_file(run.rank_file(step))
    info = read_trainer_info(OutPaths(run.out).trainer_json)
    cfg, _ = load_run_config(run.orch_toml, info)
    kind = KINDS.get(cfg.kind)
    lib_path = Path(library)
    if (lib_path / "library.json").is_file():
        lib = PolicyLibrary.load(lib_path)
        digest = file_sha256(BaseFiles.of_library(lib_path).weights)
        if digest != info.base_sha256:
            raise ConfigError(
                f"{OutPaths(run.out).trainer_json}: field 'base_sha256': the run was trained on "
                f"another base than {BaseFiles.of_library(lib_path).folder}"
            )
    else:
        base_cfg = read_json(BaseFiles(Path(info.base_dir)).config)
        lib = PolicyLibrary.create(lib_path, load_base(info), base_cfg)
    skill = name or run.name
    meta = {
        "task": kind.skill_task(cfg),
        "obs_norm": norm_from_tensors(tensors),
        "train": {
            "algo": kind.algo,
            "service_run": str(run.root),
            "steps": step,
            "learning_rate": cfg.learning_rate,
            "final_return": latest_return(run),
        },
    }
    lib.add_skill(skill, run.weight(step), meta, overwrite=overwrite)
    return skill, step
