"""Which runs the trainer serves: discovery, validation, slots, resume, release.

A ``run_<name>`` folder is *pending* until ``control/orch.toml`` exists, then validated:
rejected (``control/config_error.txt``, naming the field; re-checked when orch.toml
changes), *waiting* for a slot (first come, first served), *live* (a slot, resumed from the
newest loadable STABLE checkpoint or started fresh), then *done* (max_steps reached) or
*evicted* (``control/evicted.txt``). A live run is released when its folder disappears
or is another incarnation (``control/run_id.txt``, written at admission, changed or gone:
the folder was deleted and re-created, which is a new run). Folders whose name is not a
valid run name or that resolve outside the outputs folder (symlinks) are ignored with one
warning.

The registry gets narrow interfaces, not the trainer: ``SlotControl`` (fresh / load /
clear a slot) and ``RunHost`` (log, publish a broadcast, checkpoint, wait for the I/O).
"""

from __future__ import annotations

import contextlib
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from skillbank.config import ConfigError
from skillbank.io import write_text
from skillbank.service.kinds import load_run_config
from skillbank.service.protocol.checkpoint import CheckpointError, WorldSizeError
from skillbank.service.protocol.files import clean_stale, remove_dir
from skillbank.service.protocol.info import TrainerInfo
from skillbank.service.protocol.paths import (
    RUN_PREFIX,
    OutPaths,
    PathError,
    RunPaths,
    check_run_name,
    steps,
)
from skillbank.service.protocol.watch import read_run_id

ESCAPE_CHECK_S = 1.0
"""How often a known run folder is checked again for symlinks leading outside OUT."""


@dataclass
class LiveRun:
    """A run holding a slot."""

    name: str
    paths: RunPaths
    cfg: Any
    slot: int
    step: int
    run_id: str = ""
    """The id of this incarnation of the run folder (``control/run_id.txt``)."""
    published: int = -1
    """Newest broadcast step written."""
    submitted: int = -1
    """Newest broadcast step handed to the I/O thread (-1 after a failed write: retry)."""
    last_ckpt: int | None = None
    obs_norm: dict[str, Any] | None = None
    recent_return: float | None = None
    policy_lag: int | None = None
    nan_streak: int = 0
    nan_total: int = 0
    rejected: int = 0


@dataclass
class Parked:
    """A run without a slot: waiting, or settled (error / done / evicted)."""

    paths: RunPaths
    state: str
    fingerprint: tuple[int, int] | None
    cfg: Any = None
    message: str = ""


def _fingerprint(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


class SlotControl(Protocol):
    """What the registry changes in the trainer's slots (``replicas.SlotOps``)."""

    def fresh(self, slot: int, rank: int, alpha: float, seed: int) -> None: ...

    def load(self, slot: int, paths: RunPaths, step: int) -> tuple[dict[str, Any] | None, bool]: ...

    def clear(self, slot: int) -> None: ...


class RunHost(Protocol):
    """What the registry asks of the trainer loop."""

    def log(
        self, event: str, run: LiveRun | None = None, name: str | None = None, **kw: Any
    ) -> None: ...

    def publish(self, run: LiveRun, sync: bool = False) -> None: ...

    def checkpoint(self, run: LiveRun) -> None: ...

    def flush_io(self) -> None: ...


def same_incarnation(run: LiveRun) -> bool:
    """Whether the run's folder is still the one admitted (its run id unchanged)."""
    return read_run_id(run.paths) == run.run_id


class Registry:
    def __init__(
        self,
        out: OutPaths,
        info: TrainerInfo,
        num_slots: int,
        slots: SlotControl,
        host: RunHost,
    ) -> None:
        self.out, self.info = out, info
        self.slots, self.host = slots, host
        self.live: dict[str, LiveRun] = {}
        self.parked: dict[str, Parked] = {}  # insertion order = waiting order
        self.free = list(range(num_slots))
        self.warned: set[str] = set()
        self._inside: dict[str, float] = {}  # run -> when it was last found inside OUT

    # ------------------------------------------------------------------ scan
    def scan(self) -> None:
        seen: set[str] = set()
        for entry, path in self.out.run_candidates():
            name = entry[len(RUN_PREFIX) :]
            try:
                paths = RunPaths(self.out.root, check_run_name(name))
            except PathError as e:
                self._warn(entry, f"ignored: {e}")
                continue
            why = None
            if time.monotonic() - self._inside.get(name, -1e9) > ESCAPE_CHECK_S:
                why = paths.escapes()  # resolves symlinks: a few syscalls per folder
                if why is None:
                    self._inside[name] = time.monotonic()
            if why is not None:
                self._inside.pop(name, None)
                self._warn(entry, f"ignored: run folder escapes the outputs folder: {why}")
                if name in self.live:
                    self.release(self.live[name], "escapes the outputs folder", checkpoint=False)
                continue
            if not path.is_dir():
                continue
            seen.add(name)
            live = self.live.get(name)
            if live is not None and not same_incarnation(live):
                self.release(live, "run folder re-created: a new run", checkpoint=False)
                self.parked.pop(name, None)
                live = None
            if live is None:
                self._consider(name, paths)
            elif paths.evicted.exists():
                self.release(live, "control/evicted.txt appeared", checkpoint=True)
                self.parked[name] = Parked(paths, "evicted", None, message="evicted")
        for name in [n for n in self.live if n not in seen]:
            self.release(self.live[name], "run folder disappeared", checkpoint=False)
        for name in [n for n in self.parked if n not in seen]:
            del self.parked[name]
        self._inside = {n: t for n, t in self._inside.items() if n in seen}
        self._assign()

    def _warn(self, entry: str, message: str) -> None:
        if entry not in self.warned:
            self.warned.add(entry)
            self.host.log("warning", name=entry, message=message)

    def _consider(self, name: str, paths: RunPaths) -> None:
        old = self.parked.get(name)
        if paths.evicted.exists():
            if old is None or old.state != "evicted":
                self.parked[name] = Parked(paths, "evicted", None, message="evicted")
            return
        fp = _fingerprint(paths.orch_toml)
        if fp is None:  # pending: orch.toml is the start signal
            self.parked.pop(name, None)
            return
        if old is not None and old.fingerprint == fp:
            return
        try:
            cfg, _ = load_run_config(paths.orch_toml, self.info)
        except ConfigError as e:
            self._reject(name, paths, fp, str(e))
            return
        except Exception as e:  # unreadable file, missing task backend, ...: never fatal
            self._reject(name, paths, fp, f"{paths.orch_toml}: {type(e).__name__}: {e}")
            return
        if paths.config_error.exists():
            paths.config_error.unlink(missing_ok=True)
        newest = paths.newest_stable_checkpoint()
        if newest is not None and newest >= cfg.max_steps:
            self.parked[name] = Parked(paths, "done", fp, cfg, f"finished at step {newest}")
            return
        self.parked.pop(name, None)
        self.parked[name] = Parked(paths, "waiting", fp, cfg)
        self.host.log("waiting", name=name, message="config accepted; waiting for a slot")

    def _reject(self, name: str, paths: RunPaths, fp: tuple[int, int] | None, msg: str) -> None:
        with contextlib.suppress(OSError):
            write_text(paths.config_error, msg + "\n")
        self.parked[name] = Parked(paths, "error", fp, message=msg)
        self.host.log("config_error", name=name, message=msg)

    def _assign(self) -> None:
        for name in [n for n, p in self.parked.items() if p.state == "waiting"]:
            if not self.free:
                return
            parked = self.parked.pop(name)
            why = parked.paths.escapes()  # checked again right before any write into it
            if why is not None:
                self._inside.pop(name, None)
                self._warn(f"{RUN_PREFIX}{name}", f"ignored: run folder escapes OUT: {why}")
                continue
            slot = self.free.pop(0)
            try:
                self.live[name] = self._admit(name, parked, slot)
            except Exception as e:  # a run that cannot start must not stop the others
                self.slots.clear(slot)
                self.free.insert(0, slot)
                why = str(e) if isinstance(e, (CheckpointError, OSError)) else repr(e)
                self._reject(name, parked.paths, parked.fingerprint, why)

    # --------------------------------------------------------------- admission
    def _admit(self, name: str, parked: Parked, slot: int) -> LiveRun:
        host, paths, cfg = self.host, parked.paths, parked.cfg
        host.flush_io()  # no pending write or deletion may touch this run's new files
        for folder in (paths.rollouts, paths.broadcasts, paths.checkpoints):
            clean_stale(folder)  # staged / half-deleted folders of processes that died
        run_id = read_run_id(paths)
        if run_id is None:  # a new incarnation of the folder (a restart keeps its id)
            run_id = uuid.uuid4().hex
            write_text(paths.run_id, run_id + "\n")
        ckpts = [
            s for s in reversed(steps(paths.checkpoints)) if paths.checkpoint_stable(s).is_file()
        ]
        first_error: CheckpointError | None = None
        run = None
        for step in ckpts:
            try:
                obs_norm, had_opt = self.slots.load(slot, paths, step)
            except WorldSizeError:
                raise  # every checkpoint of the run is sharded alike: no fallback
            except CheckpointError as e:
                first_error = first_error or e
                host.log("checkpoint_unusable", name=name, message=str(e))
                continue
            run = LiveRun(name, paths, cfg, slot, step, run_id, last_ckpt=step)
            run.obs_norm = obs_norm if obs_norm is not None else self.info.base_obs_norm
            how = "optimiser state restored" if had_opt else "fresh optimiser (converted)"
            msg = f"slot {slot}, from checkpoint {step}, {how}"
            host.log("resumed", run, step=step, message=msg)
            break
        if run is None:
            if first_error is not None:
                raise first_error
            alpha = cfg.alpha if cfg.alpha is not None else 2.0 * cfg.rank
            self.slots.fresh(slot, cfg.rank, alpha, cfg.seed)
            run = LiveRun(name, paths, cfg, slot, 0, run_id, obs_norm=self.info.base_obs_norm)
            host.log("started", run, message=f"slot {slot}, fresh rank-{cfg.rank} adapter")
        for step in steps(paths.broadcasts):  # versions of a lost timeline (after a crash)
            if step > run.step:
                remove_dir(paths.broadcast(step))
        host.publish(run, sync=True)
        if run.published != run.step:
            raise OSError(f"{paths.broadcast(run.step)}: could not be written")
        return run

    # ----------------------------------------------------------------- release
    def release(self, run: LiveRun, why: str, checkpoint: bool) -> None:
        here = run.paths.root.is_dir() and same_incarnation(run)
        if checkpoint and here:
            self.host.checkpoint(run)
        self.slots.clear(run.slot)
        self.free = sorted([*self.free, run.slot])
        del self.live[run.name]
        self.host.log("released", run if here else None, name=run.name, message=why)

    def evict(self, run: LiveRun, why: str) -> None:
        with contextlib.suppress(OSError):
            write_text(run.paths.evicted, f"evicted by the trainer: {why}\n")
        self.release(run, f"evicted: {why}", checkpoint=True)
        self.parked[run.name] = Parked(run.paths, "evicted", None, message=why)

    def finish(self, run: LiveRun) -> None:
        self.release(run, f"done at step {run.step}", checkpoint=True)
        fp = _fingerprint(run.paths.orch_toml)
        self.parked[run.name] = Parked(run.paths, "done", fp, run.cfg, f"done at step {run.step}")

    # ------------------------------------------------------------------ status
    def status(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for name, p in self.parked.items():
            out[name] = {"state": p.state, "slot": None, "message": p.message}
        for name, r in self.live.items():
            out[name] = {
                "state": "training",
                "slot": r.slot,
                "step": r.step,
                "max_steps": r.cfg.max_steps,
                "recent_return": r.recent_return,
                "policy_lag": r.policy_lag,
                "nan_skips": r.nan_total,
                "rejected_rollouts": r.rejected,
            }
        return out
