"""``skillbank runs OUT``: a table of the runs of an outputs folder."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from skillbank.io import read_json
from skillbank.service.protocol.files import alive
from skillbank.service.protocol.paths import (
    RUN_PREFIX,
    OutPaths,
    PathError,
    RunPaths,
    check_run_name,
    steps,
)

COLUMNS = ("run", "slot", "step", "latest return", "state", "note")


def _tail_lines(path: Path, size: int = 8192) -> list[str]:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - size))
            return f.read().decode("utf-8", errors="replace").splitlines()[1:]
    except OSError:
        return []


def latest_return(run: RunPaths) -> float | None:
    """Mean return of the run's last episodes: from its newest rollout, else from the
    trainer's log of the run (rollouts are pruned once a checkpoint covers them)."""
    for step in reversed(steps(run.rollouts)):
        try:
            value = read_json(run.rollout_meta(step)).get("recent_return")
        except (OSError, ValueError):
            continue
        return float(value) if isinstance(value, (int, float)) else None
    for line in reversed(_tail_lines(run.trainer_log)):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("event") == "step" and isinstance(record.get("recent_return"), float):
            return float(record["recent_return"])
    return None


def _first_line(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip().splitlines()[0][:100]
    except (OSError, IndexError):
        return ""


def collect_rows(out: str | os.PathLike[str]) -> tuple[list[dict[str, Any]], str]:
    """One row per run folder, and a line about the trainer."""
    paths = OutPaths(Path(out))
    try:
        status = read_json(paths.status_json)
    except (OSError, ValueError):
        status = {}
    known = status.get("runs", {}) if isinstance(status.get("runs"), dict) else {}
    rows = []
    for entry, _ in paths.run_candidates():
        name = entry[len(RUN_PREFIX) :]
        try:
            run = RunPaths(paths.root, check_run_name(name))
        except PathError:
            continue
        seen = known.get(name, {})
        newest = run.newest_stable_broadcast()
        if newest is None:
            newest = run.newest_stable_checkpoint()
        note = ""
        if run.evicted.exists():
            state, note = "evicted", _first_line(run.evicted)
        elif run.config_error.exists():
            state, note = "error", _first_line(run.config_error).replace(f"{run.root}/", "")
        elif seen.get("state") in ("training", "done"):
            state = seen["state"]
        elif not run.orch_toml.exists():
            state, note = "waiting", "no control/orch.toml yet"
        else:
            state = "waiting"
        if seen.get("nan_skips"):
            note = f"{seen['nan_skips']} update(s) skipped (non-finite loss) {note}".strip()
        if seen.get("rejected_rollouts"):
            note = f"{seen['rejected_rollouts']} rollout(s) rejected {note}".strip()
        rows.append(
            {
                "run": name,
                "slot": seen.get("slot") if state == "training" else None,
                "step": newest,
                "latest return": latest_return(run),
                "state": state,
                "note": note,
            }
        )
    age = time.time() - float(status.get("updated", 0.0)) if status else None
    if age is None:
        trainer = f"no trainer status in {paths.status_json}"
    else:
        pid = status.get("pid")
        running = isinstance(pid, int) and alive(pid)
        state = "running" if running else "NOT running"
        trainer = f"trainer pid {pid} {state}, status updated {age:.1f}s ago"
    return rows, trainer


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "-" if not math.isfinite(value) else f"{value:.1f}"
    return str(value)


def render(rows: list[dict[str, Any]], trainer: str) -> Any:
    from rich.table import Table

    table = Table(title=trainer, title_justify="left")
    for col in COLUMNS:
        right = col in ("slot", "step", "latest return")
        table.add_column(col, justify="right" if right else "left", overflow="fold")
    for row in rows:
        table.add_row(*(_cell(row[c]) for c in COLUMNS))
    return table


def show_runs(out: str | os.PathLike[str], watch: bool = False, interval: float = 1.0) -> None:
    from rich.console import Console
    from rich.live import Live

    console = Console()
    if not watch:
        console.print(render(*collect_rows(out)))
        return
    with Live(render(*collect_rows(out)), console=console, refresh_per_second=4) as live:
        try:
            while True:
                time.sleep(interval)
                live.update(render(*collect_rows(out)))
        except KeyboardInterrupt:
            pass
