"""Hardening of the service (issue 15), one test per observed case: seeds validated, no
write through a symlink, target_modules checked against the tensors (real peft), a
re-created run folder is a new run, the trainer lock survives deleting files, published
folders withdrawn by rename, staging of dead writers cleaned, one orchestrator per run."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from svc_helpers import MakeTrainer, fake_trainer, feed, tick, write_orch

from skillbank.config import ConfigError
from skillbank.service.kinds import load_run_config
from skillbank.service.orchestrator.main import run_orchestrator
from skillbank.service.protocol.files import (
    LockedError,
    append_jsonl,
    clean_stale,
    hold_lock,
    owner_tag,
    remove_dir,
)
from skillbank.service.tools.convert import check_targets, convert_adapter
from skillbank.service.trainer.loop import TrainerLockedError

DEAD_PID = 2**22 + 12345  # above the default pid_max: no such process


# ------------------------------------------------------------------------- seeds
@pytest.mark.parametrize("seed", [-1, 2**63 - 1])
@pytest.mark.parametrize("kind", ["ppo", "lm"])
def test_out_of_range_seeds_are_rejected_naming_file_and_field(
    tmp_path: Path, seed: int, kind: str
) -> None:
    info, _ = fake_trainer(tmp_path / "o")
    path = tmp_path / "orch.toml"
    body = 'task = "cartpole"' if kind == "ppo" else 'kind = "lm"'
    path.write_text(f"{body}\nseed = {seed}\n")
    with pytest.raises(ConfigError) as err:
        load_run_config(path, info)
    assert str(path) in str(err.value) and "field 'seed'" in str(err.value)


def test_a_run_with_a_bad_seed_never_holds_a_slot(out: Path, make_trainer: MakeTrainer) -> None:
    bad = write_orch(out, "bad", seed=-1)
    good = write_orch(out, "good", max_steps=5, seed=2**63 - 2)  # the largest seed accepted
    t = make_trainer(max_concurrent_runs=1)
    tick(t)
    assert list(t.registry.live) == ["good"] and good.broadcast_stable(0).is_file()
    text = bad.config_error.read_text()
    assert str(bad.orch_toml) in text and "field 'seed'" in text
    assert t.registry.parked["bad"].state == "error" and not bad.broadcasts.exists()


def test_seed_mixing_stays_in_range() -> None:
    from skillbank.service.kinds.fields import SEED_LIMIT, mix_seed

    for seed in (0, 1, SEED_LIMIT - 1):
        s = mix_seed(seed, 100_003, 7)
        assert 0 <= s < 2**63
        torch.Generator().manual_seed(s)  # accepted


# ---------------------------------------------------------------------- symlinks
def test_a_logs_symlink_out_of_the_outputs_folder_is_refused(
    out: Path, tmp_path: Path, make_trainer: MakeTrainer
) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    run = write_orch(out, "a", max_steps=5)
    run.logs.symlink_to(outside, target_is_directory=True)
    ok = write_orch(out, "b", max_steps=5)
    t = make_trainer()
    tick(t)
    assert "a" not in t.registry.live and "b" in t.registry.live
    assert "logs" in (run.escapes() or "")
    assert list(outside.iterdir()) == []  # nothing written through the link
    # a live run whose logs/ turns into a link is released at the next escape check
    shutil.rmtree(ok.logs)
    ok.logs.symlink_to(outside, target_is_directory=True)
    t.registry._inside.clear()  # as if ESCAPE_CHECK_S had passed
    tick(t)
    assert "b" not in t.registry.live and list(outside.iterdir()) == []


def test_logs_are_never_appended_through_a_link(tmp_path: Path) -> None:
    target = tmp_path / "target.jsonl"
    target.write_text("")
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "trainer.jsonl").symlink_to(target)
    with pytest.raises(OSError):
        append_jsonl(tmp_path / "logs" / "trainer.jsonl", {"event": "x"})
    (tmp_path / "linked").symlink_to(tmp_path / "logs", target_is_directory=True)
    with pytest.raises(OSError, match="symlink"):
        append_jsonl(tmp_path / "linked" / "other.jsonl", {"event": "x"})
    assert target.read_text() == ""


# ------------------------------------------------------------- target_modules
def test_convert_rejects_target_modules_that_disagree_with_the_tensors(tmp_path: Path) -> None:
    from peft import LoraConfig, PeftModel, get_peft_model

    out = tmp_path / "out"
    info, model = fake_trainer(out)
    linear = sorted(model.layers)
    assert len(linear) >= 2
    peft = get_peft_model(model.plain_base(), LoraConfig(r=4, lora_alpha=8, target_modules=linear))
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.normal_(generator=torch.Generator().manual_seed(0))
    peft.save_pretrained(str(tmp_path / "skill"))
    cfg_path = tmp_path / "skill" / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps({**cfg, "target_modules": linear[:1]}))
    # real peft applies only the listed module: the others' tensors are left out
    loaded = PeftModel.from_pretrained(model.plain_base(), str(tmp_path / "skill"))
    with_lora = {n.rsplit(".lora_A", 1)[0] for n, _ in loaded.named_parameters() if "lora_A" in n}
    assert len(with_lora) == 1
    with pytest.raises(ConfigError) as err:
        convert_adapter(tmp_path / "skill", out / "run_a")
    msg = str(err.value)
    assert str(cfg_path) in msg and "field 'target_modules'" in msg
    assert all(repr(m) in msg for m in linear[1:]) and not (out / "run_a").exists()
    # PEFT's regex form and exclude_modules follow the same rule
    check_targets(cfg_path, {"target_modules": ".*"}, linear)
    with pytest.raises(ConfigError, match="field 'target_modules'"):
        check_targets(cfg_path, {"target_modules": linear[0]}, linear)  # regex: whole path
    cfg_path.write_text(json.dumps({**cfg, "exclude_modules": linear[-1:]}))
    with pytest.raises(ConfigError, match="field 'exclude_modules'"):
        convert_adapter(tmp_path / "skill", out / "run_a")
    cfg_path.write_text(json.dumps(cfg))  # as saved: converts
    assert convert_adapter(tmp_path / "skill", out / "run_a").is_dir()


# ---------------------------------------------------------------- re-creation
def test_a_run_folder_recreated_under_the_same_name_is_a_new_run(
    out: Path, make_trainer: MakeTrainer
) -> None:
    run = write_orch(out, "a", max_steps=50)
    t = make_trainer()
    tick(t)
    first_id = run.run_id.read_text().strip()
    for step in range(3):
        feed(run, step, seed=step)
        tick(t)
    assert t.registry.live["a"].step == 3
    shutil.rmtree(run.root)
    write_orch(out, "a", max_steps=7, seed=5)  # before the trainer looks again
    tick(t)
    live = t.registry.live["a"]
    assert live.step == 0 and live.cfg.max_steps == 7 and live.run_id != first_id
    assert run.run_id.read_text().strip() == live.run_id
    assert run.broadcast_stable(0).is_file()
    assert not run.broadcast(3).exists() and not run.checkpoint(2).exists()


# ---------------------------------------------------------------------- locks
def test_deleting_files_never_lets_a_second_trainer_in(
    out: Path, make_trainer: MakeTrainer
) -> None:
    first = make_trainer()
    for name in os.listdir(out):  # whatever a user deletes, the folder itself stays locked
        if name.startswith("."):
            shutil.rmtree(out / name, ignore_errors=True)
            (out / name).unlink(missing_ok=True)
    with pytest.raises(TrainerLockedError, match="another trainer"):
        make_trainer()
    first.close()
    make_trainer().close()  # released with the first one


def test_one_orchestrator_per_run(out: Path) -> None:
    fake_trainer(out)
    run = write_orch(out, "a")
    fd = hold_lock(run.orchestrator_lock, "held by the test")
    try:
        with pytest.raises(LockedError, match="another orchestrator"):
            run_orchestrator(run.root, wait_s=5.0)
    finally:
        os.close(fd)
    assert run.orchestrator_lock.exists() and not run.rollouts.exists()


# ------------------------------------------------------------ withdraw, staging
def test_published_folders_are_withdrawn_by_rename(tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "rollouts" / "step_3"
    folder.mkdir(parents=True)
    (folder / "rollout.safetensors").write_bytes(b"x" * 10)
    (folder / "STABLE").write_text("")
    monkeypatch.setattr(shutil, "rmtree", lambda *a, **k: None)  # killed mid-delete
    remove_dir(folder)
    assert not folder.exists()  # the step is gone at once, whole
    trash = [p.name for p in (tmp_path / "rollouts").iterdir()]
    assert len(trash) == 1 and trash[0].startswith(".step_3.trash-")


def test_temp_folders_of_dead_writers_are_cleaned(tmp_path: Path) -> None:
    host = owner_tag().split(".")[0]
    names = {
        f".step_4.tmp-{host}.{DEAD_PID}-ab12": False,  # dead orchestrator, this host
        f".step_5.trash-{DEAD_PID}-cd34": False,  # a trainer killed mid-delete
        f".step_6.tmp-{owner_tag()}-ef56": True,  # this live process
        f".step_7.tmp-otherhost.{DEAD_PID}-0a0b": True,  # another host's, recent
        "step_8": True,
    }
    for name in names:
        (tmp_path / name).mkdir()
    removed = clean_stale(tmp_path)
    assert sorted(removed) == sorted(n for n, keep in names.items() if not keep)
    assert {p.name for p in tmp_path.iterdir()} == {n for n, keep in names.items() if keep}


def test_trainer_cleans_a_killed_orchestrators_staging(
    out: Path, make_trainer: MakeTrainer
) -> None:
    run = write_orch(out, "a", max_steps=50)
    run.rollouts.mkdir(parents=True)
    host = owner_tag().split(".")[0]
    stale = run.rollout_staging(0, f"{host}.{DEAD_PID}-0000")
    stale.mkdir()
    t = make_trainer()
    tick(t)  # admission cleans the run's folders
    assert not stale.exists() and "a" in t.registry.live


def test_an_orchestrator_stops_when_its_run_folder_is_another_incarnation(out: Path) -> None:
    from skillbank.service.protocol.watch import Stopped, check_running

    run = write_orch(out, "a")
    run.run_id.write_text("first\n")
    check_running(run, "first")
    run.run_id.write_text("second\n")  # deleted and re-created, then admitted again
    with pytest.raises(Stopped, match="re-created"):
        check_running(run, "first")
    shutil.rmtree(run.root)
    with pytest.raises(Stopped, match="disappeared"):
        check_running(run, "first")


def test_the_trainer_entry_does_not_import_the_cli() -> None:
    import subprocess
    import sys

    code = (
        "import sys, runpy\n"
        "sys.argv = ['x', '--help']\n"
        "try:\n"
        "    runpy.run_module('skillbank.service.trainer', run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith('skillbank.cli')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "--nproc" in done.stdout and done.stdout.strip().endswith("[]"), done.stderr


def test_a_multi_rank_trainer_refused_the_folder_says_so_in_one_line(
    out: Path, tmp_path: Path, make_trainer: MakeTrainer
) -> None:
    import subprocess
    import sys

    from svc_helpers import write_trainer_toml

    make_trainer()  # holds the outputs folder
    toml = write_trainer_toml(tmp_path / "t.toml", out)
    cmd = [sys.executable, "-m", "skillbank.cli.service", "trainer", "--config", str(toml)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [*cmd, "--nproc", "2"], capture_output=True, text=True, timeout=180, env=env
    )
    assert done.returncode == 2, done.stderr
    assert "another trainer serves this outputs folder" in done.stderr
    assert "error: trainer rank 0 exited with code 2" in done.stderr
    assert "Traceback" not in done.stderr
