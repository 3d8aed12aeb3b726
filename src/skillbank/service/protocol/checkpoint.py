"""Checkpoints and broadcasts of a run, and the trainer's internal key space.

``trainer/rank_<k>.pt`` is a flat ``{name: tensor}`` dict saved with ``torch.save`` and read
with ``torch.load(weights_only=True)``. Its keys (the *internal key space*):

- ``lora.<module path>.A`` ``[r, in]``, ``lora.<module path>.B`` ``[out, r]``,
  ``lora.<module path>.alpha`` (scalar, float64): the adapter, scaling ``alpha / r``;
- ``optim.<module path>.{A,B}.{exp_avg,exp_avg_sq}`` (same shapes) and ``optim.step``:
  the run's Adam state (absent in a converted checkpoint: a fresh optimiser);
- ``obs_norm.{mean,var,count}``: the run's observation statistics (optional);
- ``run.step``: the step of the checkpoint;
- ``dist.rank``, ``dist.world_size`` (only in a checkpoint of a trainer with several ranks).

A trainer with W > 1 ranks writes one *shard* per rank (``shard_tensors``): each adapter
matrix and Adam moment in exactly one file (round robin over the sorted keys), the rest
(``run.step``, ``optim.step``, alphas, ``obs_norm.*``) in every file, so the ranks share
the writing and reading. Such a checkpoint resumes on W ranks; ``skillbank consolidate``
merges it into one ``rank_0.pt`` (no ``dist.*`` keys), which any world size resumes from.

``weight/`` holds the same adapter in PEFT's format, with its own ``STABLE``; the
checkpoint's ``STABLE`` comes last. A broadcast is the adapter in PEFT's format plus
``obs_norm.json``, then ``STABLE``.
"""

from __future__ import annotations

import io
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from skillbank.errors import SkillbankError
from skillbank.io import write_bytes, write_json
from skillbank.lora import peft_io
from skillbank.service.protocol.files import (
    ensure_subdir,
    mark_stable,
    publish_dir,
    remove_dir,
    staging_dir,
)
from skillbank.service.protocol.paths import OBS_NORM, WEIGHT, RunPaths, rank_file_name

LoraState = dict[str, tuple[Tensor, Tensor, float]]


class CheckpointError(SkillbankError, ValueError):
    """A checkpoint file the trainer cannot use; the message names the file and the key."""

    def __init__(self, path: Path, problem: str, key: str | None = None) -> None:
        where = str(path) if key is None else f"{path}: key {key!r}"
        super().__init__(f"{where}: {problem}")


class WorldSizeError(CheckpointError):
    """A sharded checkpoint written by another number of trainer ranks (no fallback to an
    older checkpoint: those are sharded the same way)."""


DIST_RANK = "dist.rank"
DIST_WORLD = "dist.world_size"


def is_sharded_key(key: str) -> bool:
    """Adapter matrices and Adam moments are split over the ranks' files; everything else
    (steps, alphas, observation statistics) is in every file."""
    return (key.startswith("lora.") and key.endswith((".A", ".B"))) or (
        key.startswith("optim.") and key.endswith((".exp_avg", ".exp_avg_sq"))
    )


def shard_tensors(tensors: dict[str, Tensor], rank: int, world: int) -> dict[str, Tensor]:
    """Rank ``rank``'s share of a checkpoint's tensors (all of them when ``world`` is 1)."""
    if world == 1:
        return dict(tensors)
    large = [k for k in sorted(tensors) if is_sharded_key(k)]
    mine = set(large[rank::world])
    out = {k: t for k, t in tensors.items() if k in mine or k not in large}
    out[DIST_RANK] = torch.tensor(rank, dtype=torch.int64)
    out[DIST_WORLD] = torch.tensor(world, dtype=torch.int64)
    return out


def shard_world_size(tensors: dict[str, Tensor], source: Path) -> int:
    """World size a rank file was written by (1: a whole checkpoint)."""
    if DIST_WORLD not in tensors:
        return 1
    world = tensors[DIST_WORLD]
    if world.numel() != 1 or int(world) < 1:
        raise CheckpointError(
            source, f"must be a positive scalar, got {world.tolist()}", DIST_WORLD
        )
    return int(world)


def merge_shards(shards: Sequence[dict[str, Tensor]], sources: Sequence[Path]) -> dict[str, Tensor]:
    """The whole checkpoint from its rank files (in rank order); checks that they belong
    together (same world size and step, rank k in file k, equal shared tensors)."""
    world = len(shards)
    merged: dict[str, Tensor] = {}
    for k, (shard, source) in enumerate(zip(shards, sources)):
        if shard_world_size(shard, source) != world:
            raise CheckpointError(
                source, f"written by {int(shard[DIST_WORLD])} ranks, expected {world}", DIST_WORLD
            )
        if world > 1 and int(shard.get(DIST_RANK, torch.tensor(-1))) != k:
            raise CheckpointError(source, f"is not the file of rank {k}", DIST_RANK)
        for key, t in shard.items():
            if key in (DIST_RANK, DIST_WORLD):
                continue
            if key in merged and not torch.equal(merged[key], t):
                raise CheckpointError(source, f"differs from {sources[0]}", key)
            merged[key] = t
    return merged


# ------------------------------------------------------------------- key space
def adapter_tensors(state: LoraState) -> dict[str, Tensor]:
    """``{module: (A, B, alpha)}`` -> internal keys (layers of rank 0 are left out)."""
    out: dict[str, Tensor] = {}
    for path, (a, b, alpha) in sorted(state.items()):
        if a.shape[0] == 0:
            continue
        out[f"lora.{path}.A"] = a.detach().clone().contiguous()
        out[f"lora.{path}.B"] = b.detach().clone().contiguous()
        out[f"lora.{path}.alpha"] = torch.tensor(float(alpha), dtype=torch.float64)
    return out


def adapter_state(tensors: dict[str, Tensor], source: Path) -> LoraState:
    """Inverse of ``adapter_tensors``."""
    modules = sorted({k[5:-2] for k in tensors if k.startswith("lora.") and k.endswith(".A")})
    if not modules:
        raise CheckpointError(source, "no adapter tensors (keys lora.<module>.A/B/alpha)")
    state: LoraState = {}
    for path in modules:
        keys = [f"lora.{path}.{p}" for p in ("A", "B", "alpha")]
        for key in keys:
            if key not in tensors:
                raise CheckpointError(source, "missing", key)
        a, b, alpha = (tensors[k] for k in keys)
        if a.dim() != 2 or b.dim() != 2 or b.shape[1] != a.shape[0] or alpha.numel() != 1:
            raise CheckpointError(
                source, f"shapes A {tuple(a.shape)}, B {tuple(b.shape)} do not match", keys[0]
            )
        state[path] = (a, b, float(alpha))
    return state


def optimizer_tensors(step: int, moments: dict[str, tuple[Tensor, Tensor]]) -> dict[str, Tensor]:
    """Adam state of one run -> internal keys; ``moments``: ``{"<module>.A": (exp_avg,
    exp_avg_sq), "<module>.B": ...}`` sliced to the adapter's rank."""
    out = {"optim.step": torch.tensor(step, dtype=torch.int64)}
    for name, (m, v) in sorted(moments.items()):
        out[f"optim.{name}.exp_avg"] = m.detach().clone().contiguous()
        out[f"optim.{name}.exp_avg_sq"] = v.detach().clone().contiguous()
    return out


def optimizer_state(
    tensors: dict[str, Tensor], source: Path
) -> tuple[int, dict[str, tuple[Tensor, Tensor]]] | None:
    """Inverse of ``optimizer_tensors``; None when the checkpoint has no optimiser state
    (a converted adapter)."""
    if "optim.step" not in tensors:
        return None
    moments: dict[str, tuple[Tensor, Tensor]] = {}
    for key in tensors:
        if key.startswith("optim.") and key.endswith(".exp_avg"):
            name = key[len("optim.") : -len(".exp_avg")]
            sq = f"optim.{name}.exp_avg_sq"
            if sq not in tensors:
                raise CheckpointError(source, "missing", sq)
            moments[name] = (tensors[key], tensors[sq])
    return int(tensors["optim.step"]), moments


def norm_tensors(obs_norm: dict[str, Any] | None) -> dict[str, Tensor]:
    if obs_norm is None:
        return {}
    return {
        "obs_norm.mean": torch.tensor(obs_norm["mean"], dtype=torch.float64),
        "obs_norm.var": torch.tensor(obs_norm["var"], dtype=torch.float64),
        "obs_norm.count": torch.tensor(float(obs_norm.get("count", 1e-4)), dtype=torch.float64),
    }


def norm_from_tensors(tensors: dict[str, Tensor]) -> dict[str, Any] | None:
    if "obs_norm.mean" not in tensors:
        return None
    return {
        "mean": tensors["obs_norm.mean"].tolist(),
        "var": tensors["obs_norm.var"].tolist(),
        "count": float(tensors["obs_norm.count"]),
    }


# ------------------------------------------------------------------ rank files
def save_rank_file(path: Path, tensors: dict[str, Tensor]) -> None:
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in tensors.items()}, buf)
    path.parent.mkdir(parents=True, exist_ok=True)  # only ever inside a staging folder
    write_bytes(path, buf.getvalue(), sync=True)


def load_rank_file(path: Path) -> dict[str, Tensor]:
    """A rank file's tensors (``weights_only=True``: no pickled code is ever run)."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as e:
        raise CheckpointError(path, "file not found") from e
    except Exception as e:  # torch raises many types on corrupt or unsafe files
        raise CheckpointError(path, f"unreadable ({type(e).__name__}: {e})") from e
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in data.items()
    ):
        raise CheckpointError(path, "must hold a dict of named tensors")
    for key, t in data.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise CheckpointError(path, "holds NaN or infinite values", key)
    return data


# ------------------------------------------------------------------- writing
def write_checkpoint(
    run: RunPaths,
    step: int,
    rank_tensors: dict[str, Tensor] | None,
    state: LoraState,
    staging_root: Path,
    base_name: str,
    delay_s: float = 0.0,
    stage: Path | None = None,
) -> None:
    """Publish ``checkpoints/step_<step>``: rank file and ``weight/`` (with its STABLE) are
    staged, the folder renamed into place, then ``STABLE``. ``delay_s`` (tests) sleeps
    between the files. With several ranks, every rank has written its rank file into the
    staged folder ``stage`` already (``rank_tensors`` None), so STABLE comes after all."""
    stage = staging_dir(staging_root) if stage is None else stage
    try:
        if rank_tensors is not None:
            save_rank_file(stage / rank_file_name(0), rank_tensors)
        time.sleep(delay_s)
        write_peft(stage / WEIGHT, state, base_name)
        mark_stable(stage / WEIGHT)
        ensure_subdir(run.checkpoints)
        publish_dir(stage, run.checkpoint(step))
        time.sleep(delay_s)
        mark_stable(run.checkpoint(step))
    finally:
        if stage.exists():
            remove_dir(stage)


def write_peft(folder: Path, state: LoraState, base_name: str) -> None:
    live = {p: s for p, s in state.items() if s[0].shape[0] > 0}
    peft_io.write_adapter(folder, {"base_model_name_or_path": base_name}, live)


def write_broadcast(
    run: RunPaths,
    step: int,
    state: LoraState,
    obs_norm: dict[str, Any] | None,
    staging_root: Path,
    base_name: str,
) -> None:
    """Publish ``broadcasts/step_<step>`` (adapter + obs_norm.json, then STABLE)."""
    stage = staging_dir(staging_root)
    try:
        staged = stage / "adapter"
        write_peft(staged, state, base_name)
        write_json(staged / OBS_NORM, obs_norm, indent=1, make_parent=False)
        ensure_subdir(run.broadcasts)
        publish_dir(staged, run.broadcast(step))
        mark_stable(run.broadcast(step))
    finally:
        remove_dir(stage)


def prune(folder_steps: Sequence[int], keep: int, remove: Any) -> None:
    """Call ``remove(step)`` for all but the ``keep`` newest steps."""
    for step in list(folder_steps)[: max(0, len(folder_steps) - keep)]:
        remove(step)
