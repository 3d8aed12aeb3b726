from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from svc_helpers import MakeTrainer

from proc_helpers import Procs
from skillbank.service.trainer.config import TrainerConfig
from skillbank.service.trainer.loop import Trainer


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


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """The test's outputs folder (created by the trainer)."""
    return tmp_path / "out"


@pytest.fixture
def make_trainer(out: Path, tmp_path: Path) -> Iterator[MakeTrainer]:
    """``make_trainer(**fields)``: an in-process trainer on ``out`` (fresh cartpole base,
    2 slots, checkpoint every 2 steps unless given); closed at the end of the test."""
    made: list[Trainer] = []

    def make(**kw: object) -> Trainer:
        fields = {"max_concurrent_runs": 2, "checkpoint_interval": 2, **kw}
        cfg = TrainerConfig(output_dir=str(out), base_task="cartpole", **fields)
        made.append(Trainer(cfg, tmp_path / "trainer.toml"))
        return made[-1]

    yield make
    for t in made:
        if t.locked:
            t.close()
