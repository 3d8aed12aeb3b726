"""Merge a sharded checkpoint's rank files into one, so the run resumes on any world size.

A trainer on W > 1 ranks writes ``checkpoints/step_<N>/trainer/rank_<k>.pt`` for
k < W, each holding its share of the large tensors (see ``checkpoint.shard_tensors``).
``consolidate`` reads them all, checks that they belong together, and replaces
``rank_0.pt`` with the whole checkpoint (atomically: temp file, fsync, ``os.replace``),
then deletes the other rank files. ``STABLE`` and ``weight/`` are not touched; a
checkpoint without ``STABLE`` (incomplete) is refused. Interrupted at any moment, the
checkpoint stays usable: before the replace it is the sharded one, after it ``rank_0.pt``
is whole (its lack of ``dist.*`` keys says so) and leftover rank files are ignored by the
trainer and removed by running ``consolidate`` again.
"""

from __future__ import annotations

import os
from pathlib import Path

from skillbank.service.protocol.checkpoint import (
    CheckpointError,
    adapter_state,
    load_rank_file,
    merge_shards,
    optimizer_state,
    save_rank_file,
    shard_world_size,
)
from skillbank.service.protocol.paths import (
    PathError,
    RunPaths,
    parse_step,
    rank_files,
    run_from_dir,
)


def checkpoint_of(folder: str | os.PathLike[str]) -> tuple[RunPaths, int]:
    """``OUT/run_<name>/checkpoints/step_<N>`` -> (the run, N)."""
    path = Path(folder)
    step = parse_step(path.name)
    if step is None or path.parent.name != "checkpoints":
        raise PathError(f"{path}: not a checkpoint folder OUT/run_<name>/checkpoints/step_<N>")
    return run_from_dir(path.parent.parent), step


def consolidate(folder: str | os.PathLike[str]) -> tuple[int, int]:
    """Merge the checkpoint ``folder``'s rank files -> (world size it had, step)."""
    run, step = checkpoint_of(folder)
    if not run.checkpoint(step).is_dir():
        raise FileNotFoundError(f"{run.checkpoint(step)}: checkpoint folder not found")
    if not run.checkpoint_stable(step).is_file():
        raise CheckpointError(
            run.checkpoint_stable(step), "missing: an incomplete checkpoint is never read"
        )
    first_path = run.rank_file(step, 0)
    first = load_rank_file(first_path)
    world = shard_world_size(first, first_path)
    if world > 1:
        sources = [run.rank_file(step, k) for k in range(world)]
        shards = [first] + [load_rank_file(p) for p in sources[1:]]
        merged = merge_shards(shards, sources)
        adapter_state(merged, first_path)  # the merged checkpoint must be usable as a whole
        optimizer_state(merged, first_path)
        save_rank_file(first_path, merged)
    for k in rank_files(run, step):
        if k > 0:  # now (or already) merged into rank_0.pt
            run.rank_file(step, k).unlink(missing_ok=True)
    return world, step
