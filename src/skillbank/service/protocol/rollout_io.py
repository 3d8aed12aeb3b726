"""Rollout files: written by an orchestrator, checked and read by the trainer.

``rollouts/step_<N>/rollout.safetensors`` holds flat tensors over B rows: ``obs [B, d]``
(already normalised), ``actions`` (``[B]`` int64 for discrete actions, ``[B, a]`` float32
for continuous ones), ``logp``, ``values``, ``advantages``, ``returns`` (``[B]`` float32).
``meta.json`` holds ``policy_step`` (the broadcast the rollout was collected with),
``episode_returns`` (episodes finished during the rollout), ``recent_return`` (mean of the
last 10 episodes of the run) and ``obs_norm`` (the run's running statistics).

The folder is staged (``rollouts/.step_<N>.tmp-*``) and renamed into place, so a
``step_<N>`` folder is always complete. ``read_rollout`` still checks everything: a
truncated or corrupt file, a wrong shape, dtype or value raises ``RolloutError`` naming
the file and the key.
"""

from __future__ import annotations

import math
import os
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from safetensors import SafetensorError
from torch import Tensor

from skillbank.errors import FormatError, SkillbankError
from skillbank.io import read_json, write_json
from skillbank.service.protocol.files import ensure_subdir, owner_tag
from skillbank.service.protocol.paths import ROLLOUT_META, ROLLOUT_TENSORS, RunPaths

FLOAT_KEYS = ("logp", "values", "advantages", "returns")
ROLLOUT_KEYS = ("obs", "actions", *FLOAT_KEYS)
MAX_ROWS = 10_000_000


class RolloutError(SkillbankError, ValueError):
    """A rollout the trainer refuses; the message names the file and the key or field."""

    def __init__(self, path: Path, problem: str, key: str | None = None) -> None:
        where = str(path) if key is None else f"{path}: key {key!r}"
        super().__init__(f"{where}: {problem}")


@dataclass
class Rollout:
    step: int
    tensors: dict[str, Tensor]
    policy_step: int
    episode_returns: list[float]
    recent_return: float | None
    obs_norm: dict[str, Any] | None


def write_rollout(
    run: RunPaths,
    step: int,
    batch: dict[str, Tensor],
    meta: dict[str, Any],
    keys: Sequence[str] = ROLLOUT_KEYS,
) -> None:
    """Publish ``rollouts/step_<step>`` with the tensors ``keys`` of ``batch`` (staged
    folder, then renamed; raises ``FileExistsError`` if it exists, ``OSError`` if the run
    folder vanished)."""
    ensure_subdir(run.rollouts)
    stage = run.rollout_staging(step, f"{owner_tag()}-{uuid.uuid4().hex[:8]}")
    stage.mkdir()
    try:
        tensors = {k: batch[k].detach().contiguous() for k in keys}
        safetensors.torch.save_file(tensors, str(stage / ROLLOUT_TENSORS))
        write_json(stage / ROLLOUT_META, meta, indent=1, sort_keys=True, make_parent=False)
        final = run.rollout(step)
        if final.exists():
            raise FileExistsError(f"{final} exists already")
        os.rename(stage, final)  # never replaces a non-empty step folder
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _check_meta(path: Path, meta: dict[str, Any], step: int, obs_dim: int) -> None:
    ps = meta.get("policy_step")
    if not isinstance(ps, int) or isinstance(ps, bool) or not 0 <= ps <= step:
        raise RolloutError(path, f"must be an int in [0, {step}], got {ps!r}", "policy_step")
    rets = meta.get("episode_returns", [])
    if not isinstance(rets, list) or not all(_number(r) for r in rets):
        raise RolloutError(path, "must be a list of finite numbers", "episode_returns")
    recent = meta.get("recent_return")
    if recent is not None and not _number(recent):
        raise RolloutError(
            path, f"must be a finite number or null, got {recent!r}", "recent_return"
        )
    norm = meta.get("obs_norm")
    if norm is None:
        return
    ok = isinstance(norm, dict) and _number(norm.get("count", 1.0))
    for part in ("mean", "var"):
        vals = norm.get(part) if isinstance(norm, dict) else None
        ok = ok and isinstance(vals, list) and len(vals) == obs_dim
        ok = ok and all(_number(v) for v in vals or [])
    if not ok or any(v < 0 for v in norm["var"]):
        raise RolloutError(
            path, f"must be {{mean: [{obs_dim}], var: [{obs_dim}] >= 0, count}}", "obs_norm"
        )


def check_keys(path: Path, tensors: dict[str, Tensor], keys: Sequence[str]) -> None:
    """RolloutError (file + key) unless ``tensors`` holds exactly ``keys``."""
    extra = sorted(set(tensors) - set(keys))
    if extra:
        raise RolloutError(path, f"unexpected key(s) {extra}; expected {list(keys)}")
    for key in keys:
        if key not in tensors:
            raise RolloutError(path, "missing", key)


def load_tensors(path: Path) -> dict[str, Tensor]:
    """A rollout's safetensors file; RolloutError if missing or unreadable."""
    try:
        return safetensors.torch.load_file(str(path))
    except FileNotFoundError as e:
        raise RolloutError(path, "file not found") from e
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise RolloutError(path, f"corrupt or truncated safetensors file ({e})") from e


def load_meta(path: Path) -> dict[str, Any]:
    """A rollout's meta.json (a JSON object); RolloutError if missing or unreadable."""
    try:
        return read_json(path)
    except FormatError as e:
        raise RolloutError(path, str(e).split(": ", 1)[-1]) from e


def check_tensors(
    path: Path, tensors: dict[str, Tensor], obs_dim: int, action_kind: str, action_dim: int
) -> int:
    """Check a rollout's tensors; returns the row count B."""
    check_keys(path, tensors, ROLLOUT_KEYS)
    obs = tensors["obs"]
    if obs.dtype != torch.float32 or obs.dim() != 2 or obs.shape[1] != obs_dim:
        raise RolloutError(
            path, f"{obs.dtype} {tuple(obs.shape)}, expected float32 [B, {obs_dim}]", "obs"
        )
    rows = obs.shape[0]
    if not 1 <= rows <= MAX_ROWS:
        raise RolloutError(path, f"{rows} rows, expected 1..{MAX_ROWS}", "obs")
    for key in FLOAT_KEYS:
        t = tensors[key]
        if t.dtype != torch.float32 or tuple(t.shape) != (rows,):
            raise RolloutError(path, f"{t.dtype} {tuple(t.shape)}, expected float32 [{rows}]", key)
    act = tensors["actions"]
    if action_kind == "discrete":
        if act.dtype != torch.int64 or tuple(act.shape) != (rows,):
            raise RolloutError(
                path, f"{act.dtype} {tuple(act.shape)}, expected int64 [{rows}]", "actions"
            )
        if bool(((act < 0) | (act >= action_dim)).any()):
            raise RolloutError(path, f"values outside [0, {action_dim})", "actions")
    elif act.dtype != torch.float32 or tuple(act.shape) != (rows, action_dim):
        raise RolloutError(
            path,
            f"{act.dtype} {tuple(act.shape)}, expected float32 [{rows}, {action_dim}]",
            "actions",
        )
    for key in ROLLOUT_KEYS:
        t = tensors[key]
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise RolloutError(path, "holds NaN or infinite values", key)
    return rows


def read_rollout(
    run: RunPaths, step: int, obs_dim: int, action_kind: str, action_dim: int
) -> Rollout:
    """Read and check ``rollouts/step_<step>``; ``RolloutError`` if anything is wrong."""
    tensors = load_tensors(run.rollout_tensors(step))
    check_tensors(run.rollout_tensors(step), tensors, obs_dim, action_kind, action_dim)
    meta = load_meta(run.rollout_meta(step))
    _check_meta(run.rollout_meta(step), meta, step, obs_dim)
    return Rollout(
        step=step,
        tensors=tensors,
        policy_step=meta["policy_step"],
        episode_returns=[float(r) for r in meta.get("episode_returns", [])],
        recent_return=meta.get("recent_return"),
        obs_norm=meta.get("obs_norm"),
    )
