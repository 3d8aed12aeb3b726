"""Scores of skills on domains' test sets, and LM libraries (a ``PolicyLibrary`` whose base
has kind ``causal_lm``)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from skillbank.io import stage_dir
from skillbank.library.core import PolicyLibrary
from skillbank.lm.domains import Example
from skillbank.lm.grpo import task_rewards
from skillbank.lm.hf import resolve_targets
from skillbank.lm.model import SlotLM, base_kwargs, base_source
from skillbank.lm.sample import generate
from skillbank.lm.tokenizer import CharTokenizer, LMTokenizer, TokenizerError, load_tokenizer

EVAL_BATCH = 128


def score(
    lm: SlotLM,
    slot: int,
    domain: Any,
    n: int = 200,
    split: str = "test",
    examples: Sequence[Example] | None = None,
    max_new_tokens: int = 16,
    stop: Sequence[str] = (),
) -> float:
    """Mean reward of greedy completions by ``slot`` (-1 = base) on ``n`` examples of the
    domain's ``split`` (or on ``examples``)."""
    exs = list(examples) if examples is not None else domain.examples(n, split)
    total = 0.0
    for i in range(0, len(exs), EVAL_BATCH):
        part = exs[i : i + EVAL_BATCH]
        s = generate(lm, [e.prompt for e in part], slot, max_new_tokens, greedy=True, stop=stop)
        total += float(task_rewards(domain, s.completions, part).sum())
    return total / max(len(exs), 1)


def score_mixed(
    lm: SlotLM, slots: Sequence[int], domain: Any, n: int = 200, max_new_tokens: int = 16
) -> list[float]:
    """Scores of several slots on one domain's test set, all in ONE mixed-slot batch."""
    exs = domain.examples(n, "test")
    prompts = [e.prompt for _ in slots for e in exs]
    ids = torch.tensor([s for s in slots for _ in exs])
    out = []
    for i in range(0, len(prompts), EVAL_BATCH * 4):
        s = generate(
            lm,
            prompts[i : i + EVAL_BATCH * 4],
            ids[i : i + EVAL_BATCH * 4],
            max_new_tokens,
            greedy=True,
        )
        out.extend(s.completions)
    n = len(exs)
    rewards = task_rewards(domain, out, [e for _ in slots for e in exs]).view(len(slots), n)
    return [float(r) for r in rewards.mean(1)]


TOKENIZER_DIR = "tokenizer"
"""``LIB/base/tokenizer/``: the base's Hugging Face tokenizer files."""


def create_lm_library(
    path: str | os.PathLike,
    base: torch.nn.Module,
    tok: LMTokenizer,
    capacity: int = 16,
    overwrite: bool = False,
    targets: str | Sequence[str] | None = None,
) -> PolicyLibrary:
    """A new library whose base is the causal LM ``base`` (LoRA on ``targets``: names,
    ``"all-linear"`` or None = the architecture's default); the tokenizer is kept in
    ``LIB/base/tokenizer/``."""
    config = {
        "kind": "causal_lm",
        "kwargs": base_kwargs(base, tok),
        "target_modules": resolve_targets(base, targets, "create_lm_library"),
        "source": base_source(base),
        "eos_ids": tok.eos_ids,
    }
    lib = PolicyLibrary.create(Path(path), base, config, capacity=capacity, overwrite=overwrite)
    final = lib.path / "base" / TOKENIZER_DIR
    stage = stage_dir(final)
    tok.save(stage)
    if final.exists():
        shutil.rmtree(final)
    os.replace(stage, final)
    return lib


def base_tokenizer(base_config: dict[str, Any], base_dir: Path) -> LMTokenizer:
    """The tokenizer of a stored ``causal_lm`` base (``base_dir/config.json`` =
    ``base_config``): ``base_dir/tokenizer/``, else the char alphabet of its kwargs, else
    its ``source`` folder. What a library, or the service's ``OUT/base``, is read with."""
    folder = base_dir / TOKENIZER_DIR
    eos = [int(i) for i in base_config.get("eos_ids") or []]
    if folder.is_dir():
        return load_tokenizer(folder, eos)
    alphabet = base_config.get("kwargs", {}).get("alphabet")
    if isinstance(alphabet, str):
        return CharTokenizer(alphabet)
    if base_config.get("source"):
        return load_tokenizer(Path(str(base_config["source"])), eos)
    raise TokenizerError(f"{folder}: the stored base has no tokenizer")


def library_tokenizer(lib: PolicyLibrary) -> LMTokenizer:
    """The tokenizer of an LM library (``base_tokenizer`` of ``LIB/base``)."""
    return base_tokenizer(lib.base_config, lib.path / "base")


def library_lm(lib: PolicyLibrary) -> SlotLM:
    """The library's multi-slot model as a ``SlotLM`` (skill k in slot ``lib.slot_of(k)``)."""
    kind = lib.base_config.get("kind")
    if kind != "causal_lm":
        raise ValueError(
            f"{lib.path / 'base' / 'config.json'}: field 'kind' is {kind!r}, "
            "not an LM library ('causal_lm')"
        )
    lm = SlotLM(lib.model, library_tokenizer(lib))
    set_source(lm.base, lib.base_config.get("source"))
    return lm


def set_source(model: torch.nn.Module, source: Any) -> None:
    """Record the HF folder a (rebuilt) base came from (adapters name it)."""
    if source and Path(str(source)).is_dir():
        model.config._name_or_path = str(source)  # type: ignore[union-attr]
