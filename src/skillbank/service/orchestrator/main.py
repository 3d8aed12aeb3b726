"""``skillbank orchestrator --run OUT/run_<name>``: one process per run.

It waits for ``OUT/trainer.json`` and ``control/orch.toml``, takes the run's orchestrator
lock (an ``flock`` on ``control/orchestrator.lock``, held until it exits: a second
orchestrator of the same run stops at once with one line, and a killed one leaves no
stale lock), validates the config like the trainer does, and runs the loop of the run's
kind (the registry's ``orchestrate``)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from skillbank.service.kinds import KINDS, load_run_config
from skillbank.service.protocol.files import ensure_subdir, hold_lock
from skillbank.service.protocol.info import read_trainer_info
from skillbank.service.protocol.paths import OutPaths, PathError, RunPaths, run_from_dir
from skillbank.service.protocol.watch import Stopped


def run_orchestrator(run_dir: Path, wait_s: float = 600.0) -> int:
    """Serve the run folder ``run_dir`` until it is done; returns the exit code."""
    run = run_from_dir(run_dir)
    info_path = OutPaths(run.out).trainer_json
    deadline = time.monotonic() + wait_s
    while not info_path.is_file():
        if time.monotonic() > deadline:
            raise FileNotFoundError(f"{info_path}: no trainer on {run.out} (waited)")
        time.sleep(0.2)
    while not run.orch_toml.is_file():
        if time.monotonic() > deadline:
            raise FileNotFoundError(f"{run.orch_toml}: file not found")
        time.sleep(0.2)
    why = run.escapes()
    if why is not None:
        raise PathError(f"{run.root}: run folder escapes the outputs folder ({why})")
    ensure_subdir(run.control)
    lock = hold_lock(run.orchestrator_lock, "another orchestrator serves this run")
    try:
        info = read_trainer_info(info_path)
        cfg, tasks = load_run_config(run.orch_toml, info)
        orchestrate = KINDS.get(cfg.kind).part("orchestrate")
        return _until_stopped(run, lambda: int(orchestrate(run, cfg, tasks, info)))
    finally:
        os.close(lock)


def _until_stopped(run: RunPaths, loop: Callable[[], int]) -> int:
    """``loop()``'s exit code; a run ended from outside is a clean stop (0; 2 when the
    trainer rejected its config), also when its folder vanished mid-write."""
    try:
        return loop()
    except Stopped as e:
        print(f"[orchestrator] {run.name}: stopped: {e}", file=sys.stderr, flush=True)
        return 2 if e.rejected else 0
    except OSError:
        if not run.root.is_dir():
            print(f"[orchestrator] {run.name}: run folder disappeared", file=sys.stderr)
            return 0
        raise
