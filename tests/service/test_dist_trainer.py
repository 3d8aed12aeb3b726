"""The trainer on 2 gloo ranks (torchrun, CPU) against the same trainer on 1 process, fed
the same hand-written rollouts: equal losses and adapters; a 2-rank checkpoint resumes on
2 ranks (from its shards, or from one merged file), is refused by 1 rank (naming the
file), and resumes on 1 after consolidation, continuing exactly as the 2-rank trainer does.

Tolerance: per-update losses agree to rtol 1e-5 (atol 1e-7), adapters and Adam moments to
atol 1e-6. The ranks sum partial gradients in another order than one process, so they
are equal up to float32 rounding (about 1e-7 relative per update)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import torch
from svc_helpers import fake_meta, fake_rollout, write_orch, write_trainer_toml

from proc_helpers import Procs, read_jsonl, wait_for
from skillbank.service.protocol.checkpoint import (
    DIST_WORLD,
    is_sharded_key,
    load_rank_file,
    merge_shards,
)
from skillbank.service.protocol.paths import RunPaths
from skillbank.service.protocol.rollout_io import write_rollout
from skillbank.service.tools.consolidate import consolidate

NAMES = ("a", "b")
STATS = ("policy_loss", "value_loss", "entropy", "approx_kl")


def _feed(out: Path, steps: range) -> dict[str, RunPaths]:
    runs = {}
    for i, name in enumerate(NAMES):
        runs[name] = RunPaths(out, name)
        for s in steps:
            rollout = fake_rollout(256, seed=100 * i + s)
            write_rollout(runs[name], s, rollout, fake_meta(s))
    return runs


def _setup(out: Path, tmp: Path) -> Path:
    out.mkdir(parents=True)
    for i, name in enumerate(NAMES):
        write_orch(out, name, max_steps=8, seed=i)
    _feed(out, range(4))
    return write_trainer_toml(tmp / f"{out.name}.toml", out, checkpoint_interval=2)


def _ckpt_done(out: Path, step: int) -> bool:
    return all(RunPaths(out, n).newest_stable_checkpoint() == step for n in NAMES)


def _losses(out: Path, name: str) -> dict[int, list[float]]:
    rows = read_jsonl(RunPaths(out, name).trainer_log)
    return {r["step"]: [r[k] for k in STATS] for r in rows if r.get("event") == "step"}


def _close_losses(x: Path, y: Path, steps: list[int]) -> None:
    for name in NAMES:
        lx, ly = _losses(x, name), _losses(y, name)
        for s in steps:
            assert torch.allclose(
                torch.tensor(lx[s], dtype=torch.float64),
                torch.tensor(ly[s], dtype=torch.float64),
                rtol=1e-5,
                atol=1e-7,
            ), (name, s, lx[s], ly[s])


def _close_tensors(x: dict[str, torch.Tensor], y: dict[str, torch.Tensor]) -> None:
    assert sorted(x) == sorted(y)
    for k in x:
        assert torch.allclose(x[k].double(), y[k].double(), atol=1e-6), k


def test_two_ranks_match_one_resume_and_consolidate(tmp_path: Path, procs: Procs) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    cfg_one, cfg_two = _setup(one, tmp_path), _setup(two, tmp_path)
    t1 = procs.start("t1", "trainer", "--config", str(cfg_one))
    t2 = procs.start("t2", "trainer", "--config", str(cfg_two), "--nproc", "2")
    wait_for(lambda: _ckpt_done(one, 4) and _ckpt_done(two, 4), 120, "4 updates", [t1, t2])
    assert Procs.stop(t1) == 0
    assert Procs.stop(t2) == 0  # SIGTERM: a clean stop looks clean (exit 0, one line)
    log = procs.log("t2")
    assert "2 ranks" in log and "Traceback" not in log and "SignalException" not in log
    assert log.count("stopped by SIGTERM") == 1

    # the same losses and the same state; the 2-rank checkpoint is sharded over 2 files
    _close_losses(one, two, [1, 2, 3, 4])
    for name in NAMES:
        run1, run2 = RunPaths(one, name), RunPaths(two, name)
        whole = load_rank_file(run1.rank_file(4))
        shards = [load_rank_file(run2.rank_file(4, k)) for k in range(2)]
        assert [int(s[DIST_WORLD]) for s in shards] == [2, 2] and DIST_WORLD not in whole
        large = [k for k in whole if is_sharded_key(k)]
        assert all(sum(k in s for s in shards) == 1 for k in large)  # each in one file
        _close_tensors(whole, merge_shards(shards, [run2.rank_file(4, k) for k in range(2)]))

    # a 1-rank trainer refuses the sharded checkpoint, naming the file and the remedy
    three = tmp_path / "three"
    shutil.copytree(two, three)
    cfg_three = write_trainer_toml(tmp_path / "three.toml", three, checkpoint_interval=2)
    t3 = procs.start("t3", "trainer", "--config", str(cfg_three))
    errors = [RunPaths(three, n).config_error for n in NAMES]
    wait_for(lambda: all(e.is_file() for e in errors), 60, "world-size errors", [t3])
    Procs.stop(t3)
    message = errors[0].read_text()
    assert str(RunPaths(three, "a").rank_file(4)) in message
    assert "2 trainer ranks" in message and "skillbank consolidate" in message
    assert (RunPaths(three, "a").rank_file(4, 1)).is_file()  # nothing was changed

    # consolidate (CLI for a, function for b), then resume: 2 ranks on `two`, 1 on `three`
    folder = RunPaths(three, "a").checkpoint(4)
    cmd = [sys.executable, "-m", "skillbank.cli.service", "consolidate", str(folder)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "merged 2 rank files" in done.stdout, done.stderr
    assert consolidate(RunPaths(three, "b").checkpoint(4)) == (2, 4)
    for name in NAMES:
        run = RunPaths(three, name)
        assert not run.rank_file(4, 1).exists() and DIST_WORLD not in load_rank_file(
            run.rank_file(4)
        )
    assert consolidate(folder) == (1, 4)  # again: nothing left to merge

    # on 2 ranks, run a resumes from its 2 shards, run b from one whole (merged) file
    assert consolidate(RunPaths(two, "b").checkpoint(4)) == (2, 4)
    for out in (two, three):
        _feed(out, range(4, 6))
    t2 = procs.start("t2b", "trainer", "--config", str(cfg_two), "--nproc", "2")
    t3 = procs.start("t3b", "trainer", "--config", str(cfg_three))
    wait_for(lambda: _ckpt_done(two, 6) and _ckpt_done(three, 6), 120, "resumed", [t2, t3])
    os.kill(t2.pid, signal.SIGINT)  # Ctrl-C
    assert t2.wait(30) == 0 and "Traceback" not in procs.log("t2b")
    assert "stopped by SIGINT" in procs.log("t2b")
    Procs.stop(t3)
    for out in (two, three):
        resumed = [e for e in read_jsonl(out / "trainer_log.jsonl") if e["event"] == "resumed"]
        assert len(resumed) == 2 and all(e["step"] == 4 for e in resumed)
        assert all("optimiser state restored" in e["message"] for e in resumed)
    _close_losses(two, three, [5, 6])
    for name in NAMES:
        run2, run3 = RunPaths(two, name), RunPaths(three, name)
        shards = [load_rank_file(run2.rank_file(6, k)) for k in range(2)]
        merged = merge_shards(shards, [run2.rank_file(6, k) for k in range(2)])
        _close_tensors(merged, load_rank_file(run3.rank_file(6)))
