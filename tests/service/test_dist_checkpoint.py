"""Sharded checkpoints of a multi-rank trainer (sharding, merging, ``consolidate``) and the
``skillbank trainer --nproc N`` launcher."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from skillbank.cli.service import main as service_main
from skillbank.service.protocol.checkpoint import (
    DIST_RANK,
    DIST_WORLD,
    CheckpointError,
    is_sharded_key,
    load_rank_file,
    merge_shards,
    save_rank_file,
    shard_tensors,
)
from skillbank.service.protocol.paths import PathError, RunPaths, rank_files
from skillbank.service.tools.consolidate import consolidate


def _tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    out = {"run.step": torch.tensor(6), "optim.step": torch.tensor(96)}
    for layer in ("net.0", "net.2", "pi"):
        out[f"lora.{layer}.A"] = torch.randn(8, 64, generator=g)
        out[f"lora.{layer}.B"] = torch.randn(64, 8, generator=g)
        out[f"lora.{layer}.alpha"] = torch.tensor(2.0, dtype=torch.float64)
        for part in ("A", "B"):
            out[f"optim.{layer}.{part}.exp_avg"] = torch.randn(8, 64, generator=g)
            out[f"optim.{layer}.{part}.exp_avg_sq"] = torch.rand(8, 64, generator=g)
    out["obs_norm.mean"] = torch.zeros(100, dtype=torch.float64)  # large, yet in every file
    return out


def test_shards_split_large_tensors_and_merge_back() -> None:
    full = _tensors()
    assert shard_tensors(full, 0, 1) == full  # one rank: the whole checkpoint, no dist keys
    shards = [shard_tensors(full, k, 3) for k in range(3)]
    large = [k for k in full if is_sharded_key(k)]
    assert len(large) == 18
    assert all(sum(k in s for s in shards) == 1 for k in large)  # each in exactly one file
    assert all(len([k for k in s if k in large]) == 6 for s in shards)  # balanced
    for key in ("run.step", "optim.step", "lora.pi.alpha", "obs_norm.mean"):  # in every file
        assert all(torch.equal(s[key], full[key]) for s in shards)
    assert [int(s[DIST_RANK]) for s in shards] == [0, 1, 2]
    files = [Path(f"rank_{k}.pt") for k in range(3)]
    merged = merge_shards(shards, files)
    assert sorted(merged) == sorted(full) and all(torch.equal(merged[k], full[k]) for k in full)

    with pytest.raises(CheckpointError, match=r"rank_1.pt: key 'dist.rank'.*rank 1"):
        merge_shards([shards[0], shards[2], shards[1]], files)
    with pytest.raises(CheckpointError, match=r"written by 3 ranks, expected 2"):
        merge_shards(shards[:2], files[:2])
    other = {**shards[1], "run.step": torch.tensor(8)}  # a file of another checkpoint
    with pytest.raises(CheckpointError, match=r"rank_1.pt: key 'run.step': differs"):
        merge_shards([shards[0], other, shards[2]], files)


def _sharded_checkpoint(out: Path, world: int, stable: bool = True) -> RunPaths:
    run = RunPaths(out, "a")
    run.checkpoint(6).mkdir(parents=True)
    full = _tensors()
    for k in range(world):
        save_rank_file(run.rank_file(6, k), shard_tensors(full, k, world))
    if stable:
        (run.checkpoint_stable(6)).write_text("")
    return run


def test_consolidate_merges_atomically_and_refuses_bad_checkpoints(tmp_path: Path) -> None:
    run = _sharded_checkpoint(tmp_path / "out", 2)
    before = load_rank_file(run.rank_file(6, 1))
    run.rank_file(6, 1).rename(tmp_path / "away.pt")
    with pytest.raises(CheckpointError, match=r"rank_1.pt: file not found"):
        consolidate(run.checkpoint(6))
    assert int(load_rank_file(run.rank_file(6))[DIST_WORLD]) == 2  # nothing changed
    (tmp_path / "away.pt").rename(run.rank_file(6, 1))

    assert consolidate(run.checkpoint(6)) == (2, 6)
    whole = load_rank_file(run.rank_file(6))
    assert DIST_WORLD not in whole and DIST_RANK not in whole
    assert all(torch.equal(whole[k], t) for k, t in _tensors().items())
    assert sorted(whole) == sorted(_tensors())
    assert rank_files(run, 6) == [0] and run.checkpoint_stable(6).is_file()
    # interrupted after the replace: a leftover rank file is removed by running it again
    save_rank_file(run.rank_file(6, 1), before)
    assert consolidate(run.checkpoint(6)) == (1, 6) and rank_files(run, 6) == [0]

    unstable = _sharded_checkpoint(tmp_path / "out2", 2, stable=False)
    with pytest.raises(CheckpointError, match=r"STABLE: missing"):
        consolidate(unstable.checkpoint(6))
    with pytest.raises(PathError, match="not a checkpoint folder"):
        consolidate(unstable.root)


def test_consolidate_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _sharded_checkpoint(tmp_path / "out", 2)
    run.rank_file(6, 0).write_bytes(b"not a checkpoint")
    assert service_main(["consolidate", str(run.checkpoint(6))]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "rank_0.pt: unreadable" in err
    assert service_main(["consolidate", str(tmp_path / "out" / "run_a" / "checkpoints")]) == 2
    assert "not a checkpoint folder" in capsys.readouterr().err


def test_trainer_launcher(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from skillbank.cli.service import build_parser
    from skillbank.service.trainer.main import torchrun_command

    args = build_parser().parse_args(["trainer", "--config", "t.toml", "--nproc", "3"])
    cmd = torchrun_command(args)
    assert cmd[1:] == [
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=3",
        "-m",
        "skillbank.service.trainer",
        "--config",
        "t.toml",
    ]
    assert service_main(["trainer", "--config", "t.toml", "--nproc", "0"]) == 2
    assert "--nproc must be >= 1" in capsys.readouterr().err
