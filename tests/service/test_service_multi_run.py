"""Slow, real processes: one trainer with 2 slots serves runs a, b, c on three CartPole
variants; c waits; deleting a's folder gives its slot to c; b and c learn."""

from __future__ import annotations

from pathlib import Path

import pytest
from svc_helpers import remove_run, status, write_orch, write_trainer_toml

from proc_helpers import Procs, read_jsonl, wait_for

pytestmark = pytest.mark.slow

THRESHOLD = 150.0  # mean return of the last 10 episodes (sampled actions); random policy ~20
BUDGET = 40  # updates of 8 envs x 128 steps; a fresh rank-8 skill passes 150 in ~10


def test_three_runs_two_slots(tmp_path: Path, procs: Procs) -> None:
    out = tmp_path / "out"
    common = {"learning_rate": 3e-3, "anneal_lr": False}
    runs = {
        "a": write_orch(out, "a", task="cartpole/heavy-pole", max_steps=500, **common),
        "b": write_orch(out, "b", task="cartpole/long-pole", max_steps=BUDGET, **common),
        "c": write_orch(out, "c", task="cartpole/reversed", max_steps=BUDGET, **common),
    }
    toml = write_trainer_toml(tmp_path / "trainer.toml", out, checkpoint_interval=10)
    trainer = procs.start("trainer", "trainer", "--config", str(toml))
    orch = {
        n: procs.start(f"orch_{n}", "orchestrator", "--run", str(r.root)) for n, r in runs.items()
    }
    alive = [trainer, orch["b"], orch["c"]]

    def training(name: str, min_step: int = 0) -> bool:
        s = status(out).get(name, {})
        return s.get("state") == "training" and s.get("step", -1) >= min_step

    wait_for(lambda: training("a", 3) and training("b", 3), 120, "a and b training", alive)
    assert status(out)["c"]["state"] == "waiting"
    assert not runs["c"].broadcasts.exists() and not runs["c"].rollouts.exists()
    slot_a = status(out)["a"]["slot"]

    remove_run(runs["a"].root)
    wait_for(lambda: training("c"), 60, "c takes a's slot", alive)
    assert status(out)["c"]["slot"] == slot_a and "a" not in status(out)
    wait_for(lambda: orch["a"].poll() is not None, 30, "a's orchestrator exits")
    assert orch["a"].returncode == 0, procs.log("orch_a")
    assert not runs["a"].root.exists()  # nobody recreated it

    for name in ("b", "c"):
        wait_for(lambda n=name: orch[n].poll() is not None, 300, f"{name} finishes", [trainer])
        assert orch[name].returncode == 0, procs.log(f"orch_{name}")
    wait_for(lambda: all(status(out)[n]["state"] == "done" for n in "bc"), 30, "b, c done")
    for name in ("b", "c"):
        log = read_jsonl(runs[name].orchestrator_log)
        assert len(log) == BUDGET
        assert all(r["step"] - r["policy_step"] <= 1 for r in log)  # max_async_level = 1
        best = max(r["recent_return"] or 0.0 for r in log)
        assert best >= THRESHOLD, f"{name}: best recent return {best:.1f} < {THRESHOLD}"
        assert runs[name].newest_stable_checkpoint() == BUDGET
    assert Procs.stop(trainer) == 0
