"""The multi-run trainer: one base in memory, one adapter slot per live run.

Each ``tick``: scan the outputs folder (admit, release, reject runs; see ``registry``),
read the rollouts that are ready (each run kind's registered reader), run ONE batched
update over all of them (one per kind present: ``replicas.SlotOps.update``), then per
run: advance its step, publish ``broadcasts/step_<n>``, checkpoint every
``checkpoint_interval`` steps, and prune old files. The trainer never starts or stops
orchestrators; it only reads and writes files of the protocol (``protocol.paths``).
One trainer per outputs folder: it holds an ``flock`` on the folder itself.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from skillbank.algos.slot_adam import SlotAdam
from skillbank.io import write_json
from skillbank.service.kinds import KINDS
from skillbank.service.kinds.batch import RunBatch, UpdateContext
from skillbank.service.protocol.base import base_name, slot_model
from skillbank.service.protocol.checkpoint import prune, write_broadcast
from skillbank.service.protocol.files import (
    IOThread,
    LockedError,
    append_jsonl,
    clean_staging,
    clean_stale,
    hold_lock,
    remove_dir,
)
from skillbank.service.protocol.info import TrainerInfo, write_trainer_info
from skillbank.service.protocol.paths import OutPaths, steps
from skillbank.service.protocol.rollout_io import RolloutError
from skillbank.service.trainer.base import resolve_base
from skillbank.service.trainer.config import TrainerConfig
from skillbank.service.trainer.dist import Dist
from skillbank.service.trainer.registry import LiveRun, Registry, same_incarnation
from skillbank.service.trainer.replicas import SlotOps, share_base


class TrainerLockedError(LockedError):
    """Another trainer holds the outputs folder."""


class Trainer:
    """Serves every run of one outputs folder (see the module docstring)."""

    def __init__(self, cfg: TrainerConfig, config_path: Path, dist: Dist | None = None) -> None:
        self.cfg = cfg.check(config_path)
        self.dist = dist
        """None with one process; else this rank (rank 0 drives, the others ``follow``)."""
        # absolute and without "..": the paths it announces must work on other machines
        self.out = OutPaths(Path(os.path.abspath(cfg.output_dir)))
        torch.set_num_threads(cfg.threads)

        self._lock: int | None = None

        def own_base() -> tuple[nn.Module, TrainerInfo]:
            self.out.root.mkdir(parents=True, exist_ok=True)
            self._lock = self._take_lock()
            clean_staging(self.out.staging)
            return resolve_base(cfg, self.out, config_path)

        base, self.info = own_base() if dist is None else share_base(dist, own_base)
        self.model = slot_model(base, self.info, cfg.max_concurrent_runs)
        self.ppo = cfg.ppo_config(config_path)
        self.opt = SlotAdam(
            self.model.slot_parameters(), cfg.max_concurrent_runs, eps=self.ppo.adam_eps
        )
        self.gen = torch.Generator().manual_seed(cfg.seed)
        action_kind = str(self.info.base_kwargs.get("action_kind"))
        self.base_name = base_name(self.info)
        ctx = UpdateContext(self.model, self.opt, self.ppo, action_kind, self.gen, dist)
        delay = cfg.debug_checkpoint_delay_s
        self.ops = SlotOps(ctx, self.out.staging, self.base_name, dist, delay)
        if dist is not None and not dist.is_driver:
            return  # a follower: no files, no registry (see replicas.follow)
        self.registry = Registry(self.out, self.info, cfg.max_concurrent_runs, self.ops, self)
        self.io = IOThread()
        self._status_due = True
        self._status_time = 0.0
        write_trainer_info(self.out.trainer_json, self.info)
        ranks = "" if dist is None else f", {dist.world_size} ranks"
        slots = f"{cfg.max_concurrent_runs} slots{ranks}"
        self.log("started", message=f"base {self.info.base_dir}, {slots}")

    def _take_lock(self) -> int:
        """An ``flock`` on the outputs folder itself, for the trainer's life: no file can
        be deleted to let a second trainer in."""
        try:
            return hold_lock(self.out.root, "another trainer serves this outputs folder", True)
        except LockedError as e:
            raise TrainerLockedError(str(e)) from None

    @property
    def locked(self) -> bool:
        """Whether this trainer holds the outputs folder."""
        return self._lock is not None

    def close(self) -> None:
        """Finish pending writes and release the outputs folder (the lock)."""
        self.io.flush()
        self.io.close()
        self.write_status(force=True)
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def flush_io(self) -> None:
        """Wait for every pending background write."""
        self.io.flush()

    # ------------------------------------------------------------------ logs
    def log(
        self, event: str, run: LiveRun | None = None, name: str | None = None, **kw: Any
    ) -> None:
        name = run.name if run is not None else name
        record = {"event": event, **({"run": name} if name else {}), **kw}
        msg = kw.get("message", "")
        print(f"[trainer] {event}{f' {name}' if name else ''}: {msg}", file=sys.stderr, flush=True)
        try:
            append_jsonl(self.out.trainer_log, record)
            if run is not None:
                append_jsonl(run.paths.trainer_log, record)
        except OSError:
            pass  # a run folder deleted meanwhile
        self._status_due = True

    # ------------------------------------------------------------------ loop
    def serve(self, should_stop: Callable[[], bool]) -> None:
        try:
            while not should_stop():
                if not self.tick():
                    self.ops.heartbeat()
                    time.sleep(self.cfg.poll_interval_s)
        finally:
            self.ops.stop()
        self.close()

    def tick(self) -> bool:
        """One scan and at most one update; returns whether any run made progress."""
        self.registry.scan()
        ready = self._ready()
        if ready and self.cfg.batch_window_s > 0 and len(ready) < len(self.registry.live):
            deadline = time.monotonic() + self.cfg.batch_window_s
            while time.monotonic() < deadline and len(ready) < len(self.registry.live):
                time.sleep(0.002)
                ready = self._ready()
        if ready:
            self._train(ready)
        for run in list(self.registry.live.values()):
            if run.submitted < run.step:
                self.publish(run)
        self.write_status()
        return bool(ready)

    def _ready(self) -> list[LiveRun]:
        return [r for r in self.registry.live.values() if r.paths.rollout(r.step).is_dir()]

    def _lr(self, run: LiveRun) -> float:
        lr = run.cfg.learning_rate
        if run.cfg.anneal_lr:
            lr *= max(0.0, 1.0 - run.step / run.cfg.max_steps)
        return lr

    def _train(self, ready: list[LiveRun]) -> None:
        batches: list[tuple[LiveRun, Any]] = []
        for run in ready:
            try:
                read = KINDS.get(run.cfg.kind).part("read")
                ro = read(run.paths, run.step, run.cfg, self.info)
            except RolloutError as e:
                run.rejected += 1
                self.log("rollout_rejected", run, step=run.step, message=str(e))
                try:
                    os.replace(run.paths.rollout(run.step), run.paths.rejected_rollout(run.step))
                except OSError:
                    remove_dir(run.paths.rollout(run.step))
                self._advance(run, {})
                continue
            batches.append((run, ro))
        if not batches:
            return
        parts = [RunBatch(r.slot, self._lr(r), ro.tensors, r.cfg.kind) for r, ro in batches]
        result = self.ops.update(parts)
        stats = {**result.stats, "runs_in_update": float(len(batches))}
        for run, ro in batches:
            run.obs_norm = ro.obs_norm if ro.obs_norm is not None else run.obs_norm
            run.recent_return = ro.recent_return
            run.policy_lag = run.step - ro.policy_step
            why = result.skipped.get(run.slot)
            if why is not None:
                run.nan_streak += 1
                run.nan_total += 1
                self.log("update_skipped", run, step=run.step, message=why)
                if run.nan_streak >= self.cfg.max_nan_updates:
                    self.registry.evict(run, f"{run.nan_streak} consecutive skipped updates: {why}")
                    continue
            else:
                run.nan_streak = 0
            self._advance(run, stats)

    def _advance(self, run: LiveRun, stats: dict[str, float]) -> None:
        """The run's rollout at ``run.step`` is consumed: publish policy version step+1."""
        lr = self._lr(run)
        run.step += 1
        record = {"step": run.step, "recent_return": run.recent_return, "lr": lr, **stats}
        with contextlib.suppress(OSError):
            append_jsonl(run.paths.trainer_log, {"event": "step", **record})
        self._status_due = True
        self.publish(run)
        done = run.step >= run.cfg.max_steps
        if done or run.step % self.cfg.checkpoint_interval == 0:
            self.checkpoint(run)
        if done:
            self.registry.finish(run)

    # --------------------------------------------------------------- writing
    def publish(self, run: LiveRun, sync: bool = False) -> None:
        """Write ``broadcasts/step_<run.step>`` and prune old broadcasts, on the I/O thread
        unless ``sync``. A failed write is retried by the next tick."""
        step, state, norm = run.step, self.model.slot_state(run.slot), run.obs_norm
        run.submitted = step
        paths, keep = run.paths, self.cfg.keep_broadcasts

        def job() -> None:
            if not same_incarnation(run):
                return  # the folder was deleted (and maybe re-created): not this run's
            try:
                write_broadcast(paths, step, state, norm, self.out.staging, self.base_name)
            except OSError as e:
                if paths.root.is_dir():
                    self.log("write_failed", run, message=f"broadcast {step}: {e}")
                    run.submitted = -1
                return
            run.published = max(run.published, step)
            prune(steps(paths.broadcasts), keep, lambda s: remove_dir(paths.broadcast(s)))

        if sync:
            job()
        else:
            self.io.submit(job)

    def checkpoint(self, run: LiveRun) -> None:
        """Write ``checkpoints/step_<run.step>``; prune old checkpoints and consumed rollouts."""
        if run.last_ckpt == run.step or not same_incarnation(run):
            return
        try:
            self.ops.checkpoint(run.paths, run.slot, run.step, run.obs_norm)
        except OSError as e:
            if run.paths.root.is_dir():
                self.log("write_failed", run, message=f"checkpoint {run.step}: {e}")
            return
        run.last_ckpt = run.step
        self.log("checkpoint", run, step=run.step, message=f"checkpoint step {run.step}")
        self.io.submit(lambda: self.prune_run(run))

    def prune_run(self, run: LiveRun) -> None:
        """Delete superseded checkpoints and the rollouts a stable checkpoint covers (each
        withdrawn: renamed away, then deleted), and temp folders of dead writers."""
        paths = run.paths
        if not same_incarnation(run):
            return
        for folder in (paths.rollouts, paths.broadcasts, paths.checkpoints):
            clean_stale(folder)
        stable = paths.newest_stable_checkpoint()
        if stable is None:
            return
        kept = [s for s in steps(paths.checkpoints) if paths.checkpoint_stable(s).is_file()]
        for step in steps(paths.checkpoints):
            if step < stable and step not in kept:  # incomplete and superseded
                remove_dir(paths.checkpoint(step))
        prune(kept, self.cfg.keep_checkpoints, lambda s: remove_dir(paths.checkpoint(s)))
        for step in steps(paths.rollouts):
            if step < stable:
                remove_dir(paths.rollout(step))

    def write_status(self, force: bool = False) -> None:
        now = time.time()
        age = now - self._status_time
        if not force and (age < 0.2 or (not self._status_due and age < 2.0)):
            return  # on change (at most 5/s), else a heartbeat every 2 s
        status: dict[str, Any] = {"pid": os.getpid(), "updated": now}
        status.update(slots=self.cfg.max_concurrent_runs, runs=self.registry.status())
        status["world_size"] = 1 if self.dist is None else self.dist.world_size
        try:
            write_json(self.out.status_json, status, indent=1, sort_keys=True, make_parent=False)
        except OSError:
            return
        self._status_due, self._status_time = False, now
