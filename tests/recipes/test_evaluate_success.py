"""`skillbank eval` reports Meta-World's success rate beside the return (and only there)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from skillbank.cli.main import main

metaworld = pytest.importorskip("metaworld", reason="needs the metaworld extra")


def test_eval_json_has_success_rate_for_metaworld(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    lib = tmp_path / "mw"
    args = ["train-base", "--task", "metaworld:reach-v3", "--out", str(lib), "--steps", "1024"]
    assert main([*args, "--envs-per-task", "1", "--hidden", "16,16", "--quiet"]) == 0
    capsys.readouterr()
    assert (
        main(["eval", str(lib), "--task", "metaworld:reach-v3", "--episodes", "2", "--json"]) == 0
    )
    table = json.loads(capsys.readouterr().out)
    assert table["policies"] == ["base"]
    rate = table["success"][0][0]
    assert rate is not None and 0.0 <= rate <= 1.0


def test_eval_json_has_no_success_for_cartpole(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    lib = tmp_path / "cp"
    args = ["train-base", "--task", "cartpole", "--out", str(lib), "--steps", "512", "--quiet"]
    assert main([*args, "--hidden", "16,16"]) == 0
    capsys.readouterr()
    assert main(["eval", str(lib), "--task", "cartpole", "--episodes", "2", "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert "success" not in table and len(table["mean"][0]) == 1
