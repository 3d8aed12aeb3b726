"""The whole pipeline on a toy setting (gradient descent on small regressions): fast."""

import json
from pathlib import Path

import pytest
import torch
from interference_toy import toy_setting

from skillbank.cli.interference import print_summary
from skillbank.cli.main import main
from skillbank.interference.analysis import taylor_terms
from skillbank.interference.config import InterferenceConfig
from skillbank.interference.experiment import run_experiment
from skillbank.interference.summary import rollback_points, score_table, targets


def test_taylor_terms_exact_on_a_quadratic() -> None:
    a = torch.tensor([[2.0, 0.5], [0.5, 1.0]])

    def loss(p: dict) -> torch.Tensor:
        w = p["w"]
        return 0.5 * w @ a @ w + w.sum()

    start, end = {"w": torch.tensor([1.0, -1.0])}, {"w": torch.tensor([0.3, 2.0])}
    t = taylor_terms(loss, start, end)
    assert t["predicted"] == pytest.approx(t["measured"], rel=1e-5)
    d = end["w"] - start["w"]
    assert t["second_order"] == pytest.approx(float(0.5 * d @ a @ d), rel=1e-5)


def test_toy_experiment_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    torch.manual_seed(0)
    setting = toy_setting(3)
    cfg = InterferenceConfig(
        steps=100,
        refresh_steps=40,
        rollback_fractions=[0.02, 0.05, 0.3],
        random_seeds=3,
        krylov_steps=8,
        eigen_k=4,
        eigen_steps=12,
    )
    res = run_experiment(setting, cfg, tmp_path, quiet=True)
    assert [st["stage"] for st in res["stages"]] == [
        "start",
        "after toy/d0",
        "after toy/d1",
        "after toy/d2",
    ]
    assert len(res["pairs"]) == 3 and len(res["cumulative"]) == 2
    for p in res["pairs"]:
        # small-ish steps of gradient descent on smooth losses: Taylor predicts the damage
        assert p["predicted"] == pytest.approx(p["measured"], rel=0.5, abs=1e-3)
        assert p["path"]["predicted"] == pytest.approx(p["path"]["measured"], rel=0.5, abs=1e-3)
        assert abs(p["krylov"]["share"][-1] - 1.0) < 1e-6  # exact decomposition
        assert 0.0 <= p["neuron_jaccard"] <= 1.0
        assert len(p["eigen_share"]) == 4
        assert [pt["t"] for pt in p["line"]][-1] == 1.0
        assert p["line"][-1]["measured"] == pytest.approx(p["measured"], rel=1e-5, abs=1e-7)
        near = p["line"][0]  # t = 0.1: the quadratic model is nearly exact
        assert near["measured"] == pytest.approx(near["predicted"], rel=0.05, abs=1e-5)
    adjacent, skip = res["pairs"][0], res["pairs"][1]  # d0 <- d1, d0 <- d2
    assert adjacent["measured"] == pytest.approx(adjacent["path"]["measured"])
    assert adjacent["score_drop"] == pytest.approx(adjacent["path"]["score_drop"])
    assert skip["measured"] != pytest.approx(skip["path"]["measured"])  # theta_A + d_B differs
    # the measured damage of the first domain is real
    assert res["cumulative"][0]["measured"] > 0
    t = targets(res)
    assert t["correlation"]["n"] == 3
    # refresh helps the repaired domain
    a = res["refresh"]["domain"]
    assert res["refresh"]["scores"][a] > res["stages"][-1]["scores"][a]
    # ranked rollback at 30% undoes more of A's loss damage than random rollbacks
    big = rollback_points(res, "curvature")[-1]
    assert big["ranked"]["a_loss_recovery"] > big["random"]["a_loss_recovery"]
    # files: thetas, loss data, results, report
    assert len(list((tmp_path / "theta").glob("*.safetensors"))) == 5  # init, 3 stages, refresh
    assert (tmp_path / "loss_data").is_dir()
    header, rows = score_table(res)
    labels = [r[0] for r in rows]
    assert header[-1] == "avg" and labels[:5] == [st["stage"] for st in res["stages"]] + [
        f"refresh toy/d{a} (40 GD steps)"
    ]
    assert any("(curvature)" in x for x in labels) and any("(conflict)" in x for x in labels)
    assert any(x.startswith("random rollback") for x in labels)
    html_text = (tmp_path / "report.html").read_text()
    assert "data:image/png;base64," in html_text and "Pearson" in html_text
    print_summary(res)  # the console summary of the CLI
    assert "Pearson" in capsys.readouterr().out
    # interference-report rebuilds it from results.json alone
    (tmp_path / "report.html").unlink()
    assert main(["interference-report", str(tmp_path)]) == 0
    assert (tmp_path / "report.html").stat().st_size > 10_000


def test_report_rejects_other_results(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "results.json").write_text(json.dumps({"format": "skillbank-continual/1"}))
    assert main(["interference-report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "results.json" in err and "format" in err


def test_cli_argument_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["interference", "--out", str(tmp_path)]) == 2
    assert "--domains" in capsys.readouterr().err
    out = str(tmp_path / "x")
    assert (
        main(["interference", "--suite", "cartpole-physics", "--tasks", "0,99", "--out", out]) == 2
    )
    assert "out of range" in capsys.readouterr().err
    assert (
        main(
            [
                "interference",
                "--suite",
                "cartpole-physics",
                "--rollback-score",
                "bogus",
                "--out",
                out,
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "command line: field 'rollback_scores'" in err and "unknown damage score" in err
    args = ["interference", "--domains", "reverse,sort", "--repair-domain", "sort", "--out", out]
    assert main(args) == 2  # the last domain cannot be repaired; refused before training
    assert "field repair_domain: 'sort' is not one of ['reverse']" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()  # nothing written on bad input
    (tmp_path / "results.json").write_text("{}")
    assert main(["interference", "--suite", "cartpole-physics", "--out", str(tmp_path)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (tmp_path / "results.json").read_text() == "{}"  # an earlier run is kept


def test_config_rejects_bad_fields() -> None:
    with pytest.raises(ValueError, match="rollback_fractions"):
        InterferenceConfig(steps=1, refresh_steps=1, rollback_fractions=[0.0])
