"""Every path of the multi-run outputs folder, built here and nowhere else.

::

    OUT/trainer.json                     the trainer: base, rank capacity, async level, pid
    OUT/trainer_status.json              the trainer: slot, step and state of each run
    OUT/trainer_log.jsonl                the trainer: events (admissions, warnings, errors)
    OUT/                                 the folder itself is flock-ed by the live trainer
    OUT/.staging/                        temp folders, renamed into the run folders
    OUT/base/                            the base, when the trainer built it (no library)
    OUT/run_<name>/control/orch.toml         the run's config (written last: the start signal)
    OUT/run_<name>/control/evicted.txt       eviction (trainer or operator)
    OUT/run_<name>/control/config_error.txt  why the trainer rejected orch.toml
    OUT/run_<name>/control/run_id.txt        this incarnation's id (written at admission)
    OUT/run_<name>/control/orchestrator.lock held (flock) by the run's orchestrator
    OUT/run_<name>/rollouts/step_<N>/{rollout.safetensors, meta.json}
    OUT/run_<name>/broadcasts/step_<N>/{adapter_config.json, adapter_model.safetensors,
                                         obs_norm.json, STABLE}
    OUT/run_<name>/checkpoints/step_<N>/{trainer/rank_<k>.pt, weight/{...,STABLE}, STABLE}
    OUT/run_<name>/logs/{trainer.jsonl, orchestrator.jsonl}

No function here touches the disk except the listing helpers (``steps``, ``stable_steps``,
``run_candidates``, ``rank_files``) and ``escapes``, which only read.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from skillbank.errors import SkillbankError

RUN_PREFIX = "run_"
STABLE = "STABLE"
STEP_PREFIX = "step_"
ROLLOUT_TENSORS = "rollout.safetensors"
ROLLOUT_META = "meta.json"
OBS_NORM = "obs_norm.json"
WEIGHT = "weight"
"""A checkpoint's PEFT copy of the adapter (``checkpoints/step_<N>/weight/``)."""
BASE_CONFIG = "config.json"
BASE_WEIGHTS = "model.safetensors"
"""The two files of a base folder (``OUT/base/``, a library's ``base/``)."""
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}")
_STEP_RE = re.compile(r"step_(0|[1-9][0-9]{0,11})")


class PathError(SkillbankError, ValueError):
    """A run folder or name that the protocol does not accept; the message names it."""


def check_run_name(name: str) -> str:
    """``name`` if it is a valid run name (letters, digits, ``_ . -``; <= 100 chars)."""
    if not _NAME_RE.fullmatch(name) or ".." in name:
        raise PathError(
            f"run name {name!r} is not allowed: use letters, digits, '_', '-', '.' "
            "(at most 100, no '..')"
        )
    return name


def step_name(step: int) -> str:
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    return f"{STEP_PREFIX}{step}"


def parse_step(name: str) -> int | None:
    """``step_12`` -> 12; None for anything else (temp folders, ``step_01``, ...)."""
    match = _STEP_RE.fullmatch(name)
    return int(match.group(1)) if match else None


def steps(folder: Path) -> list[int]:
    """Ascending steps of the ``step_<N>`` entries of ``folder`` ([] if it is missing)."""
    try:
        names = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(s for s in map(parse_step, names) if s is not None)


def stable_steps(folder: Path) -> list[int]:
    """Ascending steps of the ``step_<N>`` entries of ``folder`` that hold ``STABLE``."""
    return [s for s in steps(folder) if (folder / step_name(s) / STABLE).is_file()]


def is_inside(root: Path, path: Path) -> bool:
    """Whether ``path`` (symlinks resolved) lies inside ``root`` (resolved)."""
    try:
        path.resolve().relative_to(root.resolve())
    except (ValueError, OSError, RuntimeError):
        return False
    return True


@dataclass(frozen=True)
class RunPaths:
    """The paths of one run folder ``OUT/run_<name>``."""

    out: Path
    name: str

    @property
    def root(self) -> Path:
        return self.out / f"{RUN_PREFIX}{self.name}"

    # control
    @property
    def control(self) -> Path:
        return self.root / "control"

    @property
    def orch_toml(self) -> Path:
        return self.control / "orch.toml"

    @property
    def evicted(self) -> Path:
        return self.control / "evicted.txt"

    @property
    def config_error(self) -> Path:
        return self.control / "config_error.txt"

    @property
    def run_id(self) -> Path:
        return self.control / "run_id.txt"

    @property
    def orchestrator_lock(self) -> Path:
        return self.control / "orchestrator.lock"

    # rollouts (orchestrator -> trainer)
    @property
    def rollouts(self) -> Path:
        return self.root / "rollouts"

    def rollout(self, step: int) -> Path:
        return self.rollouts / step_name(step)

    def rollout_tensors(self, step: int) -> Path:
        return self.rollout(step) / ROLLOUT_TENSORS

    def rollout_meta(self, step: int) -> Path:
        return self.rollout(step) / ROLLOUT_META

    def rollout_staging(self, step: int, tag: str) -> Path:
        """``tag`` starts with the writer's ``<host>.<pid>`` (``files.owner_tag``)."""
        return self.rollouts / f".{step_name(step)}.tmp-{tag}"

    def rejected_rollout(self, step: int) -> Path:
        return self.rollouts / f"rejected_{step_name(step)}"

    # broadcasts (trainer -> orchestrator)
    @property
    def broadcasts(self) -> Path:
        return self.root / "broadcasts"

    def broadcast(self, step: int) -> Path:
        return self.broadcasts / step_name(step)

    def broadcast_stable(self, step: int) -> Path:
        return self.broadcast(step) / STABLE

    def broadcast_obs_norm(self, step: int) -> Path:
        return self.broadcast(step) / OBS_NORM

    # checkpoints (trainer; the converter writes step 0)
    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    def checkpoint(self, step: int) -> Path:
        return self.checkpoints / step_name(step)

    def checkpoint_stable(self, step: int) -> Path:
        return self.checkpoint(step) / STABLE

    def rank_file(self, step: int, rank: int = 0) -> Path:
        return self.checkpoint(step) / rank_file_name(rank)

    def weight(self, step: int) -> Path:
        return self.checkpoint(step) / WEIGHT

    def weight_stable(self, step: int) -> Path:
        return self.weight(step) / STABLE

    # logs
    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def trainer_log(self) -> Path:
        return self.logs / "trainer.jsonl"

    @property
    def orchestrator_log(self) -> Path:
        return self.logs / "orchestrator.jsonl"

    # queries
    def newest_stable_checkpoint(self) -> int | None:
        found = [s for s in stable_steps(self.checkpoints) if self.weight_stable(s).is_file()]
        return found[-1] if found else None

    def newest_stable_broadcast(self) -> int | None:
        found = stable_steps(self.broadcasts)
        return found[-1] if found else None

    def written(self) -> tuple[Path, ...]:
        """Every folder and fixed-name file of the run that the service writes into."""
        return (
            self.root,
            self.control,
            self.rollouts,
            self.broadcasts,
            self.checkpoints,
            self.logs,
            self.trainer_log,
            self.orchestrator_log,
            self.config_error,
            self.evicted,
            self.run_id,
            self.orchestrator_lock,
        )

    def escapes(self) -> str | None:
        """Why this run folder is not safely inside the outputs folder, or None: a symlink
        (of the folder, a subfolder or a file the service writes) leading outside, or to
        another run (an alias)."""
        for path in self.written():
            if (path.exists() or path.is_symlink()) and not is_inside(self.out, path):
                return f"{path} resolves to {path.resolve()}, outside {self.out.resolve()}"
            if path.is_symlink() and path.parent != self.out:
                return f"{path} is a symlink (the service writes no file through a link)"
        if self.root.is_symlink():
            target = self.root.resolve()
            if target.parent == self.out.resolve() and target.name.startswith(RUN_PREFIX):
                return f"{self.root} is an alias of the run folder {target}"
        return None


def rank_file_name(rank: int) -> str:
    """Checkpoint file of trainer rank ``rank``, relative to the checkpoint folder."""
    return f"trainer/rank_{rank}.pt"


_RANK_RE = re.compile(r"rank_(0|[1-9][0-9]{0,5})\.pt")


def rank_files(run: RunPaths, step: int) -> list[int]:
    """Ascending ranks k of the ``trainer/rank_<k>.pt`` files of checkpoint ``step``."""
    try:
        names = os.listdir(run.rank_file(step).parent)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(int(m.group(1)) for m in map(_RANK_RE.fullmatch, names) if m)


@dataclass(frozen=True)
class OutPaths:
    """The outputs folder and the trainer's files in it."""

    root: Path

    @property
    def trainer_json(self) -> Path:
        return self.root / "trainer.json"

    @property
    def status_json(self) -> Path:
        return self.root / "trainer_status.json"

    @property
    def trainer_log(self) -> Path:
        return self.root / "trainer_log.jsonl"

    @property
    def staging(self) -> Path:
        return self.root / ".staging"

    @property
    def base(self) -> Path:
        return self.root / "base"

    @property
    def base_files(self) -> BaseFiles:
        return BaseFiles(self.base)

    def run(self, name: str) -> RunPaths:
        return RunPaths(self.root, check_run_name(name))

    def run_candidates(self) -> list[tuple[str, Path]]:
        """(entry name, path) of every ``run_*`` entry of the outputs folder, sorted."""
        try:
            names = sorted(os.listdir(self.root))
        except FileNotFoundError:
            return []
        return [(n, self.root / n) for n in names if n.startswith(RUN_PREFIX)]


@dataclass(frozen=True)
class BaseFiles:
    """The files of a base folder: ``OUT/base`` or a library's ``LIB/base``."""

    folder: Path

    @classmethod
    def of_library(cls, library: Path) -> BaseFiles:
        return cls(Path(library) / "base")

    @property
    def config(self) -> Path:
        return self.folder / BASE_CONFIG

    @property
    def weights(self) -> Path:
        return self.folder / BASE_WEIGHTS


def run_from_dir(run_dir: str | os.PathLike[str]) -> RunPaths:
    """The ``RunPaths`` of a folder ``OUT/run_<name>`` given on a command line."""
    path = Path(run_dir)
    folder = path.name
    if not folder.startswith(RUN_PREFIX):
        raise PathError(f"{path}: a run folder must be named '{RUN_PREFIX}<name>'")
    out = Path(os.path.abspath(path.parent))  # absolute, without ".."
    run = RunPaths(out, check_run_name(folder[len(RUN_PREFIX) :]))
    why = run.escapes()
    if why is not None:
        raise PathError(f"{path}: run folder escapes the outputs folder ({why})")
    return run
