"""Small, careful file operations shared by the trainer, orchestrators and converter.

Rules: a file others read appears by ``os.replace`` of a complete temp file; a folder
appears by renaming a complete staged folder; ``STABLE`` is created last. Nothing here
creates a run folder as a side effect (no ``mkdir(parents=True)`` inside a run), so a run
deleted while it is being written stays deleted: the write fails with an ``OSError``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from skillbank.service.paths import STABLE


def write_bytes_atomic(path: Path, data: bytes, sync: bool = False) -> None:
    """Write ``path`` through a temp file in the same folder (which must exist)."""
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _clean(value: Any) -> Any:
    """JSON-safe copy: NaN and infinities become None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def write_json_atomic(path: Path, data: Any) -> None:
    text = json.dumps(_clean(data), indent=1, sort_keys=True) + "\n"
    write_bytes_atomic(path, text.encode("utf-8"))


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line; the folder is created only if its parent exists."""
    path.parent.mkdir(exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(_clean({"time": round(time.time(), 3), **record})) + "\n")


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; ``ValueError`` naming the file otherwise."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def mark_stable(folder: Path) -> None:
    """Create ``folder/STABLE`` (the folder must exist: never recreated)."""
    write_bytes_atomic(folder / STABLE, b"")


def ensure_subdir(path: Path) -> None:
    """Create ``path`` if missing, but never its parents (a vanished run stays vanished)."""
    path.mkdir(exist_ok=True)


def staging_dir(staging_root: Path) -> Path:
    """A fresh temp folder under ``staging_root`` (created with its parents: it is not a
    run folder), named after this process so a restarted trainer can clean up."""
    staging_root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=staging_root, prefix=f"{os.getpid()}-"))


def clean_staging(staging_root: Path) -> None:
    """Remove staged folders left by processes that no longer run."""
    if not staging_root.is_dir():
        return
    for entry in staging_root.iterdir():
        pid = entry.name.split("-", 1)[0]
        if pid.isdigit() and not alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)


def alive(pid: int) -> bool:
    """Whether a process with this pid exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def publish_dir(staged: Path, final: Path) -> None:
    """Rename the complete folder ``staged`` to ``final`` (whose parent must exist).

    An existing ``final`` is withdrawn first (``STABLE`` removed, then the folder)."""
    if final.exists():
        remove_dir(final)
    os.replace(staged, final)


def remove_dir(folder: Path) -> None:
    """Delete a published folder: ``STABLE`` first, so no reader trusts a partial one."""
    stable = folder / STABLE
    if stable.exists():
        stable.unlink(missing_ok=True)
    shutil.rmtree(folder, ignore_errors=True)


class IOThread:
    """Runs file jobs (publishing broadcasts, pruning) in order on one background thread,
    so disk latency (fsync, unlink) overlaps the trainer's next update."""

    def __init__(self) -> None:
        import queue
        import threading

        self._jobs: queue.Queue = queue.Queue()
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

    def submit(self, job: Any) -> None:
        self._jobs.put(job)

    def flush(self) -> None:
        """Wait until every submitted job is done."""
        self._jobs.join()

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join()
