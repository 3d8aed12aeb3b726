"""The two files every experiment folder with a report holds."""

from __future__ import annotations

from pathlib import Path


class ReportPaths:
    """``ROOT/results.json`` (everything the report needs) and ``ROOT/report.html``;
    experiment layouts (continual, interference) extend it with their own paths."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @property
    def results(self) -> Path:
        return self.root / "results.json"

    @property
    def report(self) -> Path:
        return self.root / "report.html"
