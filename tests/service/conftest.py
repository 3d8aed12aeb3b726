from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from proc_helpers import Procs


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    """Start processes with ``procs.start(name, verb, ...)``; any still running at the end
    of the test is killed by its pid."""
    p = Procs(tmp_path)
    yield p
    p.stop_all()
