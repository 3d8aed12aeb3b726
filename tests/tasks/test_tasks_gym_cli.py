"""End to end: `skillbank train-base / train-skills / eval` on gym tasks and a user's env."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import gym_user_envs  # noqa: F401  (registers SbChain-v0 in this process)
import pytest

from skillbank.cli.main import main
from skillbank.library.core import PolicyLibrary
from skillbank.recipes.evaluate import evaluate_library
from skillbank.tasks import parse_task, task_from_dict

pytestmark = pytest.mark.slow


def test_cli_acrobot_base_and_pendulum_skills_with_kwargs(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    cmd = [sys.executable, "-m", "skillbank.cli.main"]
    run = subprocess.run(
        [*cmd, "train-base", "--task", "gym:Acrobot-v1", "--out", str(tmp_path / "acro"),
         "--steps", "2048", "--hidden", "16,16", "--quiet"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "base trained on gym:Acrobot-v1" in run.stdout
    base = json.loads((tmp_path / "acro" / "base" / "config.json").read_text())
    assert base["task"]["env_id"] == "Acrobot-v1" and base["kwargs"]["obs_dim"] == 6
    lib_dir = tmp_path / "pend"
    assert main(["train-base", "--task", "gym:Pendulum-v1", "--out", str(lib_dir),
                 "--steps", "1024", "--hidden", "16,16", "--quiet"]) == 0  # fmt: skip
    tasks = ["gym:Pendulum-v1?g=5.0", "gym:Pendulum-v1?g=15.0,max_episode_steps=50"]
    argv = ["train-skills", str(lib_dir), "--steps", "1024", "--rank", "2", "--quiet"]
    assert main([*argv, "--task", tasks[0], "--task", tasks[1]]) == 0
    lib = PolicyLibrary.load(lib_dir)
    assert len(lib.skills) == 2
    stored = {task_from_dict(lib.skill_meta(s)["task"]) for s in lib.skills}
    assert stored == {parse_task(t) for t in tasks}
    assert {s.kwargs["g"] for s in stored} == {5.0, 15.0}
    res = evaluate_library(lib, [parse_task(t) for t in tasks], episodes=2)
    assert len(res["policies"]) == 3 and all(len(row) == 2 for row in res["mean"])
    # the 50-step task's episodes are 50 steps: its return is bounded by 50 * max cost (16.3)
    assert all(row[1] > -50 * 16.3 for row in res["mean"])


def test_user_registered_env_trains_saves_reloads_evaluates(tmp_path: Path) -> None:
    lib_dir = tmp_path / "lib"
    assert main(["train-base", "--task", "gym:SbChain-v0?length=3", "--out", str(lib_dir),
                 "--steps", "2048", "--hidden", "16,16", "--quiet"]) == 0  # fmt: skip
    task = "gym:SbChain-v0?length=5,wrappers=gym_user_envs:Negate"
    assert main(["train-skills", str(lib_dir), "--task", task, "--steps", "2048", "--quiet"]) == 0
    lib = PolicyLibrary.load(lib_dir)
    (skill,) = lib.skills
    spec = task_from_dict(lib.skill_meta(skill)["task"])
    assert spec == parse_task(task) and spec.wrappers == ("gym_user_envs:Negate",)
    res = evaluate_library(lib, [spec, parse_task("gym:SbChain-v0?length=3")], episodes=4)
    assert res["policies"] == ["base", skill]
    # walking right is easy: the base solves its own task (return 1) within 2048 steps
    assert res["mean"][0][1] == 1.0
    assert main(["eval", str(lib_dir), "--task", task, "--episodes", "2"]) == 0
