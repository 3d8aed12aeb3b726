"""Supervised fine-tuning of a LoRA slot: masked cross-entropy on the answer tokens.

``sft_batch`` lays out ``bos + prompt + answer + eos`` right-padded with a mask on the
answer and eos; ``sft_loss`` is the mean negative log-likelihood of the masked tokens;
``train_sft`` runs Adam (``SlotAdam``, the optimiser of the RL paths) on one slot.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from skillbank.algos.ppo import clip_grad_norm_per_slot
from skillbank.algos.sft import sft_loss
from skillbank.errors import SkillbankError
from skillbank.lm.configs import SFTConfig
from skillbank.lm.domains import Example
from skillbank.lm.loop import run_steps, slot_optimizer
from skillbank.lm.model import SlotLM
from skillbank.lm.sample import encode_prompts, token_logprobs


class SFTDataError(SkillbankError, ValueError):
    """An SFT example without an answer, or longer than the model's context."""


def sft_batch(lm: SlotLM, examples: Sequence[Example]) -> tuple[Tensor, Tensor]:
    """(tokens [B, T], mask [B, T] True on answer + eos tokens), right-padded."""
    prompts = encode_prompts(lm, [ex.prompt for ex in examples])
    rows, masks = [], []
    for p, ex in zip(prompts, examples):
        if not ex.answer:
            raise SFTDataError(
                f"{ex.domain}: example {str(ex.prompt)[:40]!r} has no completion to learn"
            )
        a = lm.tok.answer_ids(ex.answer)
        if len(p) + len(a) > lm.max_len:
            raise SFTDataError(
                f"example {ex.prompt!r} -> {ex.answer!r} has {len(p) + len(a)} tokens; "
                f"the model's context is {lm.max_len}"
            )
        rows.append(p + a)
        masks.append([False] * len(p) + [True] * len(a))
    tokens = lm.tok.pad_right(rows)
    mask = torch.zeros_like(tokens, dtype=torch.bool)
    for i, m in enumerate(masks):
        mask[i, : len(m)] = torch.tensor(m)
    return tokens, mask


def answer_nll(lm: SlotLM, slot: int, examples: Sequence[Example], batch: int = 64) -> float:
    """Mean per-token NLL of the reference answers (+ eos) of ``examples`` under ``slot``
    (-1 = the base), in nats."""
    total, count = 0.0, 0.0
    with torch.no_grad():
        for i in range(0, len(examples), batch):
            tokens, mask = sft_batch(lm, examples[i : i + batch])
            logp = token_logprobs(lm.mm, tokens, torch.full((tokens.shape[0],), slot))
            total += float(-(logp * mask).sum())
            count += float(mask.sum())
    return total / max(count, 1.0)


def train_sft(
    lm: SlotLM,
    slot: int,
    domains: Sequence[Any],
    cfg: SFTConfig,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    optimizer: Any = None,
) -> list[dict[str, float]]:
    """Train slot ``slot`` of ``lm`` in place on reference answers of ``domains`` (a shared
    adapter if several: batches mix them round-robin). The slot must hold an adapter
    (``init_slot`` or a loaded one). ``optimizer``: instead of Adam on the slot, any object
    with ``zero_grad()``, ``skip_nonfinite()``, ``step()`` and a ``params`` list (clipped per
    slot; [] = no clip), e.g. to train full weights with ``slot=-1``.
    Returns per-step ``{"loss": ...}``."""
    opt = slot_optimizer(lm, slot, cfg.learning_rate, optimizer)
    rng = random.Random(cfg.seed)

    def one_step(step: int) -> dict[str, float]:
        exs = [domains[i % len(domains)].sample(rng) for i in range(cfg.batch_size)]
        tokens, mask = sft_batch(lm, exs)
        logp = token_logprobs(lm.mm, tokens, torch.full((tokens.shape[0],), slot))
        loss = sft_loss(logp, mask)  # algos.sft
        opt.zero_grad()
        loss.backward()
        opt.skip_nonfinite()
        clip_grad_norm_per_slot(opt.params, cfg.max_grad_norm)
        opt.step()
        return {"loss": float(loss.detach())}

    return run_steps(cfg.steps, one_step, on_step)


__all__ = ["SFTConfig", "SFTDataError", "answer_nll", "sft_batch", "sft_loss", "train_sft"]
