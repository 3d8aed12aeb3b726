"""Scores of skills on domains' test sets, and LM libraries (a ``PolicyLibrary`` whose base
has kind ``causal_lm``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from skillbank.library.core import PolicyLibrary
from skillbank.lm.domains import Domain, Example
from skillbank.lm.model import LM_TARGETS, SlotLM, base_kwargs
from skillbank.lm.sample import generate
from skillbank.lm.tokenizer import CharTokenizer

EVAL_BATCH = 128


def score(
    lm: SlotLM,
    slot: int,
    domain: Domain,
    n: int = 200,
    split: str = "test",
    examples: Sequence[Example] | None = None,
    max_new_tokens: int = 16,
) -> float:
    """Mean reward of greedy completions by ``slot`` (-1 = base) on ``n`` examples of the
    domain's ``split`` (or on ``examples``)."""
    exs = list(examples) if examples is not None else domain.examples(n, split)
    total = 0.0
    for i in range(0, len(exs), EVAL_BATCH):
        part = exs[i : i + EVAL_BATCH]
        s = generate(lm, [e.prompt for e in part], slot, max_new_tokens, greedy=True)
        total += sum(domain.reward(c, e.answer) for c, e in zip(s.completions, part))
    return total / max(len(exs), 1)


def score_mixed(
    lm: SlotLM, slots: Sequence[int], domain: Domain, n: int = 200, max_new_tokens: int = 16
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
    return [
        sum(domain.reward(out[k * n + j], exs[j].answer) for j in range(n)) / n
        for k in range(len(slots))
    ]


def create_lm_library(
    path: str | os.PathLike,
    base: torch.nn.Module,
    tok: CharTokenizer,
    capacity: int = 16,
    overwrite: bool = False,
) -> PolicyLibrary:
    """A new library whose base is the causal LM ``base``."""
    config = {"kind": "causal_lm", "kwargs": base_kwargs(base, tok), "target_modules": LM_TARGETS}
    return PolicyLibrary.create(Path(path), base, config, capacity=capacity, overwrite=overwrite)


def library_lm(lib: PolicyLibrary) -> SlotLM:
    """The library's multi-slot model as a ``SlotLM`` (skill k in slot ``lib.slot_of(k)``)."""
    kind = lib.base_config.get("kind")
    if kind != "causal_lm":
        raise ValueError(
            f"{lib.path / 'base' / 'config.json'}: field 'kind' is {kind!r}, "
            "not an LM library ('causal_lm')"
        )
    tok = CharTokenizer(str(lib.base_config["kwargs"]["alphabet"]))
    return SlotLM(lib.model, tok)
