"""Batched sampling from a ``SlotLM``: every row through its own slot, with a KV cache.

Prompts are left-padded (attention mask + position ids), so rows of different lengths
and different skills decode together; the slot ids ``[batch]`` broadcast over the
sequence in the prefill and over the single new position of each decode step.
The result is laid out right-padded for training: ``tokens [B, T]``, ``mask [B, T]``
(True on generated tokens, eos included) and ``logp [B, T]`` (the sampling policy's
log-probability of each generated token, 0 elsewhere).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from skillbank.errors import SkillbankError
from skillbank.lm.model import SlotLM
from skillbank.lm.tokenizer import EOS, PAD
from skillbank.lora.layer import MultiLoraModel


class PromptTooLongError(SkillbankError, ValueError):
    """A prompt that leaves no room for an answer in the model's context."""


@dataclass
class Samples:
    tokens: Tensor  # [B, T] int64, prompt + completion, right-padded
    mask: Tensor  # [B, T] bool, generated tokens
    logp: Tensor  # [B, T] float32, sampling log-prob of generated tokens
    completions: list[str]


def encode_prompts(lm: SlotLM, prompts: Sequence[str], min_answer: int = 1) -> list[list[int]]:
    """Token ids of each prompt; PromptTooLongError if one cannot fit an answer."""
    rows = []
    for p in prompts:
        ids = lm.tok.prompt_ids(p)
        if len(ids) + min_answer > lm.max_len:
            raise PromptTooLongError(
                f"prompt {p[:40]!r} has {len(ids)} tokens; the model's context is "
                f"{lm.max_len} tokens (max_position_embeddings), leaving no room for "
                f"an answer of {min_answer} token(s)"
            )
        rows.append(ids)
    return rows


def as_slot_ids(slots: int | Sequence[int] | Tensor, n: int) -> Tensor:
    ids = torch.as_tensor(slots, dtype=torch.long)
    return ids.expand(n).clone() if ids.dim() == 0 else ids


@torch.no_grad()
def generate(
    lm: SlotLM,
    prompts: Sequence[str],
    slots: int | Sequence[int] | Tensor,
    max_new_tokens: int = 16,
    greedy: bool = False,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> Samples:
    """Sample one completion per prompt; row i uses slot ``slots[i]`` (-1 = base)."""
    rows = encode_prompts(lm, prompts)
    b = len(rows)
    ids = as_slot_ids(slots, b)
    width = max(len(r) for r in rows)
    max_new = max(1, min(max_new_tokens, lm.max_len - width))
    inp = torch.full((b, width), PAD, dtype=torch.long)
    attn = torch.zeros(b, width, dtype=torch.long)
    for i, r in enumerate(rows):
        inp[i, width - len(r) :] = torch.tensor(r)
        attn[i, width - len(r) :] = 1
    pos = (attn.cumsum(1) - 1).clamp(min=0)  # [B, P]
    out_tok = torch.full((b, max_new), PAD, dtype=torch.long)
    out_logp = torch.zeros(b, max_new)
    done = torch.zeros(b, dtype=torch.bool)
    with lm.mm.slots(ids):
        out = lm.base(input_ids=inp, attention_mask=attn, position_ids=pos, use_cache=True)
        for t in range(max_new):
            logits = out.logits[:, -1].float()  # [B, V]
            if greedy:
                nxt = logits.argmax(-1)
            else:
                probs = torch.softmax(logits / temperature, -1)
                nxt = torch.multinomial(probs, 1, generator=generator).squeeze(1)
            logp = torch.log_softmax(logits / temperature, -1).gather(1, nxt[:, None])[:, 0]
            nxt = torch.where(done, torch.full_like(nxt, PAD), nxt)
            out_tok[:, t] = nxt
            out_logp[:, t] = torch.where(done, torch.zeros_like(logp), logp)
            done |= nxt == EOS
            if bool(done.all()) or t == max_new - 1:
                break
            attn = torch.cat([attn, torch.ones(b, 1, dtype=torch.long)], 1)
            pos = pos[:, -1:] + 1
            out = lm.base(
                input_ids=nxt[:, None],
                attention_mask=attn,
                position_ids=pos,
                past_key_values=out.past_key_values,
                use_cache=True,
            )
    return _right_padded(lm, rows, out_tok, out_logp)


def _right_padded(lm: SlotLM, rows: list[list[int]], gen: Tensor, gen_logp: Tensor) -> Samples:
    """Lay prompts + completions out right-padded (what the losses take)."""
    full, masks, logps, texts = [], [], [], []
    for i, r in enumerate(rows):
        g = gen[i].tolist()
        n = g.index(EOS) + 1 if EOS in g else len([x for x in g if x != PAD])
        full.append(r + g[:n])
        masks.append([False] * len(r) + [True] * n)
        logps.append([0.0] * len(r) + gen_logp[i, :n].tolist())
        texts.append(lm.tok.decode(g[:n]))
    tokens = lm.tok.pad_right(full)
    width = tokens.shape[1]
    mask = torch.zeros(len(rows), width, dtype=torch.bool)
    logp = torch.zeros(len(rows), width)
    for i, (m, lp) in enumerate(zip(masks, logps)):
        mask[i, : len(m)] = torch.tensor(m)
        logp[i, : len(lp)] = torch.tensor(lp)
    return Samples(tokens, mask, logp, texts)


def token_logprobs(model: MultiLoraModel, tokens: Tensor, slot_ids: Tensor) -> Tensor:
    """log p(tokens[:, t] | tokens[:, :t]) for t >= 1, 0 at t = 0: ``[B, T]`` (with grad);
    row b goes through slot ``slot_ids[b]`` of ``model`` (a ``SlotLM.mm``; -1 = base).

    ``tokens`` are right-padded, so causal attention needs no mask."""
    with model.slots(slot_ids):
        logits = model.base(input_ids=tokens[:, :-1]).logits.float()  # [B, T-1, V]
    lp = torch.log_softmax(logits, -1).gather(2, tokens[:, 1:, None])[..., 0]  # [B, T-1]
    return torch.cat([lp.new_zeros(tokens.shape[0], 1), lp], 1)  # [B, T]
