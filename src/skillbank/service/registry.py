"""Which runs the trainer serves: discovery, validation, slots, resume, release.

A ``run_<name>`` folder is *pending* until ``control/orch.toml`` exists, then validated:
rejected (``control/config_error.txt``, naming the field; re-checked when orch.toml
changes), *waiting* for a slot (first come, first served), *live* (a slot, resumed from the
newest loadable STABLE checkpoint or started fresh), then *done* (max_steps reached) or
*evicted* (``control/evicted.txt``). A live run is released when its folder disappears.
Folders whose name is not a valid run name or that resolve outside the outputs folder
(symlinks) are ignored with one warning.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skillbank.config import ConfigError
from skillbank.service.checkpoint import CheckpointError, WorldSizeError
from skillbank.service.config import load_run_config
from skillbank.service.files import remove_dir, write_text_atomic
from skillbank.service.paths import RUN_PREFIX, PathError, RunPaths, check_run_name, steps

ESCAPE_CHECK_S = 1.0
"""How often a known run folder is checked again for symlinks leading outside OUT."""

if TYPE_CHECKING:
    from skillbank.service.trainer import Trainer


@dataclass
class LiveRun:
    """A run holding a slot."""

    name: str
    paths: RunPaths
    cfg: Any
    slot: int
    step: int
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


class Registry:
    def __init__(self, trainer: Trainer) -> None:
        self.t = trainer
        self.live: dict[str, LiveRun] = {}
        self.parked: dict[str, Parked] = {}  # insertion order = waiting order
        self.free = list(range(trainer.cfg.max_concurrent_runs))
        self.warned: set[str] = set()
        self._inside: dict[str, float] = {}  # run -> when it was last found inside OUT

    # ------------------------------------------------------------------ scan
    def scan(self) -> None:
        seen: set[str] = set()
        for entry, path in self.t.out.run_candidates():
            name = entry[len(RUN_PREFIX) :]
            try:
                paths = RunPaths(self.t.out.root, check_run_name(name))
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
            self.t.log("warning", name=entry, message=message)

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
            cfg, _ = load_run_config(paths.orch_toml, self.t.info)
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
        self.t.log("waiting", name=name, message="config accepted; waiting for a slot")

    def _reject(self, name: str, paths: RunPaths, fp: tuple[int, int] | None, msg: str) -> None:
        with contextlib.suppress(OSError):
            write_text_atomic(paths.config_error, msg + "\n")
        self.parked[name] = Parked(paths, "error", fp, message=msg)
        self.t.log("config_error", name=name, message=msg)

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
                self.t.ops.clear(slot)
                self.free.insert(0, slot)
                why = str(e) if isinstance(e, (CheckpointError, OSError)) else repr(e)
                self._reject(name, parked.paths, parked.fingerprint, why)

    # --------------------------------------------------------------- admission
    def _admit(self, name: str, parked: Parked, slot: int) -> LiveRun:
        t, paths, cfg = self.t, parked.paths, parked.cfg
        t.io.flush()  # no pending write or deletion may touch this run's new files
        ckpts = [
            s for s in reversed(steps(paths.checkpoints)) if paths.checkpoint_stable(s).is_file()
        ]
        first_error: CheckpointError | None = None
        run = None
        for step in ckpts:
            try:
                obs_norm, had_opt = t.ops.load(slot, paths, step)
            except WorldSizeError:
                raise  # every checkpoint of the run is sharded alike: no fallback
            except CheckpointError as e:
                first_error = first_error or e
                t.log("checkpoint_unusable", name=name, message=str(e))
                continue
            run = LiveRun(name, paths, cfg, slot, step, last_ckpt=step)
            run.obs_norm = obs_norm if obs_norm is not None else t.info.base_obs_norm
            how = "optimiser state restored" if had_opt else "fresh optimiser (converted)"
            t.log("resumed", run, step=step, message=f"slot {slot}, from checkpoint {step}, {how}")
            break
        if run is None:
            if first_error is not None:
                raise first_error
            alpha = cfg.alpha if cfg.alpha is not None else 2.0 * cfg.rank
            t.ops.fresh(slot, cfg.rank, alpha, cfg.seed)
            run = LiveRun(name, paths, cfg, slot, 0, obs_norm=t.info.base_obs_norm)
            t.log("started", run, message=f"slot {slot}, fresh rank-{cfg.rank} adapter")
        for step in steps(paths.broadcasts):  # versions of a lost timeline (after a crash)
            if step > run.step:
                remove_dir(paths.broadcast(step))
        t.publish(run, sync=True)
        if run.published != run.step:
            raise OSError(f"{paths.broadcast(run.step)}: could not be written")
        return run

    # ----------------------------------------------------------------- release
    def release(self, run: LiveRun, why: str, checkpoint: bool) -> None:
        if checkpoint and run.paths.root.is_dir():
            self.t.checkpoint(run)
        self.t.ops.clear(run.slot)
        self.free = sorted([*self.free, run.slot])
        del self.live[run.name]
        self.t.log("released", run if run.paths.root.is_dir() else None, name=run.name, message=why)

    def evict(self, run: LiveRun, why: str) -> None:
        with contextlib.suppress(OSError):
            write_text_atomic(run.paths.evicted, f"evicted by the trainer: {why}\n")
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
