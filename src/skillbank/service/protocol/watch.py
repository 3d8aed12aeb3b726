"""The orchestrator's side of the protocol, for every run kind: wait for a broadcast
within the async bound, notice that the run ended from outside (folder deleted, evicted,
rejected, re-created), and where to continue after a restart. Torch-free."""

from __future__ import annotations

import time
from pathlib import Path

from skillbank.service.protocol.paths import RunPaths, steps

POLL_S = 0.005


class Stopped(Exception):
    """The run ended from outside (folder deleted, evicted, rejected)."""

    def __init__(self, why: str, rejected: bool = False) -> None:
        super().__init__(why)
        self.rejected = rejected


def _text(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return ""


def check_running(run: RunPaths, run_id: str | None = None) -> None:
    """Raise ``Stopped`` if the run ended from outside: its folder disappeared, it was
    evicted or rejected, or (``run_id`` given) its folder is another incarnation now."""
    if not run.root.is_dir():
        raise Stopped("run folder disappeared")
    if run.evicted.exists():
        raise Stopped(f"evicted: {_text(run.evicted)}")
    if run.config_error.exists():
        raise Stopped(f"rejected by the trainer: {_text(run.config_error)}", rejected=True)
    if run_id is not None and run.run_id.exists() and _text(run.run_id) != run_id:
        raise Stopped("run folder re-created (a new run id): this orchestrator served the old one")


def read_run_id(run: RunPaths) -> str | None:
    """The id the trainer gave this incarnation of the run folder at admission, or None."""
    return _text(run.run_id) or None


def wait_for_broadcast(
    run: RunPaths, min_step: int, poll_s: float = POLL_S, run_id: str | None = None
) -> int:
    """Block until a STABLE broadcast of step >= ``min_step`` exists; returns the newest.

    Each poll is one ``stat`` of ``step_<min_step>/STABLE``; the folder is listed (in case
    that step was pruned already) and the run's control files checked every 0.2 s (with
    ``run_id``: also that the folder is still the incarnation this id names)."""
    target = run.broadcast_stable(min_step)
    last_check = time.monotonic()
    while True:
        now = time.monotonic()
        slow = now - last_check > 0.2
        if target.is_file() or slow:
            newest = run.newest_stable_broadcast()
            if newest is not None and newest >= min_step:
                return newest
        if slow:
            last_check = now
            check_running(run, run_id)
        time.sleep(poll_s)


def first_step(run: RunPaths, newest_broadcast: int) -> int:
    rollouts = steps(run.rollouts)
    return max(newest_broadcast, rollouts[-1] + 1 if rollouts else 0)
