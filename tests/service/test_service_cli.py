"""The service verbs: help, lazy torch import, the runs table, library add, error exits."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from svc_helpers import fake_meta, fake_rollout, write_orch

from skillbank.cli.service import build_parser, main
from skillbank.library.core import PolicyLibrary
from skillbank.service.protocol.rollout_io import write_rollout
from skillbank.service.tools.status import collect_rows
from skillbank.service.trainer.config import TrainerConfig
from skillbank.service.trainer.loop import Trainer

VERBS = [["trainer"], ["orchestrator"], ["convert-adapter"], ["runs"], ["library", "add"]]


@pytest.mark.parametrize("verb", VERBS, ids=" ".join)
def test_every_verb_has_help(verb: list[str], capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([*verb, "--help"])
    assert exit_.value.code == 0
    assert len(capsys.readouterr().out) > 200


LIGHT = (
    "skillbank.cli.service",
    "skillbank.service.protocol.paths",
    "skillbank.service.protocol.files",
    "skillbank.service.protocol.info",
    "skillbank.service.protocol.watch",
    "skillbank.service.kinds",
    "skillbank.service.trainer.config",
    "skillbank.service.trainer.main",
    "skillbank.service.orchestrator.main",
)
"""What the command line needs before it parses: none of it may load torch."""


def test_cli_module_does_not_import_torch(tmp_path: Path) -> None:
    code = "import sys, skillbank.cli.service as c; c.build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    orch = tmp_path / "orch.toml"
    orch.write_text('task = "cartpole"\nseed = 3\n')
    code = (
        f"import sys, {', '.join(LIGHT)}\n"
        "from skillbank.config import load_toml\n"
        "from skillbank.service.kinds.ppo.config import PPORunConfig\n"
        f"assert load_toml({str(orch)!r}, PPORunConfig).seed == 3\n"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_errors_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["convert-adapter", str(tmp_path / "nope"), str(tmp_path / "run_a")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "trainer.json" in err
    (tmp_path / "t.toml").write_text('output_dir = "x"\nbase_task = "cartpole"\nslots = 1\n')
    assert main(["trainer", "--config", str(tmp_path / "t.toml")]) == 2
    assert "field 'slots': unknown field" in capsys.readouterr().err
    (tmp_path / "ok.toml").write_text('output_dir = "x"\nbase_task = "cartpole"\n')
    assert main(["trainer", "--config", str(tmp_path / "ok.toml"), "--threads", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: command line: field 'threads'") and err.count("\n") == 1


@pytest.fixture
def trained_run(tmp_path: Path) -> Path:
    """An outputs folder with run a (2 steps, checkpointed), b (waiting), c (rejected)."""
    out = tmp_path / "out"
    run = write_orch(out, "a", task="cartpole/long-pole", max_steps=50)
    write_orch(out, "b")
    write_orch(out, "c", rank=99)
    cfg = TrainerConfig(
        output_dir=str(out), base_task="cartpole", max_concurrent_runs=1, checkpoint_interval=2
    )
    t = Trainer(cfg, tmp_path / "t.toml")
    t.tick()
    for step in range(2):
        write_rollout(run, step, fake_rollout(64, seed=step), fake_meta(step, 42.0 + step))
        t.tick()
    t.close()
    return out


def test_runs_table(trained_run: Path, capsys: pytest.CaptureFixture) -> None:
    rows = {r["run"]: r for r in collect_rows(trained_run)[0]}
    assert rows["a"]["state"] == "training" and rows["a"]["slot"] == 0
    assert rows["a"]["step"] == 2 and rows["a"]["latest return"] == 43.0
    assert rows["b"]["state"] == "waiting" and rows["b"]["slot"] is None
    assert rows["c"]["state"] == "error" and "field 'rank'" in rows["c"]["note"]
    assert main(["runs", str(trained_run)]) == 0
    text = capsys.readouterr().out
    for word in ("slot", "latest return", "training", "waiting", "error", "43.0"):
        assert word in text


def test_library_add(trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    lib_dir = tmp_path / "lib"
    assert main(["library", "add", str(lib_dir), str(trained_run / "run_a"), "--name", "lp"]) == 0
    assert "skill 'lp' added" in capsys.readouterr().out
    lib = PolicyLibrary.load(lib_dir)
    meta = lib.skill_meta("lp")
    assert meta["task"]["name"] == "cartpole/long-pole" and meta["train"]["steps"] == 2
    assert meta["obs_norm"]["count"] == 10.0
    skill = json.loads((lib_dir / "skills" / "lp" / "skill.json").read_text())
    assert skill["obs_norm"] == meta["obs_norm"]
    assert lib.act([0.0, 0.0, 0.0, 0.0], "lp") in (0, 1)
    # the same library again: the base matches; a second name works
    assert main(["library", "add", str(lib_dir), str(trained_run / "run_a")]) == 0
    assert PolicyLibrary.load(lib_dir).skills == ["lp", "a"]
