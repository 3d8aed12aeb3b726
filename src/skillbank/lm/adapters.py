"""LM skills on disk: a PEFT LoRA adapter folder plus ``skill.json`` (domain, base
fingerprint, scores). The folder loads in ``peft`` on the transformers base
(``PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), folder)``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from skillbank.io import write_json
from skillbank.lm.model import SlotLM, adapter_extra_config, base_source, check_fingerprint
from skillbank.lora import peft_io

SKILL_JSON = "skill.json"


def init_slot(lm: SlotLM, slot: int, rank: int = 8, alpha: float | None = None, seed: int = 0):
    """A fresh LoRA adapter in ``slot`` (A random, B = 0: starts as the base)."""
    gen = torch.Generator().manual_seed(seed)
    lm.mm.reset_slot(slot, rank, alpha if alpha is not None else 2.0 * rank, generator=gen)


def save_lm_adapter(
    lm: SlotLM,
    slot: int,
    folder: str | os.PathLike,
    base_path: str,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write slot ``slot`` as a PEFT adapter (task_type CAUSAL_LM) + ``skill.json``.

    ``base_model_name_or_path`` is the folder the base was loaded from when known (so
    ``AutoPeftModelForCausalLM`` resolves it), else ``base_path``."""
    folder = Path(folder)
    name = base_source(lm.base) or base_path
    peft_io.save_adapter(lm.mm, slot, folder, name, extra_config=adapter_extra_config(lm.base))
    write_json(folder / SKILL_JSON, {**(meta or {}), "base": lm.fingerprint()})
    return folder


def read_skill_json(folder: str | os.PathLike) -> dict[str, Any]:
    path = Path(folder) / SKILL_JSON
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except ValueError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def load_lm_adapter(lm: SlotLM, slot: int, folder: str | os.PathLike) -> dict[str, Any]:
    """Load an adapter folder into ``slot`` after checking it was made for this base
    (``skill.json`` field ``base``; shapes are checked by ``peft_format``). Returns the
    skill.json content ({} if the folder has none, e.g. an adapter saved by peft)."""
    folder = Path(folder)
    meta = read_skill_json(folder)
    if isinstance(meta.get("base"), dict):
        check_fingerprint(folder / SKILL_JSON, meta["base"], lm.fingerprint())
    peft_io.load_adapter(lm.mm, slot, folder)
    return meta
