"""Per-task state on disk: tensors as safetensors, statistics and progress as JSON.

A state folder is complete only when its ``STABLE`` file exists (written last); the
latest complete folder of a run is what ``--resume`` continues from. Older folders of the
same run are removed once a newer one is complete.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import safetensors.torch
from safetensors.torch import load_file
from torch import Tensor

from skillbank.algos.normalize import ObsNorm
from skillbank.continual.paths import (
    STABLE,
    norms_file,
    progress_file,
    stable_file,
    task_index,
    tensors_file,
)
from skillbank.errors import FormatError
from skillbank.io import dumps_json, publish_files, read_json, withdraw_dir


def save_state(
    folder: Path, tensors: dict[str, Tensor], norms: list[ObsNorm], progress: dict[str, Any]
) -> None:
    """Publish one complete state folder (staged, then one rename; STABLE included),
    then withdraw the run's older ones."""
    withdraw_dir(folder, STABLE)
    blob = safetensors.torch.save({k: v.detach().contiguous() for k, v in tensors.items()})
    files = {
        tensors_file(folder).name: blob,
        norms_file(folder).name: dumps_json([n.to_dict() for n in norms]).encode("utf-8"),
        progress_file(folder).name: dumps_json(progress).encode("utf-8"),
        STABLE: b"ok\n",
    }
    folder.parent.mkdir(parents=True, exist_ok=True)
    publish_files(folder, files)
    j = task_index(folder)
    for other in folder.parent.glob("task_*"):
        if other != folder and 0 <= task_index(other) < j:
            withdraw_dir(other, STABLE)


def latest_state(run_folder: Path) -> Path | None:
    """The complete state folder with the highest task index, or None."""
    if not run_folder.is_dir():
        return None
    done = [f for f in run_folder.glob("task_*") if stable_file(f).is_file() and task_index(f) >= 0]
    return max(done, key=task_index) if done else None


def load_state(folder: Path) -> tuple[dict[str, Tensor], list[ObsNorm], dict[str, Any]]:
    """(tensors, norms, progress) of a complete state folder."""
    if not stable_file(folder).is_file():
        raise FormatError(f"{folder}: incomplete state (no STABLE)")
    tensors = load_file(str(tensors_file(folder)))
    raw = read_json_list(norms_file(folder))
    norms = [ObsNorm.from_dict(d) for d in raw]
    return tensors, norms, read_json(progress_file(folder))


def read_json_list(path: Path) -> list:
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FormatError(f"{path}: unreadable ({e})") from e
    if not isinstance(data, list):
        raise FormatError(f"{path}: expected a JSON list")
    return data
