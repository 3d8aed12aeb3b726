"""``skillbank runs OUT`` (a table of the runs) and ``skillbank library add LIB OUT/run_x``."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from skillbank.service.files import alive, read_json_object
from skillbank.service.paths import RUN_PREFIX, OutPaths, PathError, RunPaths, check_run_name, steps

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
            value = read_json_object(run.rollout_meta(step)).get("recent_return")
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
        status = read_json_object(paths.status_json)
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


def add_run_to_library(
    library: str | os.PathLike[str],
    run_dir: str | os.PathLike[str],
    name: str | None = None,
    overwrite: bool = False,
) -> tuple[str, int]:
    """Add the run's newest stable checkpoint to ``library`` as a skill -> (name, step).

    The library is created from the trainer's base when it does not exist yet; an existing
    library must have the same base (checked by digest)."""
    from skillbank.config import ConfigError, read_toml
    from skillbank.library.core import PolicyLibrary
    from skillbank.service.base import file_sha256, load_base
    from skillbank.service.checkpoint import load_rank_file, norm_from_tensors
    from skillbank.service.config import read_trainer_info
    from skillbank.service.paths import run_from_dir
    from skillbank.tasks import get_suite, parse_task

    run = run_from_dir(run_dir)
    step = run.newest_stable_checkpoint()
    if step is None:
        raise FileNotFoundError(f"{run.checkpoints}: no STABLE checkpoint yet")
    tensors = load_rank_file(run.rank_file(step))
    orch = read_toml(run.orch_toml)
    if orch.get("task") is not None:
        task: Any = parse_task(str(orch["task"])).to_dict()
    elif orch.get("suite") is not None:
        task = {"suite": orch["suite"], "tasks": [s.to_dict() for s in get_suite(orch["suite"])]}
    elif orch.get("domain") is not None:  # a run of kind "lm"
        task = {"domain": orch["domain"]}
    else:
        raise ConfigError(f"{run.orch_toml}: field 'task': missing")
    info = read_trainer_info(OutPaths(run.out).trainer_json)
    lib_path = Path(library)
    if (lib_path / "library.json").is_file():
        lib = PolicyLibrary.load(lib_path)
        digest = file_sha256(lib_path / "base" / "model.safetensors")
        if digest != info.base_sha256:
            raise ConfigError(
                f"{OutPaths(run.out).trainer_json}: field 'base_sha256': the run was trained on "
                f"another base than {lib_path / 'base'}"
            )
    else:
        base_cfg = read_json_object(Path(info.base_dir) / "config.json")
        lib = PolicyLibrary.create(lib_path, load_base(info), base_cfg)
    skill = name or run.name
    meta = {
        "task": task,
        "obs_norm": norm_from_tensors(tensors),
        "train": {
            "algo": "grpo" if orch.get("kind") == "lm" else "ppo",
            "service_run": str(run.root),
            "steps": step,
            "learning_rate": orch.get("learning_rate"),
            "final_return": latest_return(run),
        },
    }
    lib.add_skill(skill, run.weight(step), meta, overwrite=overwrite)
    return skill, step
