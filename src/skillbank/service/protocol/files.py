"""Service-specific file operations on top of :mod:`skillbank.io` (the one atomic writer).

Rules: a file others read appears by ``os.replace`` of a complete temp file; a folder
appears by renaming a complete staged folder; ``STABLE`` is created last and removed
first. Nothing here creates a run folder as a side effect (no ``mkdir(parents=True)``
inside a run), so a run deleted while it is being written stays deleted: the write fails
with an ``OSError``. Temp and trash folders carry the writer's host and pid, so the
trainer removes the ones of processes that died (``clean_stale``). Exclusive roles (one
trainer per outputs folder, one orchestrator per run) are OS locks (``hold_lock``).
"""

from __future__ import annotations

import fcntl
import json
import os
import queue
import re
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from skillbank.errors import SkillbankError
from skillbank.io import nan_to_none, withdraw_dir, write_bytes
from skillbank.service.protocol.paths import STABLE

STALE_AFTER_S = 3600.0
"""A temp folder of another host is removed only when older than this (its pid means
nothing here)."""


class LockedError(SkillbankError, RuntimeError):
    """Another process holds the role (trainer of an outputs folder, orchestrator of a run)."""


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line; the folder is created only if its parent exists, and a
    symlinked file is refused (``O_NOFOLLOW``): logs never leave the outputs folder."""
    if path.parent.is_symlink():
        raise OSError(f"{path.parent}: a symlink; the service writes no log through a link")
    path.parent.mkdir(exist_ok=True)
    line = json.dumps(nan_to_none({"time": round(time.time(), 3), **record})) + "\n"
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
    fd = os.open(path, flags, 0o644)
    try:
        os.write(fd, line.encode("utf-8"))
    finally:
        os.close(fd)


def mark_stable(folder: Path) -> None:
    """Create ``folder/STABLE`` (the folder must exist: never recreated)."""
    write_bytes(folder / STABLE, b"")


def ensure_subdir(path: Path) -> None:
    """Create ``path`` if missing, but never its parents (a vanished run stays vanished)."""
    path.mkdir(exist_ok=True)


def owner_tag() -> str:
    """``<host>.<pid>``: who wrote a temp folder (see ``clean_stale``)."""
    return f"{_host()}.{os.getpid()}"


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:20] or "host"


def staging_dir(staging_root: Path) -> Path:
    """A fresh temp folder under ``staging_root`` (created with its parents: it is not a
    run folder), named after this process so a restarted trainer can clean up."""
    staging_root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=staging_root, prefix=f"{os.getpid()}-"))


def alive(pid: int) -> bool:
    """Whether a process with this pid exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_staging(staging_root: Path) -> None:
    """Remove staged folders left by processes that no longer run."""
    if not staging_root.is_dir():
        return
    for entry in staging_root.iterdir():
        pid = entry.name.split("-", 1)[0]
        if pid.isdigit() and not alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)


_TEMP_RE = re.compile(r"\..+\.(?:tmp|trash)-(?:(?P<host>[A-Za-z0-9]+)\.)?(?P<pid>[0-9]+)-.*")


def clean_stale(folder: Path) -> list[str]:
    """Remove the temp folders (``.NAME.tmp-HOST.PID-*``, ``.NAME.trash-PID-*``) of
    ``folder`` whose writer died: same host and pid gone, or another host's and older than
    ``STALE_AFTER_S``. Returns the names removed."""
    try:
        names = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return []
    here, removed = _host(), []
    for name in names:
        match = _TEMP_RE.fullmatch(name)
        if match is None:
            continue
        host, pid = match.group("host"), int(match.group("pid"))
        path = folder / name
        if host is None or host == here:
            dead = not alive(pid)
        else:
            try:
                dead = time.time() - path.stat().st_mtime > STALE_AFTER_S
            except OSError:
                continue
        if dead:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(name)
    return removed


def remove_dir(folder: Path) -> None:
    """Withdraw a published folder: ``STABLE`` first, then renamed away, then deleted, so
    no reader ever sees it half-deleted (``skillbank.io.withdraw_dir``)."""
    withdraw_dir(folder, STABLE)


def publish_dir(staged: Path, final: Path) -> None:
    """Rename the complete folder ``staged`` to ``final`` (whose parent must exist).

    An existing ``final`` is withdrawn first (``STABLE`` removed, then the folder)."""
    if final.exists():
        remove_dir(final)
    os.replace(staged, final)


def hold_lock(path: Path, what: str, folder: bool = False) -> int:
    """Take an exclusive ``flock`` on ``path`` (a file created if missing, or with
    ``folder`` the directory itself) for the life of the returned descriptor; raises
    ``LockedError`` naming ``path`` and ``what`` if another process holds it. Locking the
    folder itself means no file can be deleted to get around the lock."""
    if folder:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    else:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise LockedError(f"{path}: {what}") from None
    return fd


class IOThread:
    """Runs file jobs (publishing broadcasts, pruning) in order on one background thread,
    so disk latency (fsync, unlink) overlaps the trainer's next update."""

    def __init__(self) -> None:
        self._jobs: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="skillbank-io", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                if job is None:
                    return
                job()
            except Exception as e:  # a job must never kill the thread
                print(f"[io] {type(e).__name__}: {e}", flush=True)
            finally:
                self._jobs.task_done()

    def submit(self, job: Callable[[], None]) -> None:
        self._jobs.put(job)

    def flush(self) -> None:
        """Wait until every submitted job is done."""
        self._jobs.join()

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join()
