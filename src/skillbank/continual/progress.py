"""Rich progress bars: one per strategy (all its seeds) and one for the current task."""

from __future__ import annotations

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from skillbank.training.runlog import LiveProgress


class ContinualProgress(LiveProgress):
    """``strategy(name)`` bars count env steps over all seeds and tasks; ``task(...)``
    restarts the bottom bar for one task; ``advance(name, steps)`` moves both."""

    def __init__(self, totals: dict[str, int], quiet: bool = False) -> None:
        super().__init__(
            TextColumn("[bold]{task.description:<40}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[note]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            quiet=quiet,
        )
        self._bars: dict[str, TaskID] = {
            name: self._progress.add_task(name, total=total, note="")
            for name, total in totals.items()
        }
        self._task_bar = self._progress.add_task("task", total=1, note="", visible=False)

    def task(self, description: str, total: int) -> None:
        """Start the per-task bar."""
        self._progress.reset(self._task_bar, total=total, description=description, visible=True)

    def advance(self, name: str, steps: int, note: str = "") -> None:
        self._progress.advance(self._bars[name], steps)
        self._progress.update(self._task_bar, advance=steps, note=note)

    def skip(self, name: str, steps: int) -> None:
        """Count steps done before a resume."""
        self._progress.advance(self._bars[name], steps)
