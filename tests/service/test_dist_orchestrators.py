"""Orchestrators as on other machines: started from another working directory with
relative paths to the shared outputs folder, one of them stepping its environments in 2
worker processes (``env_workers``), served by a trainer on 2 gloo ranks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from svc_helpers import write_orch, write_trainer_toml

from proc_helpers import Procs, wait_for
from skillbank.service.protocol.paths import RunPaths, steps


def _start(procs: Procs, name: str, cwd: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    log = open(procs.folder / f"{name}.log", "ab")  # noqa: SIM115  # owned by the process
    cmd = [sys.executable, "-m", "skillbank.cli.service", *args]
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env=env)
    log.close()
    procs.started.append((name, proc))  # stopped by its pid at the end of the test
    return proc


def test_orchestrators_from_another_directory(tmp_path: Path, procs: Procs) -> None:
    shared, here, there = tmp_path / "shared", tmp_path / "trainer_host", tmp_path / "orch_host"
    for d in (shared, here, there):
        d.mkdir()
    out = shared / "out"
    # the trainer's config names OUT relative to the trainer's own working directory
    cfg = write_trainer_toml(here / "trainer.toml", Path("../shared/out"), checkpoint_interval=2)
    small = {"max_steps": 3, "envs_per_task": 2, "rollout_steps": 32}
    runs = {
        "a": write_orch(out, "a", **small),
        "b": write_orch(out, "b", **small, seed=1, env_workers=2),
    }
    trainer = _start(procs, "trainer", here, "trainer", "--config", "trainer.toml", "--nproc", "2")
    orchs = [
        _start(procs, f"orch_{n}", there, "orchestrator", "--run", f"../shared/out/run_{n}")
        for n in runs
    ]
    assert cfg.is_file()
    done = lambda: all(r.newest_stable_checkpoint() == 3 for r in runs.values())  # noqa: E731
    wait_for(done, 120, "both runs finish", [trainer])  # orchestrators exit when done
    for proc in orchs:
        assert proc.wait(60) == 0
    Procs.stop(trainer)
    assert sorted(os.listdir(there)) == []  # nothing written relative to the orchestrators
    assert sorted(os.listdir(here)) == ["trainer.toml"]
    info = json.loads((out / "trainer.json").read_text())
    assert Path(info["base_dir"]) == (out / "base").resolve()
    for run in runs.values():
        logged = [json.loads(line) for line in run.orchestrator_log.read_text().splitlines()]
        assert [r["step"] for r in logged] == [0, 1, 2]
        assert all(r["step"] - r["policy_step"] <= 1 for r in logged)
        assert steps(run.broadcasts)[-1] == 3
    assert "2 ranks" in procs.log("trainer")
    assert "starting at step 0, ProcVecEnv(2 envs in 2 processes" in procs.log("orch_b")
    assert "starting at step 0, VecTaskEnv(2 envs" in procs.log("orch_a")
    assert RunPaths(out, "b").root.resolve().parent == out.resolve()
