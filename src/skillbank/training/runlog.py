"""Run logging: metrics as JSONL and CSV, TensorBoard events, a rich progress bar."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)

SCALARS = (
    "sps",
    "lr",
    "policy_loss",
    "value_loss",
    "entropy",
    "approx_kl",
    "clipfrac",
    "explained_variance",
)


def _k(step: int, total: int) -> str:
    """Compact progress text: ``'12k/80k'``."""
    return f"{step / 1000:.0f}k/{total / 1000:.0f}k" if total >= 10_000 else f"{step}/{total}"


def _finite_mean(values: list[float]) -> float:
    vals = [v for v in values if v == v and not math.isinf(v)]
    return sum(vals) / len(vals) if vals else float("nan")


P = TypeVar("P", bound="LiveProgress")


class LiveProgress:
    """A rich progress display (on stderr unless ``console`` is given) started and stopped
    as a context manager; subclasses add their bars to ``self._progress``."""

    def __init__(
        self, *columns: ProgressColumn, console: Console | None = None, quiet: bool = False
    ) -> None:
        self.console = console or Console(stderr=True)
        self._progress = Progress(*columns, console=self.console, disable=quiet, transient=False)

    def __enter__(self: P) -> P:
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._progress.stop()


class RunLogger(LiveProgress):
    """Writes ``metrics.jsonl``, ``metrics.csv`` and (when tensorboard is installed)
    TensorBoard event files under ``folder/tb``; shows a progress bar on the console."""

    def __init__(
        self,
        folder: Path,
        total_steps: int,
        task_names: list[str],
        title: str,
        console: Console | None = None,
        quiet: bool = False,
    ) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.task_names = task_names
        self._jsonl = (self.folder / "metrics.jsonl").open("w")
        self._csv_file = (self.folder / "metrics.csv").open("w", newline="")
        self._csv: csv.DictWriter | None = None
        self._tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.folder / "tb"))
        except ImportError:
            pass
        super().__init__(
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=16),
            TextColumn("{task.fields[steps]} steps/task {task.fields[sps]:>6} SPS"),
            TextColumn("return {task.fields[ret]:>6}"),
            TimeElapsedColumn(),
            console=console,
            quiet=quiet,
        )
        self.total_steps = total_steps
        self._bar = self._progress.add_task(
            title, total=total_steps, sps="-", ret="-", steps=_k(0, total_steps)
        )

    def log(self, row: dict[str, Any]) -> None:
        """Record one update's row (as produced by ``train_ppo``)."""
        self._jsonl.write(json.dumps(row) + "\n")
        self._jsonl.flush()
        flat = {k: v for k, v in row.items() if k != "episodic_return"}
        for name, ret in zip(self.task_names, row.get("episodic_return", [])):
            flat[f"return/{name}"] = ret
        if self._csv is None:
            self._csv = csv.DictWriter(self._csv_file, fieldnames=list(flat))
            self._csv.writeheader()
        self._csv.writerow({k: flat.get(k) for k in self._csv.fieldnames})
        self._csv_file.flush()
        step = int(row["steps_per_task"])
        if self._tb is not None:
            for key in SCALARS:
                if key in row and row[key] == row[key]:
                    self._tb.add_scalar(f"charts/{key}", row[key], step)
            for name, ret in zip(self.task_names, row.get("episodic_return", [])):
                if ret == ret:
                    self._tb.add_scalar(f"episodic_return/{name}", ret, step)
        mean_ret = _finite_mean(row.get("episodic_return", []))
        self._progress.update(
            self._bar,
            completed=step,
            sps=f"{row.get('sps', 0):.0f}",
            steps=_k(step, self.total_steps),
            ret="-" if mean_ret != mean_ret else f"{mean_ret:.1f}",
        )

    def close(self) -> None:
        super().close()
        self._jsonl.close()
        self._csv_file.close()
        if self._tb is not None:
            self._tb.close()
