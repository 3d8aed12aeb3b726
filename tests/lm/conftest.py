"""Fixtures: a small random causal LM (fast; the packaged base is used by slow tests)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lm_helpers import TINY

from skillbank.lm.model import SlotLM, new_base, save_base
from skillbank.lm.tokenizer import CharTokenizer


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture
def tiny_base_dir(tmp_path: Path) -> Path:
    """A random tiny base saved with save_pretrained (+ tokenizer.json)."""
    tok = CharTokenizer()
    return save_base(new_base(TINY, tok, seed=0), tok, tmp_path / "tiny-base")


@pytest.fixture
def tiny_lm() -> SlotLM:
    """A random tiny base with 3 LoRA slots of capacity 8."""
    tok = CharTokenizer()
    return SlotLM(new_base(TINY, tok, seed=0), tok, num_slots=3, capacity=8)
