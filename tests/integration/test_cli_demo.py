"""End-to-end: the CLI verbs a new user runs, on tiny budgets (fast, no learning asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from skillbank.cli.main import main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "skillbank.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=600,
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
    assert len(summary["tasks"]) == len(summary["lora"]) == len(summary["full"]) == 7
    assert all(0 < r <= 500 for r in summary["lora"] + summary["full"] + summary["base"])
    mem = summary["memory"]
    assert max(mem["skill_bytes"].values()) <= 0.10 * mem["base_bytes"]
    html = (tmp_path / "d" / "report.html").read_text()
    assert html.count("<img") >= 3 and "Rank sweep" in html
    assert "LoRA / full" in out.stdout or "LoRA" in out.stdout
    index = json.loads((tmp_path / "d" / "library" / "library.json").read_text())
    assert len(index["skills"]) == 7


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
    run = next((lib / "runs").glob("skills-*"))
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["update"] for r in rows] == [1, 2]  # 2048 steps / (8 envs x 128 steps)
    for key in ("approx_kl", "clipfrac", "explained_variance", "sps", "episodic_return"):
        assert key in rows[-1]
    assert len((run / "metrics.csv").read_text().splitlines()) == 3  # header + 2 updates
    assert list((run / "tb").glob("events.out.tfevents.*"))
    config = json.loads((run / "config.json").read_text())
    assert config["ppo"]["learning_rate"] == 2e-3 and config["ranks"] == [8, 8]
    assert main(["eval", str(lib), "--suite", "cartpole-physics", "--episodes", "3", "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert table["policies"] == ["base", "cartpole-gravity-20", "cartpole-reversed"]
    assert len(table["mean"]) == 3 and len(table["mean"][0]) == 7


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
        "import sys, skillbank.cli.main as c; p = c.build_parser(); p.parse_args(['suites']); "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_exported_skill_runs_without_skillbank(tmp_path: Path) -> None:
    """export_skill's folder + policy.py give the library's greedy actions in a process
    where skillbank cannot be imported."""
    import numpy as np
    import torch

    from skillbank.algos.normalize import ObsNorm
    from skillbank.library.core import PolicyLibrary
    from skillbank.lora import MultiLoraModel
    from skillbank.models import ActorCritic, ActorCriticConfig

    torch.manual_seed(0)
    cfg = ActorCriticConfig(4, "discrete", 2, [16, 16])
    net = ActorCritic(cfg)
    lib = PolicyLibrary.create(
        tmp_path / "lib", net, {"kind": "actor_critic", "kwargs": cfg.to_dict()}
    )
    model = MultiLoraModel(lib.base_model(), 1, 4)
    model.reset_slot(0, 4, 8)
    for layer in model.layers.values():
        torch.nn.init.normal_(layer.lora_B.data, std=0.5)
    norm = ObsNorm(np.array([0.1, -0.2, 0.0, 0.3]), np.array([0.5, 2.0, 0.1, 1.0]), 10.0)
    lib.add_skill("s", (model, 0), {"obs_norm": norm.to_dict()})
    out = lib.export_skill("s", tmp_path / "export")
    obs = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    np.save(tmp_path / "obs.npy", obs)
    code = (
        "import sys, numpy as np; sys.modules['skillbank'] = None; sys.path.insert(0, sys.argv[1]);"
        "from policy import load; a = load(sys.argv[1]);"
        "print(' '.join(map(str, a(np.load(sys.argv[2])).tolist())))"
    )
    res = subprocess.run(
        [sys.executable, "-c", code, str(out), str(tmp_path / "obs.npy")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    standalone = np.array([int(v) for v in res.stdout.split()])
    expected = lib.act(obs, "s")
    assert (standalone == expected).all()
    assert len(set(expected.tolist())) == 2  # both actions occur: the check has teeth


def test_demo_arms_cover_every_rank_once_and_keep_the_library_rank_in_this_process() -> None:
    from skillbank.recipes import demo

    ranks = [r for what, rs in demo.MAIN_ARMS + demo.HELPER_ARMS if what == "lora" for r in rs]
    assert sorted(ranks) == sorted(demo.RANKS)
    assert [w for w, _ in demo.MAIN_ARMS + demo.HELPER_ARMS].count("full") == 1
    # only this process writes the library (the rank-8 skills)
    assert any(demo.MAIN_RANK in rs for w, rs in demo.MAIN_ARMS if w == "lora")


def test_solved_tasks_stop_training_and_the_run_ends(tmp_path: Path) -> None:
    """With ``solved`` every task whose two consecutive evaluations reach it stops
    training; once all have, the run ends early (threshold 0: solved at once)."""
    from skillbank.algos.ppo_defaults import default_ppo
    from skillbank.recipes.train import train_base, train_full_copies
    from skillbank.tasks import get_suite, parse_task

    spec = parse_task("cartpole")
    cfg = default_ppo(spec, "base").replace(total_steps=2048)
    lib, _ = train_base(spec, tmp_path / "lib", cfg, hidden=(16,), quiet=True)
    specs = get_suite("cartpole-physics")[:2]
    # 4 updates of 2 envs x 16 steps per task, one evaluation after each
    full = default_ppo(spec, "full").replace(total_steps=128, envs_per_task=2, rollout_steps=16)
    _, res = train_full_copies(lib, specs, full, tmp_path / "full", quiet=True, solved=0.0)
    assert [row["update"] for row in res.curves] == [1, 2]
    assert res.retired == [64, 64]
    _, res = train_full_copies(lib, specs, full, tmp_path / "full2", quiet=True)
    assert len(res.curves) == 4 and res.retired == [None, None]
