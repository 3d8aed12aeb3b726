"""Real processes, started here and stopped by their pids: an orchestrator against a
hand-driven trainer (max_async_level), and a trainer fed bad inputs."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from svc_helpers import (
    fake_meta,
    fake_rollout,
    fake_trainer,
    status,
    write_orch,
    write_trainer_toml,
)

from proc_helpers import Procs, read_jsonl, wait_for
from skillbank.lora import peft_io
from skillbank.service.protocol.checkpoint import write_broadcast
from skillbank.service.protocol.paths import OutPaths, RunPaths, steps
from skillbank.service.protocol.rollout_io import write_rollout


def _metas(run: RunPaths) -> dict[int, dict]:
    return {s: json.loads(run.rollout_meta(s).read_text()) for s in steps(run.rollouts)}


@pytest.mark.parametrize("k", [0, 2])
def test_orchestrator_enforces_max_async_level(tmp_path: Path, procs: Procs, k: int) -> None:
    out = tmp_path / "out"
    _, model = fake_trainer(out, k)
    run = write_orch(out, "a", max_steps=50, envs_per_task=2, rollout_steps=16)
    staging = OutPaths(out).staging

    def broadcast(step: int) -> None:
        write_broadcast(run, step, model.slot_state(0), None, staging, "test")

    broadcast(0)
    orch = procs.start("orch", "orchestrator", "--run", str(run.root))
    for version in range(3):
        last = version + k  # rollout n needs a broadcast >= n - k
        folder = run.rollout(last)
        wait_for(folder.is_dir, 60, f"rollout {last}", alive=[orch])
        time.sleep(1.0)  # it would have written several more by now if it were not blocked
        assert steps(run.rollouts) == list(range(last + 1))
        broadcast(version + 1)
    metas = _metas(run)
    assert all(n - m["policy_step"] <= k for n, m in metas.items())
    assert [metas[n]["policy_step"] for n in range(k + 1)] == [0] * (k + 1)
    assert metas[k + 1]["policy_step"] == 1 and metas[k + 2]["policy_step"] == 2
    Procs.stop(orch)


def _publish_raw(run: RunPaths, step: int, tensors: dict, truncate: bool = False) -> None:
    """Publish a rollout as an orchestrator does (staged, renamed), possibly truncated."""
    stage = run.rollouts / f".tmp-{step}"
    stage.mkdir(parents=True)
    save_file(tensors, str(stage / "rollout.safetensors"))
    if truncate:
        data = (stage / "rollout.safetensors").read_bytes()
        (stage / "rollout.safetensors").write_bytes(data[: len(data) // 2])
    (stage / "meta.json").write_text(json.dumps(fake_meta(step)))
    os.replace(stage, run.rollout(step))


def _adapter(run: RunPaths, step: int) -> list[torch.Tensor]:
    state = peft_io.read_adapter(run.broadcast(step)).state
    return [t for k in sorted(state) for t in state[k][:2]]


def _same(x: list[torch.Tensor], y: list[torch.Tensor]) -> bool:
    return all(torch.equal(a, b) for a, b in zip(x, y))


def test_trainer_rejects_bad_inputs_and_serves_the_rest(tmp_path: Path, procs: Procs) -> None:
    out = tmp_path / "out"
    bad_configs = {
        "syntax": ('task = "cartpole\n', "not valid TOML"),
        "unknown": ('task = "cartpole"\nlr = 0.1\n', "field 'lr': unknown field"),
        "wrongtype": ('task = "cartpole"\nmax_steps = 2.5\n', "field 'max_steps'"),
        "bigrank": ('task = "cartpole"\nrank = 32\n', "field 'rank'"),
        "badtask": ('task = "cartpole:gravity=oops"\n', "field 'task'"),
    }
    for name, (text, _) in bad_configs.items():
        write_orch(out, name, text=text)
    write_orch(tmp_path, "outside", max_steps=5)
    (out / "run_evil").symlink_to(tmp_path / "run_outside", target_is_directory=True)
    ok = write_orch(out, "ok", max_steps=30, envs_per_task=4, rollout_steps=32)
    corrupt = write_orch(out, "corrupt", max_steps=30)
    nan = write_orch(out, "nan", max_steps=30)
    toml = write_trainer_toml(tmp_path / "trainer.toml", out, max_concurrent_runs=4)
    trainer = procs.start("trainer", "trainer", "--config", str(toml))
    orch = procs.start("orch", "orchestrator", "--run", str(ok.root))
    alive = [trainer]
    for name, (_, needle) in bad_configs.items():
        error = RunPaths(out, name).config_error
        wait_for(error.exists, 60, f"{name}: config_error.txt", alive=alive)
        assert needle in error.read_text() and "orch.toml" in error.read_text()
        assert not RunPaths(out, name).broadcasts.exists()
    log = read_jsonl(out / "trainer_log.jsonl")
    assert any(e["event"] == "warning" and e.get("run") == "run_evil" for e in log)
    assert not (tmp_path / "run_outside" / "broadcasts").exists()

    for run in (corrupt, nan):
        wait_for(run.broadcast_stable(0).is_file, 30, f"{run.name} admitted", alive=alive)
    _publish_raw(corrupt, 0, fake_rollout(128), truncate=True)
    _publish_raw(nan, 0, {**fake_rollout(128), "logp": torch.full((128,), -1e30)})
    for run in (corrupt, nan):
        wait_for(run.broadcast_stable(1).is_file, 30, f"{run.name} continues", alive=alive)
        assert _same(_adapter(run, 1), _adapter(run, 0))  # no update was applied
    ok_step_at_nan = status(out)["ok"].get("step", 0)
    assert corrupt.rejected_rollout(0).is_dir()
    log = read_jsonl(out / "trainer_log.jsonl")
    rejected = [e for e in log if e["event"] == "rollout_rejected"]
    assert rejected[0]["run"] == "corrupt" and "truncated" in rejected[0]["message"]
    assert any(e["event"] == "update_skipped" and e["run"] == "nan" for e in log)
    wait_for(lambda: status(out).get("nan", {}).get("nan_skips") == 1, 10, "nan marked")

    write_rollout(corrupt, 1, fake_rollout(128, seed=1), fake_meta(1))
    wait_for(corrupt.broadcast_stable(2).is_file, 30, "corrupt: next rollout used", alive=alive)
    assert not _same(_adapter(corrupt, 2), _adapter(corrupt, 1))

    wait_for(lambda: orch.poll() is not None, 120, "ok run finished", alive=alive)
    assert orch.returncode == 0, procs.log("orch")
    wait_for(lambda: status(out).get("ok", {}).get("state") == "done", 10, "ok done")
    assert ok.newest_stable_checkpoint() == 30 > ok_step_at_nan
    assert Procs.stop(trainer) == 0, procs.log("trainer")
