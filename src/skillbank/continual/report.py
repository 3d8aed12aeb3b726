"""report.html of a continual run, rebuilt from results.json alone."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np

from skillbank.continual.summary import (
    METRICS_HEADER,
    metrics_rows,
    normaliser,
    summarise,
    task_curve,
)
from skillbank.errors import FormatError
from skillbank.reporting.html import html_table, img, png_data_uri, write_html

ANCHOR = [
    ["PackNet", "0.80", "0.00", "0.18"],
    ["EWC", "0.60", "0.02", "-0.18"],
    ["fine-tuning", "0.05", "0.73", "0.20"],
]
"""Continual World, CW20, SAC (Wolczyk et al., 2021): P / F / FT."""


def _short(names: list[str]) -> list[str]:
    """Names without the family prefix; a task visited again gets " (2)", " (3)", ..."""
    out: list[str] = []
    seen: dict[str, int] = {}
    for n in names:
        short = n.split("/", 1)[-1]
        seen[short] = seen.get(short, 0) + 1
        out.append(short if seen[short] == 1 else f"{short} ({seen[short]})")
    return out


def heatmaps(summary: dict[str, Any], names: list[str]) -> str:
    """One heatmap of the mean R[j, i] per sequential strategy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    items = [(k, e["R_mean"]) for k, e in summary["strategies"].items() if e["R_mean"] is not None]
    if not items:
        return "<p>no sequential strategy in this run</p>"
    cols = min(3, len(items))
    rows = -(-len(items) // cols)
    n = len(names)
    fig, axes = plt.subplots(
        rows, cols, figsize=(1.1 * n * cols + 2, 1.0 * n * rows + 1.5), squeeze=False
    )
    for ax in axes.flat[len(items) :]:
        ax.axis("off")
    short = _short(names)
    for ax, (name, r) in zip(axes.flat, items):
        m = np.asarray(r)
        ax.imshow(m, vmin=0, vmax=1, cmap="viridis")
        for j in range(n):
            for i in range(n):
                ax.text(
                    i,
                    j,
                    f"{m[j, i]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if m[j, i] < 0.6 else "black",
                )
        ax.set_title(name, fontsize=10)
        ax.set_xticks(range(n), short, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(n), [f"after {s}" for s in short], fontsize=7)
    fig.tight_layout()
    return img(png_data_uri(fig))


def curves(results: dict[str, Any]) -> str:
    """p_i(t), mean over seeds, one panel per strategy; dotted lines at task boundaries."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    low, high = normaliser(results)
    names = _short(results["task_names"])
    n, steps = len(names), results["steps_per_task"]
    runs = [(k, v) for k, v in results["runs"].items() if v]
    if not runs:
        return "<p>no runs yet</p>"
    fig, axes = plt.subplots(len(runs), 1, figsize=(9, 2.4 * len(runs)), squeeze=False)
    for ax, (name, by_seed) in zip(axes[:, 0], runs):
        for i in range(n):
            per_seed = [task_curve(r, i, low, high) for r in by_seed.values()]
            length = min(len(p) for _, p in per_seed)
            mean = np.mean([p[:length] for _, p in per_seed], axis=0)
            ax.plot(per_seed[0][0][:length], mean, label=names[i], lw=1.2)
        if results["strategy_info"][name]["sequential"]:
            for j in range(1, n):
                ax.axvline(j * steps, color="grey", ls=":", lw=0.8)
        ax.set_ylim(-0.05, 1.05)
        ax.set_title(name, fontsize=10)
        ax.set_ylabel("p_i(t)")
    axes[-1, 0].set_xlabel("env steps (all tasks)")
    axes[0, 0].legend(fontsize=7, ncol=min(n, 6), loc="lower left")
    fig.tight_layout()
    return img(png_data_uri(fig))


def per_task_table(summary: dict[str, Any], names: list[str]) -> str:
    header = ["strategy", "metric", *_short(names)]
    rows = []
    if summary["reference_auc"] is not None:
        rows.append(["reference", "AUC", *[f"{v:.2f}" for v in summary["reference_auc"]]])
    for name, e in summary["strategies"].items():
        seeds = list(e["per_seed"].values())
        for key in ("final", "F_per_task", "AUC_per_task", "FT_per_task"):
            if all(key in m for m in seeds):
                vals = np.mean([m[key] for m in seeds], axis=0)
                rows.append([name, key.replace("_per_task", ""), *[f"{v:.2f}" for v in vals]])
    return html_table(header, rows)


def setup_text(results: dict[str, Any]) -> str:
    cfg = results["config"]
    tasks = ", ".join(f"{i}: {html.escape(n)}" for i, n in enumerate(results["task_names"]))
    norm = "; ".join(
        f"{html.escape(t['name'])}: {html.escape(t['rule'])} "
        f"(low {t['low']:.1f}, high {t['high']:.1f})"
        for t in results["normalisation"]["tasks"]
    )
    return (
        f"<p>suite <b>{html.escape(cfg['suite'])}</b>, tasks in order: {tasks}.<br>"
        f"{results['steps_per_task']} env steps per task, seeds {cfg['first_seed']}.."
        f"{cfg['first_seed'] + cfg['seeds'] - 1}; every task evaluated every "
        f"{results['eval_every_steps']} steps with {cfg['eval_episodes']} greedy episodes "
        f"(fixed seeds); keep_best={cfg.get('keep_best', False)}.<br>{ppo_text(results)}<br>"
        f"Scores p_i in [0, 1]: {norm}; clipped to [0, 1].<br>"
        "P = mean_i p_i(T); F = mean over all tasks of p_i(end of i) - p_i(T); "
        "FT = mean_i (AUC_i - AUC_ref_i) / (1 - AUC_ref_i), AUC over task i's window, "
        "reference = task i alone from scratch (full network, same steps), averaged over "
        "seeds; FT is unbounded below when AUC_ref is near 1 (a reference that learns "
        "fast), so AUC - AUC_ref (mean over tasks, in [-1, 1]) is shown next to it. "
        "Intervals: 90% bootstrap over seeds. Memory: bytes of what the strategy "
        "keeps (network(s), anchors, Fisher, buffer, adapters, observation statistics). "
        "Wall time: training plus the strategy's own work, without the periodic "
        "evaluations.</p>"
    )


def ppo_text(results: dict[str, Any]) -> str:
    """The resolved PPO settings that differ between full networks and LoRA skills, plus
    the shared ones."""
    full, lora = results["ppo"]["full"], results["ppo"]["lora"]
    differ = ", ".join(f"{k} {full[k]} / {lora[k]}" for k in full if full[k] != lora.get(k))
    keys = ("envs_per_task", "rollout_steps", "update_epochs", "num_minibatches", "ent_coef")
    same = ", ".join(f"{k} {full[k]}" for k in keys if full.get(k) == lora.get(k))
    return html.escape(f"PPO full networks / LoRA skills: {differ}; both: {same}.")


def notes(results: dict[str, Any]) -> str:
    parts = []
    for name, runs in results["runs"].items():
        for seed, run in runs.items():
            start = run.get("extras", {}).get("start_from")
            if start and name == "lora-transfer":
                text = f"{name} seed {seed}: skills start from {', '.join(start)}"
                parts.append(f"<li>{html.escape(text)}</li>")
    return f"<ul>{''.join(parts)}</ul>" if parts else "<p>-</p>"


def write_report(results: dict[str, Any], path: Path) -> None:
    summary = summarise(results)
    names = results["task_names"]
    sections = [
        ("Setup", setup_text(results)),
        (
            "Metrics (mean [90% bootstrap interval] over seeds)",
            html_table(METRICS_HEADER, metrics_rows(summary)),
        ),
        (
            "Published anchor: Continual World CW20, SAC (P / F / FT)",
            html_table(["method", "P", "F", "FT"], ANCHOR),
        ),
        ("Result matrix R[j, i] = p_i after task j (mean over seeds)", heatmaps(summary, names)),
        ("p_i(t) over the sequence (mean over seeds; dotted: task boundaries)", curves(results)),
        ("Per task (mean over seeds)", per_task_table(summary, names)),
        ("Transfer choices", notes(results)),
    ]
    write_html(Path(path), "skillbank continual: " + results["config"]["suite"], sections)


def rebuild(folder: Path) -> Path:
    """``skillbank report DIR``: report.html from DIR/results.json."""
    from skillbank.continual.paths import ContinualPaths
    from skillbank.io import read_json

    paths = ContinualPaths(folder)
    results = read_json(paths.results)
    if results.get("format") != "skillbank-continual/1":
        raise FormatError(
            f"{paths.results}: field 'format': not a skillbank continual results file"
        )
    write_report(results, paths.report)
    return paths.report
