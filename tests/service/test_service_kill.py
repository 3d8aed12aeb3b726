"""Slow, real processes: kill -9 of the trainer at five moments (one inside a checkpoint
write); each restart resumes every run from its newest STABLE checkpoint with exactly the
checkpointed tensors; no published file is ever unreadable; the orchestrators carry on."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from svc_helpers import status, write_orch, write_trainer_toml

from proc_helpers import Procs, read_jsonl, wait_for
from skillbank.lora import peft_io
from skillbank.service.protocol.checkpoint import adapter_state, load_rank_file
from skillbank.service.protocol.paths import OutPaths, RunPaths, stable_steps, steps
from skillbank.service.protocol.rollout_io import read_rollout

pytestmark = pytest.mark.slow

MAX_STEPS = 60


def _same(x: dict, y: dict) -> bool:
    return x.keys() == y.keys() and all(
        torch.equal(x[k][0], y[k][0]) and torch.equal(x[k][1], y[k][1]) and x[k][2] == y[k][2]
        for k in x
    )


def _check_readable(run: RunPaths) -> None:
    """Everything published (STABLE, or a renamed rollout folder) reads cleanly."""
    for step in stable_steps(run.broadcasts):
        peft_io.read_adapter(run.broadcast(step))
    for step in stable_steps(run.checkpoints):
        load_rank_file(run.rank_file(step))
        assert run.weight_stable(step).is_file()
        peft_io.read_adapter(run.weight(step))
    for step in steps(run.rollouts):
        read_rollout(run, step, 4, "discrete", 2)


def _staged_rank_file(out: Path) -> bool:
    staging = OutPaths(out).staging
    return any(
        (d / "trainer" / "rank_0.pt").is_file() and not (d / "weight").exists()
        for d in (staging.iterdir() if staging.is_dir() else [])
    )


def _unstable_checkpoint(runs: list[RunPaths]) -> bool:
    return any(
        r.checkpoint(s).is_dir() and not r.checkpoint_stable(s).exists()
        for r in runs
        for s in steps(r.checkpoints)
    )


def _mtime(path: Path) -> float:
    """Modification time, or -1 while the file is missing (a broadcast being re-published
    is withdrawn first)."""
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return -1.0


def test_kill9_at_five_moments(tmp_path: Path, procs: Procs) -> None:
    out = tmp_path / "out"
    small = {"envs_per_task": 4, "rollout_steps": 64, "max_steps": MAX_STEPS}
    runs = [write_orch(out, "a", task="cartpole", **small), write_orch(out, "b", **small)]
    toml = write_trainer_toml(
        tmp_path / "trainer.toml",
        out,
        checkpoint_interval=3,
        keep_checkpoints=3,
        keep_broadcasts=1000,
        debug_checkpoint_delay_s=0.25,
    )
    trainer = procs.start("trainer", "trainer", "--config", str(toml))
    orchs = [procs.start(f"orch_{r.name}", "orchestrator", "--run", str(r.root)) for r in runs]
    wait_for(lambda: all(r.broadcast_stable(0).is_file() for r in runs), 60, "admitted", [trainer])
    fresh = {r.name: peft_io.read_adapter(r.broadcast(0)).state for r in runs}

    def step_of(name: str) -> int:
        return int(status(out).get(name, {}).get("step", -1))

    def after_new_stable() -> Callable[[], bool]:
        before = runs[0].newest_stable_checkpoint() or 0
        return lambda: (runs[0].newest_stable_checkpoint() or 0) > before

    def mid_update() -> Callable[[], bool]:
        start = step_of("a")
        return lambda: step_of("a") >= start + 2 and runs[0].rollout(step_of("a")).is_dir()

    moments: list[tuple[str, Callable[[], Callable[[], bool]]]] = [
        ("before any checkpoint", lambda: lambda: step_of("a") >= 1),
        ("rank file staged, weight/ not yet", lambda: lambda: _staged_rank_file(out)),
        ("checkpoint renamed, STABLE not yet", lambda: lambda: _unstable_checkpoint(runs)),
        ("just after a checkpoint", after_new_stable),
        ("during an update", mid_update),
    ]
    for what, make_cond in moments:
        wait_for(make_cond(), 120, what, [trainer, *orchs], every=0.005)
        Procs.kill9(trainer)
        expected = {r.name: r.newest_stable_checkpoint() for r in runs}
        for r in runs:
            _check_readable(r)
        restart = time.time()
        trainer = procs.start("trainer", "trainer", "--config", str(toml))

        def admitted(since: float = restart) -> list[dict]:
            log = read_jsonl(out / "trainer_log.jsonl")
            return [e for e in log if e["time"] >= since and e["event"] in ("resumed", "started")]

        wait_for(lambda: len([e for e in admitted() if "run" in e]) == 2, 60, f"{what}: resume")
        for event in (e for e in admitted() if "run" in e):
            run = next(r for r in runs if r.name == event["run"])
            step = expected[run.name]
            if step is None:
                assert event["event"] == "started", (what, event)
                got = peft_io.read_adapter(run.broadcast(0)).state
                assert _same(got, fresh[run.name]), what  # the same seeded initial adapter
                continue
            assert event["event"] == "resumed" and event["step"] == step, (what, event)
            stable = run.broadcast_stable(step)
            wait_for(lambda f=stable, t=restart: _mtime(f) >= t - 1, 10, "rewritten")
            published = peft_io.read_adapter(run.broadcast(step)).state
            tensors = load_rank_file(run.rank_file(step))
            assert _same(published, adapter_state(tensors, run.rank_file(step))), what
            assert _same(published, peft_io.read_adapter(run.weight(step)).state), what
        assert all(o.poll() is None for o in orchs), f"{what}: an orchestrator stopped"

    for orch in orchs:
        wait_for(lambda o=orch: o.poll() is not None, 240, "runs finish", [trainer])
        assert orch.returncode == 0
    wait_for(lambda: all(status(out)[r.name]["state"] == "done" for r in runs), 30, "done")
    for r in runs:
        _check_readable(r)
        assert r.newest_stable_checkpoint() == MAX_STEPS
        assert all(r.checkpoint_stable(s).is_file() for s in steps(r.checkpoints))
    assert not any(OutPaths(out).staging.iterdir())
    assert Procs.stop(trainer) == 0
