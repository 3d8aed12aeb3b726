"""Rich progress bars: one per strategy (all its seeds) and one for the current task."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class ContinualProgress:
    """``strategy(name)`` bars count env steps over all seeds and tasks; ``task(...)``
    restarts the bottom bar for one task; ``advance(name, steps)`` moves both."""

    def __init__(self, totals: dict[str, int], quiet: bool = False) -> None:
        self._progress = Progress(
            TextColumn("[bold]{task.description:<40}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[note]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            disable=quiet,
        )
        self._bars: dict[str, TaskID] = {
            name: self._progress.add_task(name, total=total, note="")
            for name, total in totals.items()
        }
        self._task_bar = self._progress.add_task("task", total=1, note="", visible=False)

    def __enter__(self) -> ContinualProgress:
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._progress.stop()

    def task(self, description: str, total: int) -> None:
        """Start the per-task bar."""
        self._progress.reset(self._task_bar, total=total, description=description, visible=True)

    def advance(self, name: str, steps: int, note: str = "") -> None:
        self._progress.advance(self._bars[name], steps)
        self._progress.update(self._task_bar, advance=steps, note=note)

    def skip(self, name: str, steps: int) -> None:
        """Count steps done before a resume."""
        self._progress.advance(self._bars[name], steps)
