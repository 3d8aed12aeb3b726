"""``skillbank lm``: new-library, sft, rl (from the SFT adapter), eval; bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from skillbank.cli.main import main


def test_lm_cli_flow(tiny_base_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    lib, ad = tmp_path / "lib", tmp_path / "sft"
    assert main(["lm", "new-library", str(lib), "--base", str(tiny_base_dir)]) == 0
    common = ["--domain", "reverse", "--steps", "2", "--eval-n", "8", "--quiet"]
    assert main(["lm", "sft", *common, "--library", str(lib), "--out", str(ad)]) == 0
    meta = json.loads((ad / "skill.json").read_text())
    assert meta["method"] == "sft" and 0 <= meta["scores"]["reverse"] <= 1
    assert meta["base"]["hidden_size"] == 32
    rl = ["lm", "rl", *common, "--library", str(lib), "--skill", "rev_rl", "--init", str(ad)]
    assert main([*rl, "--prompts", "2", "--group", "2"]) == 0
    capsys.readouterr()
    assert main(["lm", "eval", str(lib), "--domains", "reverse,add", "--n", "8", "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert set(table) == {"reverse", "add"}
    assert set(table["reverse"]) == {"(base)", "reverse", "rev_rl"}
    assert all(0 <= v <= 1 for row in table.values() for v in row.values())


def test_lm_cli_bad_input(
    tiny_base_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    args = ["lm", "sft", "--domain", "revers", "--out", str(tmp_path / "a"), "--quiet"]
    assert main([*args, "--base", str(tiny_base_dir)]) == 2
    assert "unknown domain 'revers'; known domains" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()
    lib = tmp_path / "lib"
    assert main(["lm", "new-library", str(lib), "--base", str(tmp_path / "nope")]) == 2
    assert "nope/config.json: not a model folder" in capsys.readouterr().err


def test_lm_cli_toml_config(
    tiny_base_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    cfg = tmp_path / "rl.toml"
    cfg.write_text(
        f'[model]\nbase = "{tiny_base_dir}"\ntarget_modules = ["q_proj", "v_proj"]\n'
        "[grpo]\nsteps = 1\nprompts_per_step = 2\ngroup_size = 2\ntemperature = 0.5\n"
        'loss_type = "bnpo"\nstop = ["|"]\nseed = 3\n'
    )
    out = tmp_path / "ad"
    args = ["lm", "rl", "--config", str(cfg), "--domain", "reverse", "--eval-n", "4"]
    assert main([*args, "--quiet", "--out", str(out), "--top-k", "5"]) == 0
    meta = json.loads((out / "skill.json").read_text())
    c = meta["config"]
    assert (c["temperature"], c["loss_type"], c["stop"], c["seed"]) == (0.5, "bnpo", ["|"], 3)
    assert c["top_k"] == 5  # the flag on top of the file
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert {t.rsplit(".", 1)[1] for t in adapter["target_modules"]} == {"q_proj", "v_proj"}
    cfg.write_text('[grpo]\nloss_typ = "bnpo"\n')
    assert main([*args, "--quiet", "--out", str(out)]) == 2
    assert "rl.toml [grpo]: field 'loss_typ': unknown field" in capsys.readouterr().err
