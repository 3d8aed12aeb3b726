"""From the raw returns in results.json to the metrics table (pure: dicts in, dicts out).

Scores are normalised per task with the rule stored in ``results["normalisation"]``
(``p = clip((R - low) / (high - low), 0, 1)``); the metrics are then computed per seed
(``metrics.py``) and summarised as the mean and a 90% bootstrap interval over seeds.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from skillbank.continual import metrics

LEVEL = 0.9


def normaliser(results: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(low [T], high [T]) of the stored normalisation."""
    tasks = results["normalisation"]["tasks"]
    return np.array([t["low"] for t in tasks]), np.array([t["high"] for t in tasks])


def scores(raw: Any, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Raw returns ``[..., T]`` -> normalised scores in [0, 1]."""
    r = np.asarray(raw, dtype=np.float64)
    return np.clip((r - low) / (high - low), 0.0, 1.0)


def task_curve(
    run: dict[str, Any], task: int, low: np.ndarray, high: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(global steps, p_task) over the whole run, one point per (phase, step): where a
    window ends with the kept weights re-evaluated, that later evaluation is used (so every
    seed of a run has the same points)."""
    last: dict[tuple[int, int], dict] = {}
    for e in run["evals"]:
        last[(e["phase"], e["step"])] = e
    evals = list(last.values())
    steps = np.array([e["step"] for e in evals], dtype=np.float64)
    vals = scores([e["mean"] for e in evals], low, high)[:, task]
    return steps, vals


def window_auc(
    run: dict[str, Any], task: int, steps_per_task: int, low: np.ndarray, high: np.ndarray
) -> float:
    """AUC of task ``task`` over its own training window (evaluations of that phase)."""
    ev = [e for e in run["evals"] if e["phase"] == task]
    s = np.array([e["step"] for e in ev], dtype=np.float64)
    p = scores([e["mean"] for e in ev], low, high)[:, task]
    start = task * steps_per_task
    return metrics.auc(s, p, start, start + steps_per_task)


def reference_aucs(results: dict[str, Any], low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """AUC^ref per task: the single-task runs' AUCs, averaged over seeds."""
    n = results["steps_per_task"]
    per_task: dict[int, list[float]] = {}
    for runs in results["reference"].values():
        for ref in runs:
            i = ref["task"]
            p = scores(np.array(ref["mean"])[:, None], low[i : i + 1], high[i : i + 1])[:, 0]
            per_task.setdefault(i, []).append(metrics.auc(ref["steps"], p, 0, n))
    return np.array([np.mean(per_task[i]) for i in sorted(per_task)])


def seed_metrics(
    run: dict[str, Any],
    sequential: bool,
    ref_auc: np.ndarray | None,
    n: int,
    low: np.ndarray,
    high: np.ndarray,
) -> dict[str, Any]:
    """P, F, FT and the normalised R of one seed's run (F/FT only for sequences)."""
    r = scores(run["R_raw"], low, high)
    out: dict[str, Any] = {"P": metrics.average_performance(r[-1]), "final": r[-1].tolist()}
    if not sequential:
        return {**out, "F": float("nan"), "FT": float("nan"), "dAUC": float("nan")}
    out["R"] = r.tolist()
    out["F_per_task"] = metrics.forgetting_per_task(r).tolist()
    out["F"] = metrics.forgetting(r)
    if ref_auc is not None:
        aucs = [window_auc(run, i, n, low, high) for i in range(r.shape[0])]
        out["AUC_per_task"] = aucs
        out["FT_per_task"] = metrics.forward_transfer_per_task(aucs, ref_auc).tolist()
        out["FT"] = metrics.forward_transfer(aucs, ref_auc)
        out["dAUC"] = float(np.mean(np.asarray(aucs) - ref_auc))
    else:
        out["FT"] = out["dAUC"] = float("nan")
    return out


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    """{strategy: {"P"|"F"|"FT"|"memory_bytes"|"wall_time_s": {"mean","lo","hi","per_seed"},
    "R_mean": [[...]] or None, "per_seed": {...}}} plus "reference_auc"."""
    low, high = normaliser(results)
    n = results["steps_per_task"]
    ref = reference_aucs(results, low, high) if results.get("reference") else None
    out: dict[str, Any] = {"reference_auc": None if ref is None else ref.tolist(), "strategies": {}}
    for name, runs in results["runs"].items():
        if not runs:
            continue
        sequential = results["strategy_info"][name]["sequential"]
        per_seed = {s: seed_metrics(run, sequential, ref, n, low, high) for s, run in runs.items()}
        entry: dict[str, Any] = {"per_seed": per_seed, "seeds": len(runs)}
        for key in ("P", "F", "FT", "dAUC"):
            entry[key] = interval([m[key] for m in per_seed.values()])
        entry["memory_bytes"] = interval([sum(r["memory_bytes"].values()) for r in runs.values()])
        entry["wall_time_s"] = interval([r["wall_time_s"] for r in runs.values()])
        entry["R_mean"] = (
            np.mean([m["R"] for m in per_seed.values()], axis=0).tolist() if sequential else None
        )
        entry["final_mean"] = np.mean([m["final"] for m in per_seed.values()], axis=0).tolist()
        out["strategies"][name] = entry
    return out


def interval(values: list[float]) -> dict[str, Any]:
    mean, lo, hi = metrics.bootstrap_interval(values, LEVEL)
    return {"mean": mean, "lo": lo, "hi": hi, "per_seed": [float(v) for v in values]}


def metrics_rows(summary: dict[str, Any]) -> list[list[str]]:
    """Table rows: strategy, P, F, FT, AUC - AUC_ref (mean [lo, hi]), memory (KiB), wall
    time (s), seeds."""
    rows = []
    for name, e in summary["strategies"].items():
        rows.append(
            [
                name,
                fmt_interval(e["P"]),
                fmt_interval(e["F"]),
                fmt_interval(e["FT"]),
                fmt_interval(e["dAUC"]),
                f"{e['memory_bytes']['mean'] / 1024:.0f}",
                f"{e['wall_time_s']['mean']:.0f}",
                str(e["seeds"]),
            ]
        )
    return rows


METRICS_HEADER = [
    "strategy",
    "P",
    "F",
    "FT",
    "AUC - AUC_ref",
    "memory (KiB)",
    "wall time (s)",
    "seeds",
]


def fmt_interval(d: dict[str, Any]) -> str:
    """``mean [lo, hi]`` with two decimals; "-" when undefined (NaN or null)."""
    if d["mean"] is None or d["mean"] != d["mean"]:
        return "-"
    return f"{d['mean']:.2f} [{d['lo']:.2f}, {d['hi']:.2f}]"
