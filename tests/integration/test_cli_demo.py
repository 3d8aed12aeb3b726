"""End-to-end: the CLI verbs a new user runs, on tiny budgets (fast, no learning asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from skillbank.cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "skillbank.cli", *args], capture_output=True, text=True, timeout=600
    )


def test_help_lists_every_verb() -> None:
    out = run_cli("--help")
    assert out.returncode == 0
    for verb in ("demo", "train-base", "train-skills", "eval", "suites", "bench"):
        assert verb in out.stdout


def test_demo_tiny_budget_writes_report_and_library(tmp_path: Path) -> None:
    out = run_cli(
        "demo", "--out", str(tmp_path / "d"), "--steps", "2048", "--base-steps", "2048", "--quiet"
    )
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads((tmp_path / "d" / "summary.json").read_text())
    assert len(summary["tasks"]) == len(summary["lora"]) == len(summary["full"]) == 6
    assert all(0 < r <= 500 for r in summary["lora"] + summary["full"] + summary["base"])
    mem = summary["memory"]
    assert max(mem["skill_bytes"].values()) <= 0.10 * mem["base_bytes"]
    html = (tmp_path / "d" / "report.html").read_text()
    assert html.count("<img") >= 3 and "Rank sweep" in html
    assert "LoRA / full" in out.stdout or "LoRA" in out.stdout
    index = json.loads((tmp_path / "d" / "library" / "library.json").read_text())
    assert len(index["skills"]) == 6


def test_train_skills_then_eval_json(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    lib = tmp_path / "lib"
    assert (
        main(
            [
                "train-base",
                "--task",
                "cartpole",
                "--out",
                str(lib),
                "--steps",
                "2048",
                "--hidden",
                "32,32",
                "--quiet",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "train-skills",
                str(lib),
                "--task",
                "cartpole:gravity=20",
                "--task",
                "cartpole/reversed",
                "--steps",
                "2048",
                "--quiet",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["eval", str(lib), "--suite", "cartpole-physics", "--episodes", "3", "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert table["policies"] == ["base", "cartpole-gravity-20", "cartpole-reversed"]
    assert len(table["mean"]) == 3 and len(table["mean"][0]) == 6


def test_bad_inputs_give_one_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert (
        main(
            [
                "train-base",
                "--task",
                "cartpole:pole_lenght=2",
                "--out",
                str(tmp_path / "x"),
                "--quiet",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "pole_lenght" in err and "pole_length" in err  # names the bad and the valid ones
    assert main(["train-base", "--task", "nosuchfamily", "--out", str(tmp_path / "x")]) == 2
    assert "cartpole" in capsys.readouterr().err
    lib = tmp_path / "lib"
    assert (
        main(
            [
                "train-base",
                "--task",
                "cartpole",
                "--out",
                str(lib),
                "--steps",
                "1024",
                "--hidden",
                "16",
                "--quiet",
            ]
        )
        == 0
    )
    capsys.readouterr()
    # a pendulum task on a cartpole base: error names both shapes
    assert main(["train-skills", str(lib), "--task", "pendulum", "--steps", "1024"]) == 2
    err = capsys.readouterr().err
    assert "[4]" in err and "[3]" in err
    bad = tmp_path / "bad.toml"
    bad.write_text("[ppo]\nlearning_rat = 0.1\n")
    assert main(["train-skills", str(lib), "--task", "cartpole", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.toml" in err and "learning_rat" in err


def test_cli_parses_arguments_before_importing_torch() -> None:
    code = (
        "import sys, skillbank.cli as c; p = c.build_parser(); p.parse_args(['suites']); "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr
