"""The metrics table from a hand-made results dict (raw returns -> P, F, FT by hand)."""

from __future__ import annotations

import math

import pytest

from skillbank.continual.summary import metrics_rows, summarise


def tiny_results() -> dict:
    """Two tasks, 100 steps each, scores = return / 500."""
    seq = {
        "evals": [
            {"phase": 0, "step": 0, "mean": [0, 0]},
            {"phase": 0, "step": 50, "mean": [250, 0]},
            {"phase": 0, "step": 100, "mean": [500, 0]},
            {"phase": 1, "step": 100, "mean": [500, 0]},
            {"phase": 1, "step": 150, "mean": [250, 250]},
            {"phase": 1, "step": 200, "mean": [0, 500]},
        ],
        "R_raw": [[500, 0], [0, 500]],
        "memory_bytes": {"network": 1000, "obs_norms": 24},
        "wall_time_s": 10.0,
    }
    joint = {
        "evals": [
            {"phase": 0, "step": 0, "mean": [0, 0]},
            {"phase": 0, "step": 200, "mean": [500, 250]},
        ],
        "R_raw": [[500, 250]],
        "memory_bytes": {"network": 1000},
        "wall_time_s": 4.0,
    }
    return {
        "steps_per_task": 100,
        "normalisation": {"tasks": [{"low": 0.0, "high": 500.0}, {"low": 0.0, "high": 500.0}]},
        "strategy_info": {"finetune": {"sequential": True}, "multitask": {"sequential": False}},
        "reference": {
            "0": [
                {"task": 0, "steps": [0, 50, 100], "mean": [0, 500, 500]},
                {"task": 1, "steps": [0, 100], "mean": [0, 0]},
            ]
        },
        "runs": {"finetune": {"0": seq}, "multitask": {"0": joint}},
    }


def test_summary_by_hand() -> None:
    s = summarise(tiny_results())
    # reference AUCs: task 0 rises to 1 at step 50 -> (25 + 50) / 100; task 1 stays 0
    assert s["reference_auc"] == pytest.approx([0.75, 0.0])
    ft = s["strategies"]["finetune"]
    seed = ft["per_seed"]["0"]
    assert seed["R"] == [[1.0, 0.0], [0.0, 1.0]]
    assert ft["P"]["mean"] == pytest.approx(0.5)  # last row (0, 1)
    assert ft["F"]["mean"] == pytest.approx(0.5)  # F = ((1 - 0) + 0) / 2
    # AUC of both windows = 0.5; FT_0 = (0.5 - 0.75) / 0.25 = -1, FT_1 = (0.5 - 0) / 1
    assert seed["AUC_per_task"] == pytest.approx([0.5, 0.5])
    assert seed["FT_per_task"] == pytest.approx([-1.0, 0.5])
    assert ft["FT"]["mean"] == pytest.approx(-0.25)
    assert ft["dAUC"]["mean"] == pytest.approx(((0.5 - 0.75) + (0.5 - 0.0)) / 2)
    assert ft["memory_bytes"]["mean"] == 1024
    mt = s["strategies"]["multitask"]
    assert mt["P"]["mean"] == pytest.approx(0.75)
    assert math.isnan(mt["F"]["mean"]) and mt["R_mean"] is None
    rows = metrics_rows(s)
    assert rows[0][:4] == [
        "finetune",
        "0.50 [0.50, 0.50]",
        "0.50 [0.50, 0.50]",
        "-0.25 [-0.25, -0.25]",
    ]
    assert rows[0][4] == "0.12 [0.12, 0.12]"
    assert rows[1][2:5] == ["-", "-", "-"]


def test_task_curve_uses_the_kept_weights_evaluation() -> None:
    import numpy as np

    from skillbank.continual.summary import task_curve, window_auc

    run = {
        "evals": [
            {"phase": 0, "step": 0, "mean": [0]},
            {"phase": 0, "step": 100, "mean": [100]},  # last iterate
            {"phase": 0, "step": 100, "mean": [500]},  # kept weights, re-evaluated
            {"phase": 1, "step": 100, "mean": [500]},
        ]
    }
    low, high = np.array([0.0]), np.array([500.0])
    steps, p = task_curve(run, 0, low, high)
    assert steps.tolist() == [0, 100, 100] and p.tolist() == [0.0, 1.0, 1.0]
    # the AUC follows the training curve: 0 -> 0.2 over the window
    assert window_auc(run, 0, 100, low, high) == pytest.approx(0.1)
