"""Tiny end-to-end runs: output folder rules, resume after an interruption, the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from skillbank.algos.normalize import ObsNorm
from skillbank.cli import continual as cli
from skillbank.continual.checkpoint import latest_state, load_state, save_state
from skillbank.continual.config import ContinualConfig
from skillbank.continual.experiment import run_continual, select_tasks
from skillbank.continual.strategies.shared import Finetune

torch.set_num_threads(1)


def tiny(**kw: object) -> ContinualConfig:
    base = dict(
        references=False,
        tasks=[0, 3],
        strategies=["finetune", "lora"],
        steps_per_task=256,
        seeds=1,
        eval_every=128,
        eval_episodes=2,
        hidden=[16],
        envs_per_task=2,
        lora_rank=2,
        fisher_states=32,
        replay_buffer=64,
        replay_batch=16,
    )
    base.update(kw)
    return ContinualConfig(**base)  # type: ignore[arg-type]


def without_times(results: dict) -> dict:
    """Results with the wall times (which differ between runs) removed."""
    out = json.loads(json.dumps(results))
    for runs in out["runs"].values():
        for run in runs.values():
            run.pop("wall_time_s")
    out.pop("summary")
    return out


def test_every_strategy_runs_and_report_rebuilds(tmp_path: Path) -> None:
    # a task visited twice: one reference run serves both visits
    cfg = tiny(strategies=list(cli.STRATEGY_NAMES), references=True, tasks=[3, 3])
    res = run_continual(cfg, tmp_path / "out", quiet=True, report=False)
    refs = res["reference"]["0"]
    assert [r["task"] for r in refs] == [0, 1] and refs[0]["mean"] == refs[1]["mean"]
    summary = res["summary"]["strategies"]
    assert set(summary) == set(cli.STRATEGY_NAMES)
    assert summary["lora"]["F"]["mean"] == 0.0  # frozen skills, fixed evaluation seeds
    for name in ("finetune", "l2", "ewc", "replay", "lora", "lora-transfer"):
        r = summary[name]["R_mean"]
        assert len(r) == 2 and all(0.0 <= v <= 1.0 for row in r for v in row)
    mem = {k: v["memory_bytes"]["mean"] for k, v in summary.items()}
    assert mem["ewc"] > mem["l2"] > mem["finetune"] and mem["lora"] > mem["finetune"]
    assert res["normalisation"]["tasks"][0]["rule"] == "return / max_return"
    report = tmp_path / "out" / "report.html"
    assert not report.exists()
    cli.cmd_report(cli.argparse.Namespace(dir=tmp_path / "out"))
    text = report.read_text()
    assert "Result matrix" in text and "skills start from" in text


def test_folder_rules(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_continual(tiny(strategies=["lora"]), out, quiet=True, report=False)
    with pytest.raises(ValueError, match="holds another run.*--resume.*--overwrite"):
        run_continual(tiny(strategies=["lora"]), out, quiet=True, report=False)
    with pytest.raises(ValueError, match="cannot resume with a different config.*steps_per_task"):
        run_continual(
            tiny(strategies=["lora"], steps_per_task=1024),
            out,
            resume=True,
            quiet=True,
            report=False,
        )
    with pytest.raises(ValueError, match="valid strategies"):
        run_continual(tiny(strategies=["nope"]), out, overwrite=True, quiet=True, report=False)
    (out / "mine.txt").write_text("not ours")
    run_continual(tiny(strategies=["finetune"]), out, overwrite=True, quiet=True, report=False)
    assert (out / "mine.txt").exists()  # --overwrite removes only what a run writes
    assert list(json.loads((out / "results.json").read_text())["runs"]) == ["finetune"]


def test_bad_suite_and_tasks() -> None:
    with pytest.raises(ValueError, match="unknown suite 'nope'; valid suites: .*cartpole-physics"):
        select_tasks(ContinualConfig(suite="nope"))
    with pytest.raises(ValueError, match=r"task indices \[9\].*0=cartpole/default"):
        select_tasks(ContinualConfig(tasks=[0, 9]))
    with pytest.raises(ValueError, match="strategies repeat"):
        ContinualConfig(strategies=["lora", "lora"])


def test_resume_continues_from_last_task(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tiny(strategies=["finetune", "replay"])
    full = run_continual(cfg, tmp_path / "full", quiet=True, report=False)

    calls: list[int] = []
    original = Finetune.finish_task

    def crash(self: Finetune, j: int, norm: ObsNorm) -> None:
        calls.append(j)
        if j == 1:
            raise KeyboardInterrupt("simulated kill during task 1")
        original(self, j, norm)

    monkeypatch.setattr(Finetune, "finish_task", crash)
    with pytest.raises(KeyboardInterrupt):
        run_continual(cfg, tmp_path / "cut", quiet=True, report=False)
    last = latest_state(tmp_path / "cut" / "state" / "finetune" / "seed_0")
    assert last is not None and last.name == "task_0"
    monkeypatch.setattr(Finetune, "finish_task", original)
    resumed = run_continual(cfg, tmp_path / "cut", resume=True, quiet=True, report=False)
    assert without_times(resumed) == without_times(full)


def test_state_roundtrip(tmp_path: Path) -> None:
    run = tmp_path / "run"
    norm = ObsNorm(torch.arange(3.0).numpy(), torch.ones(3).numpy(), 4.0)
    save_state(run / "task_0", {"w": torch.ones(2)}, [norm], {"next_task": 1})
    save_state(run / "task_1", {"w": torch.zeros(2)}, [norm, norm], {"next_task": 2})
    assert not (run / "task_0").exists()  # older states are dropped
    (run / "task_2").mkdir()  # an incomplete state (no STABLE) is ignored
    folder = latest_state(run)
    assert folder is not None and folder.name == "task_1"
    tensors, norms, progress = load_state(folder)
    assert torch.equal(tensors["w"], torch.zeros(2)) and progress == {"next_task": 2}
    assert norms[1].count == 4.0 and norms[1].mean.tolist() == [0.0, 1.0, 2.0]


def test_cli_module_is_light_and_parses() -> None:
    import subprocess
    import sys

    code = (
        "import argparse, sys\n"
        "from skillbank.cli import continual as cli\n"
        "p = argparse.ArgumentParser(); sub = p.add_subparsers(dest='verb'); cmds = {}\n"
        "cli.add_parsers(sub, cmds)\n"
        "a = p.parse_args(['continual', '--out', 'x', '--strategy', 'lora,finetune',"
        " '--tasks', '0,3,2,3', '--resume'])\n"
        "assert a.strategies == ['lora', 'finetune'] and a.tasks == [0, 3, 2, 3] and a.resume\n"
        "assert set(cmds) == {'continual', 'report'} and a.handler is cmds['continual']\n"
        "assert 'torch' not in sys.modules, 'cli imported torch'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    parser = cli.argparse.ArgumentParser()
    cli.add_parsers(parser.add_subparsers(dest="verb"))
    argv = ["continual", "--out", "x", "--strategy", "lora", "--steps-per-task", "1024"]
    ns = parser.parse_args([*argv, "--tasks", "0,3", "--no-references", "--lora-rank", "4"])
    cfg = cli.config_from_args(ns)
    assert cfg.strategies == ["lora"] and cfg.steps_per_task == 1024 and not cfg.references
    assert cfg.tasks == [0, 3] and cfg.lora_rank == 4
    assert cfg.seeds == 3  # untouched fields keep their defaults


def test_config_from_toml(tmp_path: Path) -> None:
    from skillbank.config import ConfigError, load_toml

    good = tmp_path / "c.toml"
    good.write_text("[continual]\nlora_rank = 4\newc_coef = 10\nstrategies = ['lora']\n")
    cfg = load_toml(good, ContinualConfig, "continual", ContinualConfig())
    assert cfg.lora_rank == 4 and cfg.ewc_coef == 10.0 and cfg.strategies == ["lora"]
    bad = tmp_path / "b.toml"
    bad.write_text("[continual]\nlora_rnak = 4\n")
    with pytest.raises(
        ConfigError,
        match=r"b.toml \[continual\]: field 'lora_rnak': unknown field; valid fields: .*'seeds'",
    ):
        load_toml(bad, ContinualConfig, "continual", ContinualConfig())
    bad.write_text("[continual]\nseeds = 0\n")
    with pytest.raises(
        ConfigError, match=r"b.toml \[continual\]: field 'seeds': .*greater than or equal to 1"
    ):
        load_toml(bad, ContinualConfig, "continual", ContinualConfig())
    bad.write_text("[continual]\nreplay_loss = 'l1'\n")
    with pytest.raises(ConfigError, match="field 'replay_loss': .*'kl' or 'mse'"):
        load_toml(bad, ContinualConfig, "continual", ContinualConfig())


def test_config_file_then_flags(tmp_path: Path) -> None:
    from skillbank.config import ConfigError

    toml = tmp_path / "c.toml"
    toml.write_text("[continual]\nlora_rank = 4\nseeds = 2\n")
    parser = cli.argparse.ArgumentParser()
    cli.add_parsers(parser.add_subparsers(dest="verb"))
    ns = parser.parse_args(["continual", "--out", "x", "--config", str(toml), "--seeds", "5"])
    cfg = cli.config_from_args(ns)
    assert cfg.lora_rank == 4 and cfg.seeds == 5  # the flag wins over the file
    ns = parser.parse_args(["continual", "--out", "x", "--eval-episodes", "0"])
    with pytest.raises(ConfigError, match="command line: field 'eval_episodes'"):
        cli.config_from_args(ns)
