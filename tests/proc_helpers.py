"""Helpers of the tests that start real processes (service, LM service): processes started
and stopped by their pids, waiting on a condition, reading JSONL logs."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def wait_for(
    cond: Callable[[], Any],
    timeout: float,
    what: str,
    alive: list[subprocess.Popen] | None = None,
    every: float = 0.05,
) -> Any:
    """Poll ``cond`` until truthy; fail after ``timeout`` s or if a process in ``alive``
    exits."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        for p in alive or []:
            if p.poll() is not None:
                raise AssertionError(f"process {p.args} exited ({p.returncode}) while: {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for: {what}")
        time.sleep(every)


class Procs:
    """Processes started by a test; each is stopped by its own pid."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.started: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, *args: str) -> subprocess.Popen:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
        log = open(self.folder / f"{name}.log", "ab")  # noqa: SIM115  # owned by the process
        cmd = [sys.executable, "-m", "skillbank.cli.service", *args]
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        self.started.append((name, proc))
        return proc

    def log(self, name: str) -> str:
        path = self.folder / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    @staticmethod
    def stop(proc: subprocess.Popen, timeout: float = 20.0) -> int:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
        return proc.returncode

    @staticmethod
    def kill9(proc: subprocess.Popen) -> None:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()

    def stop_all(self) -> None:
        for _, proc in self.started:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            rows.append(json.loads(line))
    return rows
