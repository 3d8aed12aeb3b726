"""The trainer, driven tick by tick in-process with hand-written rollouts: slots and
waiting, release, resume, bad configs, escaping folders, bad rollouts, NaN losses."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from svc_helpers import MakeTrainer, feed, tick, write_orch

from proc_helpers import read_jsonl
from skillbank.lora import peft_io
from skillbank.service.protocol.checkpoint import load_rank_file
from skillbank.service.protocol.paths import RunPaths
from skillbank.service.trainer.loop import TrainerLockedError


def adapter(run: RunPaths, step: int) -> dict:
    return peft_io.read_adapter(run.broadcast(step)).state


def same(x: dict, y: dict) -> bool:
    return all(torch.equal(x[k][0], y[k][0]) and torch.equal(x[k][1], y[k][1]) for k in x)


def events(out: Path, name: str | None = None) -> list[dict]:
    return [
        e for e in read_jsonl(out / "trainer_log.jsonl") if name is None or e.get("run") == name
    ]


def test_slots_waiting_and_release(out: Path, make_trainer: MakeTrainer) -> None:
    runs = {n: write_orch(out, n, max_steps=50) for n in ("a", "b", "c")}
    t = make_trainer()
    tick(t)
    assert {n: r.slot for n, r in t.registry.live.items()} == {"a": 0, "b": 1}
    assert t.registry.parked["c"].state == "waiting"
    assert runs["a"].broadcast_stable(0).is_file() and not runs["c"].broadcasts.exists()
    feed(runs["a"], 0)
    feed(runs["b"], 0, seed=1)
    tick(t)
    assert t.registry.live["a"].step == t.registry.live["b"].step == 1  # one batched update
    shutil.rmtree(runs["a"].root)
    tick(t)
    assert t.registry.live["c"].slot == 0 and runs["c"].broadcast_stable(0).is_file()
    assert not runs["a"].root.exists()  # never recreated
    t.write_status(force=True)
    status = json.loads((out / "trainer_status.json").read_text())["runs"]
    assert status["c"]["state"] == "training" and "a" not in status


def test_resume_from_newest_stable_checkpoint_exactly(out: Path, make_trainer: MakeTrainer) -> None:
    run = write_orch(out, "a", max_steps=50)
    t = make_trainer(keep_checkpoints=2)
    tick(t)
    for step in range(5):
        feed(run, step, seed=step)
        tick(t)
    assert t.registry.live["a"].step == 5
    assert run.newest_stable_checkpoint() == 4
    assert sorted(p.name for p in run.checkpoints.iterdir()) == ["step_2", "step_4"]
    assert not run.rollout(3).exists() and run.rollout(4).exists()  # consumed + covered: pruned
    saved = load_rank_file(run.rank_file(4))
    t.close()
    # a partial newer checkpoint (no STABLE) is ignored; a broadcast of the lost timeline removed
    run.checkpoint(6).mkdir()
    shutil.rmtree(run.rollout(4))  # else the resumed trainer replays it at once
    t2 = make_trainer()
    tick(t2)
    assert t2.registry.live["a"].step == 4
    assert not run.broadcast(5).exists()
    assert same(adapter(run, 4), peft_io.read_adapter(run.weight(4)).state)
    for a_key in [k for k in saved if k.startswith("lora.") and k.endswith(".A")]:
        path = a_key[5:-2]
        a, b, _ = t2.model.slot_state(0)[path]
        assert torch.equal(a, saved[a_key]) and torch.equal(b, saved[f"lora.{path}.B"])
    cfg = t2.ppo
    assert int(t2.opt.steps[0]) == int(saved["optim.step"]) == 4 * cfg.update_epochs * 4
    first = next(iter(t2.model.layers))
    r = int(t2.model.layers[first].slot_rank[0])
    assert torch.equal(t2.opt.exp_avg[0][0][:r], saved[f"optim.{first}.A.exp_avg"])
    assert torch.equal(t2.opt.exp_avg_sq[1][0][:, :r], saved[f"optim.{first}.B.exp_avg_sq"])
    assert any(e["event"] == "resumed" for e in events(out, "a"))


def test_bad_configs_are_rejected_and_named(out: Path, make_trainer: MakeTrainer) -> None:
    bad = {
        "syntax": ('task = "cartpole\n', "not valid TOML"),
        "unknown": ('task = "cartpole"\nbogus = 1\n', "field 'bogus': unknown field"),
        "wrongtype": ('task = "cartpole"\nrank = "8"\n', "field 'rank'"),
        "bigrank": ('task = "cartpole"\nrank = 99\n', "field 'rank'"),
        "badtask": ('task = "cartpole/nope"\n', "field 'task'"),
    }
    for name, (text, _) in bad.items():
        write_orch(out, name, text=text)
    good = write_orch(out, "good", max_steps=5)
    t = make_trainer()
    tick(t)
    assert list(t.registry.live) == ["good"] and good.broadcast_stable(0).is_file()
    for name, (_, needle) in bad.items():
        run = RunPaths(out, name)
        text = run.config_error.read_text()
        assert needle in text and str(run.orch_toml) in text, (name, text)
        assert not run.broadcasts.exists()
    write_orch(out, "wrongtype", rank=4)  # fixed: accepted on the next scan
    tick(t)
    assert "wrongtype" in t.registry.live
    assert not RunPaths(out, "wrongtype").config_error.exists()


def test_escaping_run_folders_are_ignored_with_a_warning(
    out: Path, tmp_path: Path, make_trainer: MakeTrainer
) -> None:
    outside = tmp_path / "elsewhere"
    write_orch(tmp_path, "x")  # a valid run folder outside OUT
    out.mkdir()
    (out / "run_evil").symlink_to(tmp_path / "run_x", target_is_directory=True)
    (out / "run_..").mkdir()
    t = make_trainer()
    tick(t)
    tick(t)
    assert not t.registry.live
    warnings = [e for e in events(out) if e["event"] == "warning"]
    assert {e["run"] for e in warnings} == {"run_evil", "run_.."}  # once each
    assert not (tmp_path / "run_x" / "broadcasts").exists() and not outside.exists()


def test_corrupt_rollout_is_rejected_and_the_run_continues(
    out: Path, make_trainer: MakeTrainer
) -> None:
    run = write_orch(out, "a", max_steps=20)
    t = make_trainer()
    tick(t)
    feed(run, 0)
    path = run.rollout_tensors(0)
    path.write_bytes(path.read_bytes()[:100])
    tick(t)
    assert run.rejected_rollout(0).is_dir() and not run.rollout(0).exists()
    assert same(adapter(run, 1), adapter(run, 0))  # no update, next version published
    rejected = [e for e in events(out, "a") if e["event"] == "rollout_rejected"]
    assert len(rejected) == 1 and str(path) in rejected[0]["message"]
    feed(run, 1, seed=1)
    tick(t)
    assert t.registry.live["a"].step == 2 and not same(adapter(run, 2), adapter(run, 1))


def test_nan_loss_skips_and_marks_only_that_run(out: Path, make_trainer: MakeTrainer) -> None:
    bad, good = write_orch(out, "bad", max_steps=20), write_orch(out, "good", max_steps=20)
    t = make_trainer(max_nan_updates=2)
    tick(t)
    for step in range(2):
        feed(bad, step, logp=torch.full((128,), -1e30))
        feed(good, step, seed=step)
        tick(t)
        if step == 0:
            assert same(adapter(bad, 1), adapter(bad, 0))
            assert not same(adapter(good, 1), adapter(good, 0))
            assert t.registry.status()["bad"]["nan_skips"] == 1
    assert "bad" not in t.registry.live and "evicted" in bad.evicted.read_text()
    assert t.registry.live["good"].step == 2
    skipped = [e for e in events(out, "bad") if e["event"] == "update_skipped"]
    assert len(skipped) == 2 and "non-finite" in skipped[0]["message"]


def test_evicted_and_done_runs_free_their_slots(out: Path, make_trainer: MakeTrainer) -> None:
    a, b = write_orch(out, "a", max_steps=2), write_orch(out, "b", max_steps=50)
    t = make_trainer()
    tick(t)
    feed(b, 0)
    tick(t)
    b.evicted.write_text("operator\n")
    tick(t)
    assert "b" not in t.registry.live and b.newest_stable_checkpoint() == 1
    for step in range(2):
        feed(a, step)
        tick(t)
    assert not t.registry.live and a.newest_stable_checkpoint() == 2
    assert t.registry.status()["a"]["state"] == "done"
    assert sorted(t.registry.free) == [0, 1]


def test_one_trainer_per_outputs_folder(make_trainer: MakeTrainer) -> None:
    make_trainer()
    with pytest.raises(TrainerLockedError, match="another trainer"):
        make_trainer()
