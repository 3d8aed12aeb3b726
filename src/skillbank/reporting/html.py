"""Tables for the console and a self-contained report.html (plots inlined as PNG)."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path

from rich.table import Table

from skillbank.io import write_text


def _short_names(names: Sequence[str]) -> list[str]:
    """Drop a family prefix shared by every name ("cartpole/long-pole" -> "long-pole")."""
    prefixes = {n.split("/", 1)[0] for n in names if "/" in n}
    if len(prefixes) == 1 and all("/" in n for n in names):
        return [n.split("/", 1)[1] for n in names]
    return list(names)


def _fmt(mean: float, std: float) -> str:
    digits = 0 if abs(mean) >= 100 else 1
    return f"{mean:.{digits}f}±{std:.{digits}f}"


def eval_table(table: dict, title: str = "greedy return, mean±std") -> Table:
    """Rich table of ``evaluate_library`` output: policies x tasks."""
    t = Table(title=f"{title} over {table['episodes']} episodes")
    t.add_column("policy")
    for name in _short_names(table["tasks"]):
        t.add_column(name, justify="right")
    success = table.get("success") or [[None] * len(table["tasks"])] * len(table["policies"])
    for pol, means, stds, rates in zip(table["policies"], table["mean"], table["std"], success):
        cells = [
            _fmt(m, s) if r is None else f"{_fmt(m, s)} ({100 * r:.0f}% success)"
            for m, s, r in zip(means, stds, rates)
        ]
        t.add_row(pol, *cells)
    return t


def png_data_uri(fig: object) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")  # type: ignore[attr-defined]
    import matplotlib.pyplot as plt

    plt.close(fig)  # type: ignore[arg-type]
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def curves_figure(
    series: dict[str, tuple[Sequence[float], Sequence[Sequence[float]]]],
    task_names: Sequence[str],
    max_return: float | None = None,
) -> str:
    """One panel per task; ``series``: label -> (steps, returns[update][task])."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(task_names)
    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for i, name in enumerate(task_names):
        ax = axes[i // cols][i % cols]
        for label, (steps, rets) in series.items():
            ax.plot(steps, [r[i] for r in rets], label=label)
        if max_return is not None:
            ax.axhline(max_return, color="grey", lw=0.8, ls=":")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("env steps per task")
        ax.set_ylabel("episodic return")
    for j in range(n, rows * cols):
        axes[j // cols][j % cols].axis("off")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return png_data_uri(fig)


def bars_figure(groups: dict[str, Sequence[float]], task_names: Sequence[str]) -> str:
    """Grouped bars: label -> one value per task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    x = np.arange(len(task_names))
    width = 0.8 / max(len(groups), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(task_names)), 3.2))
    for i, (label, vals) in enumerate(groups.items()):
        ax.bar(x + i * width, vals, width, label=label)
    ax.set_xticks(x + width * (len(groups) - 1) / 2, task_names, rotation=20, fontsize=8)
    ax.set_ylabel("greedy return")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return png_data_uri(fig)


def html_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def write_html(path: Path, title: str, sections: Sequence[tuple[str, str]]) -> None:
    """A standalone HTML page; ``sections``: (heading, html body) pairs."""
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
        "padding:4px 8px;text-align:right}th{background:#f3f3f3}img{max-width:100%}"
    )
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
        f"</title><style>{style}</style></head><body><h1>{html.escape(title)}</h1>"
    ]
    for heading, body in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>{body}")
    parts.append("</body></html>")
    write_text(path, "\n".join(parts), make_parent=True)


def img(uri: str) -> str:
    return f"<img src='{uri}'>"
