"""Every change of the trainer's slots, applied on every rank in the same order.

The trainer (and its registry) change the model and optimiser only through ``SlotOps``:
``fresh`` (a new adapter), ``load`` (resume from a checkpoint), ``clear`` (release),
``update`` (one batched PPO update) and ``checkpoint``. With one process these act
directly. With ``torchrun`` (see ``dist``), rank 0 runs the trainer and each operation is
first sent to the other ranks as a command, which ``follow`` (their whole main loop)
applies in turn; the operations that read or write files end with an agreement, so a
failure on any rank is a failure on all of them.

Checkpoints: each rank writes its own shard ``trainer/rank_<k>.pt`` into the staged
folder, then rank 0 writes ``weight/``, publishes the folder and writes ``STABLE``.
Resuming reads each rank's shard on that rank and gathers them; a checkpoint sharded for
another world size is refused (``WorldSizeError``; ``skillbank consolidate`` merges it).
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable
from itertools import groupby
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from skillbank.config import validate
from skillbank.service.kinds import KINDS
from skillbank.service.kinds.batch import RunBatch, UpdateContext, UpdateResult
from skillbank.service.protocol.base import load_base
from skillbank.service.protocol.checkpoint import (
    DIST_WORLD,
    CheckpointError,
    WorldSizeError,
    load_rank_file,
    merge_shards,
    save_rank_file,
    shard_tensors,
    shard_world_size,
    write_checkpoint,
)
from skillbank.service.protocol.files import remove_dir, staging_dir
from skillbank.service.protocol.info import TrainerInfo
from skillbank.service.protocol.paths import RunPaths, rank_file_name
from skillbank.service.trainer.dist import Dist
from skillbank.service.trainer.slots import load_slot, rank_tensors

HEARTBEAT_S = 1.0
"""Rank 0 sends a no-op at least this often, so idle followers never hit a timeout."""


class PeerError(CheckpointError):
    """A checkpoint failure reported by another rank (its message names the file)."""

    def __init__(self, message: str) -> None:
        ValueError.__init__(self, message)


def world_size_error(source: Path, folder: Path, found: int, world: int) -> WorldSizeError:
    return WorldSizeError(
        source,
        f"checkpoint sharded by {found} trainer ranks (rank_0.pt .. rank_{found - 1}.pt), "
        f"this trainer has {world}: resume it on {found} ranks, or merge it first with "
        f"`skillbank consolidate {folder}`",
        DIST_WORLD,
    )


class SlotOps:
    """The trainer's slot operations (see the module docstring). It holds what they
    change (``ctx``: model, optimiser, PPO settings, generator) and where checkpoints are
    staged, not the trainer."""

    def __init__(
        self,
        ctx: UpdateContext,
        staging: Path,
        base_name: str,
        dist: Dist | None,
        checkpoint_delay_s: float = 0.0,
    ) -> None:
        self.ctx, self.dist = ctx, dist
        self.model, self.opt = ctx.model, ctx.opt
        self.staging, self.base_name, self.delay = staging, base_name, checkpoint_delay_s
        self.world = 1 if dist is None else dist.world_size
        self.last_sent = time.monotonic()

    def _send(self, cmd: dict[str, Any]) -> None:
        if self.dist is not None and self.dist.is_driver:
            self.dist.broadcast_json(cmd)
            self.last_sent = time.monotonic()

    # ------------------------------------------------------------ commands
    def fresh(self, slot: int, rank: int, alpha: float, seed: int) -> None:
        self._send({"op": "fresh", "slot": slot, "rank": rank, "alpha": alpha, "seed": seed})
        gen = torch.Generator().manual_seed(seed)
        self.model.reset_slot(slot, rank, alpha, generator=gen)
        self.opt.reset_slot(slot)

    def clear(self, slot: int) -> None:
        self._send({"op": "clear", "slot": slot})
        self.model.zero_slot(slot)
        self.opt.reset_slot(slot)

    def load(self, slot: int, paths: RunPaths, step: int) -> tuple[dict[str, Any] | None, bool]:
        """Resume ``slot`` from ``checkpoints/step_<step>`` -> (obs_norm, had optimiser
        state). Raises ``CheckpointError`` (``WorldSizeError`` for a foreign sharding)."""
        source, folder = paths.rank_file(step), paths.checkpoint(step)
        first = load_rank_file(source)
        found = shard_world_size(first, source)
        if found not in (1, self.world):
            raise world_size_error(source, folder, found, self.world)
        self._send({"op": "load", "slot": slot, "folder": str(folder), "world": found})
        return self._load(slot, folder, found, first)

    def _load(
        self, slot: int, folder: Path, found: int, first: dict[str, Tensor] | None
    ) -> tuple[dict[str, Any] | None, bool]:
        d = self.dist
        source = folder / rank_file_name(0)
        if d is None:
            assert first is not None
            return load_slot(self.model, self.opt, slot, first, source)
        if found == 1:  # a whole checkpoint (consolidated, converted): rank 0 shares it
            full = d.broadcast_tensors(first if d.is_driver else None)
        else:
            mine, error = first, None
            if not d.is_driver:
                try:
                    mine = load_rank_file(folder / rank_file_name(d.rank))
                except CheckpointError as e:
                    error = str(e)
            error = d.agree(error)
            if error is not None:
                raise PeerError(error)
            shards = [d.broadcast_tensors(mine if k == d.rank else None, k) for k in range(found)]
            full = merge_shards(shards, [folder / rank_file_name(k) for k in range(found)])
        error = None
        result: tuple[dict[str, Any] | None, bool] = (None, False)
        try:
            result = load_slot(self.model, self.opt, slot, full, source)
        except Exception as e:  # every rank must reach the agreement below
            error = str(e) if isinstance(e, CheckpointError) else f"{source}: {e!r}"
        error = d.agree(error)
        if error is not None:
            raise PeerError(error)
        return result

    def update(self, parts: list[RunBatch]) -> UpdateResult:
        """One update per run kind present (each kind's registered ``update``)."""
        if self.dist is not None and self.dist.is_driver:  # followers got them in `follow`
            self._send({"op": "update", "parts": [[p.slot, p.lr, p.kind] for p in parts]})
            for p in parts:
                self.dist.broadcast_tensors(p.tensors)
        result = UpdateResult()
        for kind, group in groupby(sorted(parts, key=lambda p: p.kind), key=lambda p: p.kind):
            result.merge(KINDS.get(kind).part("update")(self.ctx, list(group)))
        return result

    def checkpoint(
        self, paths: RunPaths, slot: int, step: int, obs_norm: dict[str, Any] | None
    ) -> None:
        """Write ``checkpoints/step_<step>`` of the run in ``slot`` (raises ``OSError``)."""
        tensors = rank_tensors(self.model, self.opt, slot, step, obs_norm)
        state = self.model.slot_state(slot)
        delay, staging, name = self.delay, self.staging, self.base_name
        if self.dist is None:
            write_checkpoint(paths, step, tensors, state, staging, name, delay)
            return
        stage = staging_dir(staging)
        cmd = {"op": "checkpoint", "slot": slot, "step": step, "obs_norm": obs_norm}
        self._send({**cmd, "stage": str(stage)})
        try:
            self._write_shard(stage, tensors)
        except OSError:
            remove_dir(stage)
            raise
        write_checkpoint(paths, step, None, state, staging, name, delay, stage)

    def _write_shard(self, stage: Path, tensors: dict[str, Tensor]) -> None:
        d = self.dist
        assert d is not None
        error = None
        try:
            shard = shard_tensors(tensors, d.rank, d.world_size)
            save_rank_file(stage / rank_file_name(d.rank), shard)
        except Exception as e:  # every rank must reach the agreement below
            error = f"rank {d.rank}: {e!r}"
        error = d.agree(error)
        if error is not None:
            raise OSError(error)

    def heartbeat(self) -> None:
        if self.dist is not None and time.monotonic() - self.last_sent > HEARTBEAT_S:
            self._send({"op": "noop"})

    def stop(self) -> None:
        self._send({"op": "stop"})


def share_base(
    dist: Dist, resolve: Callable[[], tuple[nn.Module, TrainerInfo]]
) -> tuple[nn.Module, TrainerInfo]:
    """Rank 0 resolves the base (``resolve``) and announces it; the other ranks load the
    same base (checked against its digest) from the folder it names."""
    if dist.is_driver:
        try:
            base, info = resolve()
        except Exception as e:
            dist.broadcast_json({"error": f"{type(e).__name__}: {e}"})
            raise
        dist.broadcast_json({"info": info.to_dict()})
        return base, info
    msg = dist.broadcast_json()
    if "error" in msg:  # rank 0 reports it; this rank only leaves
        print(f"[trainer rank {dist.rank}] rank 0 could not start", file=sys.stderr)
        raise SystemExit(2)
    info = validate(TrainerInfo, msg["info"], "trainer.json of rank 0")
    return load_base(info), info


def follow(ops: SlotOps) -> None:
    """A follower rank's main loop: apply rank 0's commands until it says stop."""
    d = ops.dist
    assert d is not None and not d.is_driver
    while True:
        cmd = d.broadcast_json()
        op = cmd["op"]
        if op == "stop":
            return
        if op == "fresh":
            ops.fresh(cmd["slot"], cmd["rank"], cmd["alpha"], cmd["seed"])
        elif op == "clear":
            ops.clear(cmd["slot"])
        elif op == "load":
            with contextlib.suppress(CheckpointError):  # rank 0 reports it
                ops._load(cmd["slot"], Path(cmd["folder"]), cmd["world"], None)
        elif op == "update":
            parts = [RunBatch(s, lr, d.broadcast_tensors(None), k) for s, lr, k in cmd["parts"]]
            ops.update(parts)
        elif op == "checkpoint":
            tensors = rank_tensors(ops.model, ops.opt, cmd["slot"], cmd["step"], cmd["obs_norm"])
            with contextlib.suppress(OSError):  # rank 0 reports it
                ops._write_shard(Path(cmd["stage"]), tensors)
        elif op != "noop":
            raise ValueError(f"unknown trainer command {op!r} from rank 0")
