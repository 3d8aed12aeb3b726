"""Every path of a continual output folder (no other module formats one).

::

    OUT/config.json                                  resolved config (written first)
    OUT/results.json                                 everything the report needs
    OUT/report.html
    OUT/state/reference/seed_<s>/task_<i>.json       one single-task reference run
    OUT/state/first/seed_<s>/                        task 0, shared by the strategies
    OUT/state/<strategy>/seed_<s>/task_<j>/          state after task j (latest kept)
        tensors.safetensors, norms.json, progress.json, STABLE (written last)
"""

from __future__ import annotations

from pathlib import Path

from skillbank.reporting.paths import ReportPaths

STABLE = "STABLE"


class ContinualPaths(ReportPaths):
    """Paths of one output folder."""

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def state(self) -> Path:
        return self.root / "state"

    def reference(self, seed: int, task: int) -> Path:
        return self.state / "reference" / f"seed_{seed}" / f"task_{task}.json"

    def first_task(self, seed: int) -> Path:
        return self.state / "first" / f"seed_{seed}"

    def run(self, strategy: str, seed: int) -> Path:
        return self.state / strategy / f"seed_{seed}"

    def task_state(self, strategy: str, seed: int, task: int) -> Path:
        return self.run(strategy, seed) / f"task_{task}"

    def owned(self) -> list[Path]:
        """What ``--overwrite`` removes: only the files and folders this layout writes."""
        return [self.config, self.results, self.report, self.state]


def tensors_file(folder: Path) -> Path:
    return folder / "tensors.safetensors"


def norms_file(folder: Path) -> Path:
    return folder / "norms.json"


def progress_file(folder: Path) -> Path:
    return folder / "progress.json"


def stable_file(folder: Path) -> Path:
    return folder / STABLE


def task_index(folder: Path) -> int:
    """``task_<j>`` -> j (-1 if the name does not match)."""
    name = folder.name
    if name.startswith("task_") and name[5:].isdigit():
        return int(name[5:])
    return -1
