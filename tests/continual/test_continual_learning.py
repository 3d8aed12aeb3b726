"""Learning test (slow, about 5 minutes on 2 cores): the reduced cartpole sequence.

Tasks default -> reversed -> high-gravity -> reversed-heavy-pole (the documented order), 200k steps
each, one seed, no single-task references (F and P do not need them): the LoRA library
keeps every task (F <= 0.02, P >= 0.9) and fine-tuning one shared network forgets
(F >= 0.2).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from skillbank.continual.config import ContinualConfig
from skillbank.continual.experiment import run_continual

pytestmark = pytest.mark.slow


def test_lora_keeps_tasks_finetune_forgets(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    cfg = ContinualConfig(
        suite="cartpole-physics",
        tasks=[0, 3, 2, 6],
        strategies=["finetune", "lora"],
        steps_per_task=200_000,
        seeds=1,
        eval_every=50_000,
        references=False,
    )
    res = run_continual(cfg, tmp_path / "out", quiet=True)
    s = res["summary"]["strategies"]
    lora, ft = s["lora"], s["finetune"]
    detail = {k: (v["P"]["mean"], v["F"]["mean"], v["R_mean"]) for k, v in s.items()}
    assert lora["F"]["mean"] <= 0.02, detail
    assert lora["P"]["mean"] >= 0.9, detail
    assert ft["F"]["mean"] >= 0.2, detail
