"""``skillbank convert-adapter``: any PEFT LoRA adapter -> a run's step-0 checkpoint.

The adapter is checked against the trainer's base (from ``OUT/trainer.json``, or a library
given with ``--library`` when the trainer has not run yet) and written as
``checkpoints/step_<N>/`` exactly as the trainer writes its own: ``trainer/rank_0.pt`` with
the adapter in the internal key space (and no optimiser state), ``weight/`` with the
adapter and its ``STABLE``, then ``STABLE``. The run then starts from it through the
ordinary resume path: write ``control/orch.toml`` after converting.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from skillbank.algos.normalize import ObsNorm
from skillbank.config import ConfigError
from skillbank.io import read_json
from skillbank.lora import peft_io
from skillbank.service.protocol.base import base_name, file_sha256, load_base, slot_model
from skillbank.service.protocol.checkpoint import write_checkpoint
from skillbank.service.protocol.info import TrainerInfo, read_trainer_info
from skillbank.service.protocol.paths import BaseFiles, OutPaths, run_from_dir, steps
from skillbank.service.trainer.slots import rank_tensors


def info_from_library(library: Path, capacity: int) -> TrainerInfo:
    """What a trainer on ``library`` would announce (for converting before it starts)."""
    files = BaseFiles.of_library(library)
    config = read_json(files.config)
    return TrainerInfo(
        base_dir=str(files.folder.absolute()),
        base_sha256=file_sha256(files.weights),
        base_kind=config["kind"],
        base_kwargs=config["kwargs"],
        base_obs_norm=config.get("obs_norm"),
        target_modules=config.get("target_modules"),
        rank_capacity=capacity,
        max_concurrent_runs=1,
        max_async_level=1,
        library=str(library.absolute()),
    )


def check_base_record(skill_json: Path, info: TrainerInfo) -> None:
    """An adapter's ``skill.json`` may record the base it was made for (field ``base``, e.g.
    an LM's vocab_size and hidden_size): each recorded value must match the trainer's base."""
    recorded = read_json(skill_json).get("base") if skill_json.is_file() else None
    if not isinstance(recorded, dict):
        return
    for key, value in recorded.items():
        if key in info.base_kwargs and info.base_kwargs[key] != value:
            raise ConfigError(
                f"{skill_json}: field 'base.{key}' is {value!r}, the trainer's base has "
                f"{info.base_kwargs[key]!r}: the adapter was made for a different base"
            )


def _selects(spec: str | Sequence[str], module: str) -> bool:
    """PEFT's module selection (``check_target_module_exists``): a string is a regex that
    must match the whole module path; a list holds names, each matching the path itself
    or its last dotted components."""
    if isinstance(spec, str):
        return re.fullmatch(spec, module) is not None
    return any(module == name or module.endswith(f".{name}") for name in spec)


def check_targets(config_path: Path, config: dict[str, Any], modules: Sequence[str]) -> None:
    """ConfigError unless PEFT, loading this adapter, would apply the LoRA tensors of every
    module in ``modules``: ``target_modules`` must select each and ``exclude_modules`` none.
    (Otherwise ``peft`` silently leaves those tensors out, and a run would start from
    another policy than the user's PEFT model.)"""
    targets = config.get("target_modules")
    excluded = config.get("exclude_modules") or []
    if targets is not None and targets != "all-linear":
        bad = [m for m in modules if not _selects(targets, m)]
        if bad:
            raise ConfigError(
                f"{config_path}: field 'target_modules': {targets!r} does not select the "
                f"module(s) {bad} whose LoRA tensors are in {peft_io.ADAPTER_WEIGHTS}; peft "
                "would not apply them: list them in target_modules or remove their tensors"
            )
    hit = [m for m in modules if excluded and _selects(excluded, m)]
    if hit:
        raise ConfigError(
            f"{config_path}: field 'exclude_modules': {excluded!r} excludes the module(s) "
            f"{hit} whose LoRA tensors are in {peft_io.ADAPTER_WEIGHTS}; peft would not "
            "apply them"
        )


def _read_norm(path: Path, obs_dim: int, field: str | None) -> dict[str, Any]:
    data = read_json(path)
    if field is not None:
        data = data.get(field) or {}
    try:
        norm = ObsNorm.from_dict(data)
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"{path}: field {field or 'mean/var'!r}: {e}") from e
    if norm.mean.shape != (obs_dim,):
        raise ConfigError(
            f"{path}: field {field or 'mean'!r}: {norm.mean.shape[0]} values, base obs is {obs_dim}"
        )
    return norm.to_dict()


def convert_adapter(
    adapter_dir: str | os.PathLike[str],
    run_dir: str | os.PathLike[str],
    step: int = 0,
    obs_norm: str | os.PathLike[str] | None = None,
    library: str | os.PathLike[str] | None = None,
    capacity: int = 16,
    overwrite: bool = False,
) -> Path:
    """Write ``run_dir/checkpoints/step_<step>`` from ``adapter_dir``; returns its folder.

    Observation statistics come from ``obs_norm`` (a JSON file with mean/var/count), else
    from ``adapter_dir/skill.json`` (a library skill), else the run uses the base's."""
    adapter_dir = Path(adapter_dir)
    run = run_from_dir(run_dir)
    out = OutPaths(run.out)
    if out.trainer_json.is_file():
        info = read_trainer_info(out.trainer_json)
    elif library is not None:
        info = info_from_library(Path(library), capacity)
    else:
        raise ConfigError(
            f"{out.trainer_json}: file not found: start the trainer on this outputs folder "
            "first (it writes the file), or pass --library LIB"
        )
    adapter = peft_io.read_adapter(adapter_dir)
    check_targets(adapter_dir / peft_io.ADAPTER_CONFIG, adapter.config, sorted(adapter.state))
    check_base_record(adapter_dir / "skill.json", info)
    if adapter.modules_to_save:
        raise peft_io.AdapterFormatError(
            adapter_dir / peft_io.ADAPTER_CONFIG,
            f"full modules {sorted(adapter.modules_to_save)} are not supported: a trainer "
            "slot holds LoRA weights only",
            "modules_to_save",
        )
    model = slot_model(load_base(info), info, 1)
    peft_io.apply_adapter(model, 0, adapter, source=adapter_dir)
    obs_dim = int(info.base_kwargs.get("obs_dim", 0))
    norm = None
    skill_json = adapter_dir / "skill.json"
    if obs_norm is not None:
        norm = _read_norm(Path(obs_norm), obs_dim, None)
    elif skill_json.is_file() and read_json(skill_json).get("obs_norm"):
        norm = _read_norm(skill_json, obs_dim, "obs_norm")
    if run.checkpoint_stable(step).exists() and not overwrite:
        raise FileExistsError(f"{run.checkpoint(step)} exists (use --overwrite)")
    if steps(run.broadcasts) and not overwrite:
        raise FileExistsError(
            f"{run.broadcasts}: the run has started already; convert into a new run folder "
            "(or use --overwrite before restarting the trainer)"
        )
    run.root.mkdir(parents=True, exist_ok=True)
    tensors = rank_tensors(model, None, 0, step, norm)
    write_checkpoint(run, step, tensors, model.slot_state(0), out.staging, base_name(info))
    return run.checkpoint(step)
