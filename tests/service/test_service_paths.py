"""paths: every protocol path, run names, steps, STABLE listing, escape detection."""

from __future__ import annotations

from pathlib import Path

import pytest

from skillbank.service.protocol.paths import (
    OutPaths,
    PathError,
    RunPaths,
    check_run_name,
    parse_step,
    run_from_dir,
    stable_steps,
    steps,
)


def test_layout_matches_the_protocol(tmp_path: Path) -> None:
    run = OutPaths(tmp_path).run("a")
    rel = lambda p: p.relative_to(tmp_path).as_posix()
    assert rel(run.orch_toml) == "run_a/control/orch.toml"
    assert rel(run.evicted) == "run_a/control/evicted.txt"
    assert rel(run.config_error) == "run_a/control/config_error.txt"
    assert rel(run.rollout_tensors(3)) == "run_a/rollouts/step_3/rollout.safetensors"
    assert rel(run.broadcast_stable(5)) == "run_a/broadcasts/step_5/STABLE"
    assert rel(run.rank_file(7, 1)) == "run_a/checkpoints/step_7/trainer/rank_1.pt"
    assert rel(run.weight_stable(7)) == "run_a/checkpoints/step_7/weight/STABLE"
    assert rel(run.checkpoint_stable(7)) == "run_a/checkpoints/step_7/STABLE"
    assert rel(OutPaths(tmp_path).trainer_json) == "trainer.json"


@pytest.mark.parametrize("name", ["a", "run-1", "x.y_z", "A" * 100])
def test_good_run_names(name: str) -> None:
    assert check_run_name(name) == name


@pytest.mark.parametrize("name", ["", "..", "a/b", "../x", "a..b", ".hidden", "a b", "A" * 101])
def test_bad_run_names(name: str) -> None:
    with pytest.raises(PathError, match="not allowed"):
        check_run_name(name)


def test_steps_ignore_temp_and_odd_names(tmp_path: Path) -> None:
    for name in ["step_0", "step_10", "step_2", "step_01", ".step_3.tmp-x", "rejected_step_4"]:
        (tmp_path / name).mkdir()
    assert steps(tmp_path) == [0, 2, 10]
    assert parse_step("step_01") is None and parse_step("step_7") == 7
    (tmp_path / "step_2" / "STABLE").write_text("")
    assert stable_steps(tmp_path) == [2]
    assert steps(tmp_path / "missing") == []


def test_newest_stable_checkpoint_needs_both_stables(tmp_path: Path) -> None:
    run = RunPaths(tmp_path, "a")
    for step in (1, 2, 3):
        run.weight(step).mkdir(parents=True)
    run.checkpoint_stable(1).write_text("")
    run.weight_stable(1).write_text("")
    run.checkpoint_stable(2).write_text("")  # weight/ not stable: incomplete
    run.weight_stable(3).write_text("")  # top STABLE missing: incomplete
    assert run.newest_stable_checkpoint() == 1


def test_symlinks_escaping_the_outputs_folder(tmp_path: Path) -> None:
    out, outside = tmp_path / "out", tmp_path / "elsewhere"
    (outside / "control").mkdir(parents=True)
    out.mkdir()
    (out / "run_evil").symlink_to(outside, target_is_directory=True)
    assert "outside" in (RunPaths(out, "evil").escapes() or "")
    with pytest.raises(PathError, match="escapes"):
        run_from_dir(out / "run_evil")
    (out / "run_ok" / "control").mkdir(parents=True)
    assert RunPaths(out, "ok").escapes() is None
    (out / "run_ctl").mkdir()
    (out / "run_ctl" / "control").symlink_to(outside / "control", target_is_directory=True)
    assert RunPaths(out, "ctl").escapes() is not None
    (out / "run_alias").symlink_to(out / "run_ok", target_is_directory=True)
    assert "alias" in (RunPaths(out, "alias").escapes() or "")  # two names, one folder
    (out / "store" / "x").mkdir(parents=True)
    (out / "run_inner").symlink_to(out / "store" / "x", target_is_directory=True)
    assert RunPaths(out, "inner").escapes() is None  # inside OUT: allowed


def test_run_from_dir_checks_the_folder_name(tmp_path: Path) -> None:
    assert run_from_dir(tmp_path / "run_x").name == "x"
    with pytest.raises(PathError, match="run_<name>"):
        run_from_dir(tmp_path / "x")
    with pytest.raises(PathError):
        run_from_dir(tmp_path / "run_a b")
