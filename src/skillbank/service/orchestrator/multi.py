"""``skillbank orchestrator --run A --run B ...`` or ``--all OUT``: one process, many runs.

Every run is served as by the one-run orchestrator (``orchestrator.main``): the same
wait for ``trainer.json`` and ``orch.toml``, the same per-run ``flock``
(``control/orchestrator.lock``: a one-run and a multi-run orchestrator never serve the
same run), the same config check, files, STABLE rules and async bound. What is shared is
the acting: the runs of a kind with a ``serve_many`` part (PPO) go to ONE ``RunGroup``
that makes one batched act per env step over all of them. Runs of a kind without it (LM)
are refused here with one line: start one orchestrator process each for them.

A run's bad config, locked run, crashed env or vanished folder ends that run alone (one
line, as the one-run orchestrator prints it); the others go on. With ``--all`` the
outputs folder is scanned every second: new run folders join, and a run that ended is
served again only as a new incarnation (another ``run_id.txt``, a changed ``orch.toml``).
``--run`` exits when every run has ended (exit code: the worst run's); ``--all`` runs
until SIGTERM or Ctrl-C (exit 0).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skillbank.config import ConfigError
from skillbank.service.kinds import KINDS, load_run_config
from skillbank.service.kinds.registry import RunGroup
from skillbank.service.protocol.files import LockedError, ensure_subdir, hold_lock
from skillbank.service.protocol.info import TrainerInfo, read_trainer_info
from skillbank.service.protocol.paths import (
    RUN_PREFIX,
    OutPaths,
    PathError,
    RunPaths,
    run_from_dir,
)
from skillbank.service.protocol.watch import POLL_S

SCAN_S = 1.0


def _say(name: str, line: str) -> None:
    print(f"[orchestrator] {name}: {line}", file=sys.stderr, flush=True)


def _incarnation(run: RunPaths) -> tuple[Any, ...]:
    """What tells a new incarnation (or a corrected config) of a run folder apart."""

    def stamp(path: Path) -> int | None:
        try:
            return path.stat().st_mtime_ns
        except OSError:
            return None

    try:
        run_id = run.run_id.read_text().strip()
    except OSError:
        run_id = None
    return (stamp(run.orch_toml), run_id, stamp(run.config_error), stamp(run.evicted))


@dataclass
class Roster:
    """The runs of one outputs folder this process serves, has served, or waits for."""

    out: Path
    explicit: list[RunPaths] | None  # --run list; None = --all
    deadline: float
    locks: dict[str, int] = field(default_factory=dict)  # name -> lock fd of a served run
    ended: dict[str, tuple[Any, ...]] = field(default_factory=dict)  # name -> incarnation
    codes: dict[str, int] = field(default_factory=dict)

    def candidates(self) -> list[RunPaths]:
        if self.explicit is not None:
            return [r for r in self.explicit if r.name not in self.codes]
        found = []
        for entry, _ in OutPaths(self.out).run_candidates():
            try:
                found.append(OutPaths(self.out).run(entry[len(RUN_PREFIX) :]))
            except PathError:
                continue  # the trainer warns about bad names
        return found

    def finished(self) -> bool:
        return self.explicit is not None and all(r.name in self.codes for r in self.explicit)

    def end(self, run: RunPaths, code: int, why: str) -> None:
        _say(run.name, why)
        fd = self.locks.pop(run.name, None)
        if fd is not None:
            os.close(fd)
        self.ended[run.name] = _incarnation(run)
        if self.explicit is not None:
            self.codes[run.name] = code
        else:
            self.codes.pop(run.name, None)

    def release_all(self) -> None:
        for fd in self.locks.values():
            os.close(fd)
        self.locks.clear()


class MultiOrchestrator:
    """The scan / join / tick loop (see the module docstring)."""

    def __init__(self, roster: Roster, info: TrainerInfo) -> None:
        self.roster, self.info = roster, info
        self.groups: dict[str, RunGroup] = {}

    def _group(self, kind: str) -> RunGroup:
        if kind not in self.groups:
            factory = KINDS.get(kind).part("serve_many")
            slots = self.info.max_concurrent_runs
            if self.roster.explicit is not None:
                slots = min(slots, len(self.roster.explicit))
            self.groups[kind] = factory(self.info, slots)
        return self.groups[kind]

    def join(self, run: RunPaths) -> None:
        """Try to serve ``run``; a run that cannot be served ends alone (one line)."""
        roster = self.roster
        if run.name in roster.locks:
            return
        if roster.ended.get(run.name) == _incarnation(run):
            return  # ended, and still the same incarnation and config
        if not run.orch_toml.is_file():
            if roster.explicit is not None and time.monotonic() > roster.deadline:
                roster.end(run, 2, f"error: {run.orch_toml}: file not found")
            return
        why = run.escapes()
        if why is not None:
            roster.end(run, 2, f"error: {run.root}: run folder escapes the outputs folder ({why})")
            return
        try:
            ensure_subdir(run.control)
            roster.locks[run.name] = hold_lock(
                run.orchestrator_lock, "another orchestrator serves this run"
            )
        except (LockedError, OSError) as e:
            if roster.explicit is not None:
                roster.end(run, 2, f"error: {e}")
            return  # --all: another orchestrator serves it; look again at the next scan
        try:
            cfg, tasks = load_run_config(run.orch_toml, self.info)
            kind = KINDS.get(cfg.kind)
            if kind.serve_many is None:
                raise ConfigError(
                    f"{run.orch_toml}: field 'kind': runs of kind {cfg.kind!r} are served one "
                    f"process each: skillbank orchestrator --run {run.root}"
                )
            self._group(cfg.kind).add(run, cfg, tasks)
        except Exception as e:
            roster.end(run, 2, f"error: {e}")
            return
        _say(run.name, "joined")

    def scan(self) -> None:
        for run in self.roster.candidates():
            self.join(run)

    def tick(self) -> bool:
        busy = False
        for group in self.groups.values():
            ended, worked = group.tick()
            busy = busy or worked
            for e in ended:
                self.roster.end(e.run, e.code, e.why)
        return busy

    def close(self) -> None:
        for group in self.groups.values():
            group.close()
        self.roster.release_all()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _outputs_folder(runs: list[RunPaths]) -> Path:
    outs = {r.out for r in runs}
    if len(outs) != 1:
        raise PathError(
            f"--run: every run must be in one outputs folder (one trainer), got {sorted(outs)}"
        )
    return outs.pop()


def run_multi(run_dirs: list[Path], all_out: Path | None, wait_s: float = 600.0) -> int:
    """Serve the runs ``run_dirs`` (or, with ``all_out``, every run of that folder);
    returns the exit code (see the module docstring)."""
    explicit: list[RunPaths] | None
    if all_out is not None:
        explicit = None
        out = Path(os.path.abspath(all_out))
    else:
        explicit = [run_from_dir(d) for d in run_dirs]
        out = _outputs_folder(explicit)
    deadline = time.monotonic() + wait_s
    info_path = OutPaths(out).trainer_json
    while not info_path.is_file():
        if time.monotonic() > deadline:
            raise FileNotFoundError(f"{info_path}: no trainer on {out} (waited)")
        time.sleep(0.2)
    signal.signal(signal.SIGTERM, _interrupt)
    roster = Roster(out, explicit, deadline)
    orch = MultiOrchestrator(roster, read_trainer_info(info_path))
    next_scan = 0.0
    try:
        while not roster.finished():
            now = time.monotonic()
            if now >= next_scan:
                orch.scan()
                next_scan = now + (SCAN_S if explicit is None else 0.2)
            if not orch.tick():
                time.sleep(POLL_S)
    except KeyboardInterrupt:
        print("[orchestrator] stopped", file=sys.stderr, flush=True)
        return 0
    finally:
        orch.close()
    return max(roster.codes.values(), default=0)
