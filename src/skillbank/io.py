"""Atomic file writes and named-error reads, shared by every module that writes.

A file that others read appears by ``os.replace`` of a complete temp file in the same
folder; a folder appears by renaming a complete staged folder next to it. JSON is strict:
NaN and infinities are written as ``null``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from skillbank.errors import FormatError


def nan_to_none(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by None: strict JSON has no NaN."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [nan_to_none(v) for v in obj]
    return obj


def write_bytes(path: Path, data: bytes, sync: bool = False, make_parent: bool = False) -> None:
    """Write ``path`` through a temp file in the same folder, then ``os.replace``.

    The folder must exist unless ``make_parent`` (service code never creates a run folder
    as a side effect, so a run deleted while being written stays deleted)."""
    path = Path(path)
    if make_parent:
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
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


def write_text(path: Path, text: str, make_parent: bool = False) -> None:
    """Atomic UTF-8 text write (see :func:`write_bytes`)."""
    write_bytes(path, text.encode("utf-8"), make_parent=make_parent)


def dumps_json(data: Any, indent: int | None = 2, sort_keys: bool = False) -> str:
    """Strict JSON text (NaN -> null) with a trailing newline."""
    return json.dumps(nan_to_none(data), indent=indent, sort_keys=sort_keys) + "\n"


def write_json(
    path: Path, data: Any, indent: int | None = 2, sort_keys: bool = False, make_parent: bool = True
) -> None:
    """Atomic strict-JSON write (NaN -> null)."""
    write_text(Path(path), dumps_json(data, indent, sort_keys), make_parent=make_parent)


def read_json(path: Path, error: type[Exception] = FormatError) -> dict[str, Any]:
    """A JSON object from ``path``; ``error`` naming the file if it is missing or bad."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise error(f"{path}: file not found") from e
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise error(f"{path}: not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise error(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def stage_dir(final: Path) -> Path:
    """A fresh, empty temp folder next to ``final`` (same file system: rename is atomic)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    return tmp


def publish_files(out_dir: Path, files: dict[str, bytes]) -> None:
    """Write ``files`` into ``out_dir`` without ever exposing a half-written file.

    The files go to a staged folder next to ``out_dir`` first (each fsynced). A new
    ``out_dir`` then appears by one rename (all or nothing); into an existing one (which
    may hold other files) each file is renamed in turn, in the order given."""
    tmp = stage_dir(out_dir)
    try:
        for name, data in files.items():
            with open(tmp / name, "xb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        try:
            os.replace(tmp, out_dir)
        except OSError:
            if not out_dir.is_dir():
                raise
            for name in files:
                os.replace(tmp / name, out_dir / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def withdraw_dir(folder: Path, marker: str | None = None) -> None:
    """Delete a published folder so that no reader ever sees it half-deleted: remove its
    ``marker`` file (e.g. ``STABLE``) first, rename the folder out of the way, then delete."""
    folder = Path(folder)
    if not folder.exists():
        return
    if marker is not None:
        (folder / marker).unlink(missing_ok=True)
    trash = folder.parent / f".{folder.name}.trash-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        os.replace(folder, trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)


__all__ = [
    "dumps_json",
    "nan_to_none",
    "publish_files",
    "read_json",
    "stage_dir",
    "withdraw_dir",
    "write_bytes",
    "write_json",
    "write_text",
]
