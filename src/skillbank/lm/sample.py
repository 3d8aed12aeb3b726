"""Batched sampling from a ``SlotLM``: every row through its own slot, with a KV cache.

Prompts are left-padded (attention mask + position ids), so rows of different lengths
and different skills decode together; the slot ids ``[batch]`` broadcast over the
sequence in the prefill and over the single new position of each decode step.
The result is laid out right-padded for training: ``tokens [B, T]``, ``mask [B, T]``
(True on generated tokens, eos included) and ``logp [B, T]`` (the sampling policy's
log-probability of each generated token, 0 elsewhere).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from skillbank.errors import SkillbankError
from skillbank.lm.hf import hf_config
from skillbank.lm.model import SlotLM
from skillbank.lora import MultiLoraModel


class PromptTooLongError(SkillbankError, ValueError):
    """A prompt that leaves no room for an answer in the model's context."""


@dataclass
class Samples:
    tokens: Tensor  # [B, T] int64, prompt + completion, right-padded
    mask: Tensor  # [B, T] bool, generated tokens
    logp: Tensor  # [B, T] float32, sampling log-prob of generated tokens
    completions: list[str]


def encode_prompts(
    lm: SlotLM, prompts: Sequence[str | list[dict]], min_answer: int = 1
) -> list[list[int]]:
    """Token ids of each prompt; PromptTooLongError if one cannot fit an answer."""
    rows = []
    for p in prompts:
        ids = lm.tok.prompt_ids(p)
        if len(ids) + min_answer > lm.max_len:
            raise PromptTooLongError(
                f"prompt {str(p)[:40]!r} has {len(ids)} tokens; the model's context is "
                f"{lm.max_len} tokens (max_position_embeddings), leaving no room for "
                f"an answer of {min_answer} token(s)"
            )
        rows.append(ids)
    return rows


def as_slot_ids(slots: int | Sequence[int] | Tensor, n: int) -> Tensor:
    ids = torch.as_tensor(slots, dtype=torch.long)
    return ids.expand(n).clone() if ids.dim() == 0 else ids


def filter_logits(logits: Tensor, top_k: int = 0, top_p: float = 1.0) -> Tensor:
    """``logits [B, V]`` with tokens outside the top-k / nucleus set to -inf."""
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_l, order = torch.sort(logits, descending=True, dim=-1)
        probs = torch.softmax(sorted_l, -1)
        drop = probs.cumsum(-1) - probs >= top_p  # keep the token that crosses top_p
        logits = logits.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    return logits


def cache_keyword(model: torch.nn.Module) -> str:
    """The forward's cache argument: ``cache`` (transformers >= 5.2x; ``past_key_values``
    is deprecated there, removed in 5.40) or ``past_key_values`` (earlier versions)."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    hits = [text.index(s) for s in stop if s and s in text]
    return (text[: min(hits)], True) if hits else (text, False)


@torch.no_grad()
def generate(
    lm: SlotLM,
    prompts: Sequence[str | list[dict]],
    slots: int | Sequence[int] | Tensor,
    max_new_tokens: int = 16,
    greedy: bool = False,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    top_k: int = 0,
    top_p: float = 1.0,
    stop: Sequence[str] = (),
) -> Samples:
    """Sample one completion per prompt; row i uses slot ``slots[i]`` (-1 = base).

    ``logp`` is log softmax(logits / temperature) of each sampled token: the same quantity
    ``token_logprobs`` computes at that temperature, so the first GRPO ratio is exactly 1
    (top-k / top-p only restrict which tokens are drawn, as in TRL and vLLM). Decoding
    uses transformers' cache object (``DynamicCache``), updated in place."""
    from transformers import DynamicCache

    rows = encode_prompts(lm, prompts)
    b, dev = len(rows), lm.device
    ids = as_slot_ids(slots, b).to(dev)
    width = max(len(r) for r in rows)
    max_new = max(1, min(max_new_tokens, lm.max_len - width))
    pad = lm.tok.pad_id
    inp = torch.full((b, width), pad, dtype=torch.long)
    attn = torch.zeros(b, width, dtype=torch.long)
    for i, r in enumerate(rows):
        inp[i, width - len(r) :] = torch.tensor(r)
        attn[i, width - len(r) :] = 1
    inp, attn = inp.to(dev), attn.to(dev)
    pos = (attn.cumsum(1) - 1).clamp(min=0)  # [B, P]
    out_tok = torch.full((b, max_new), pad, dtype=torch.long)
    out_logp = torch.zeros(b, max_new)
    lengths = torch.zeros(b, dtype=torch.long)
    done = torch.zeros(b, dtype=torch.bool)
    eos = torch.tensor(lm.tok.eos_ids)
    cache = DynamicCache(config=hf_config(lm.base))
    cache_arg = cache_keyword(lm.base)
    step_in = {"input_ids": inp, "attention_mask": attn, "position_ids": pos}
    with lm.mm.slots(ids):
        for t in range(max_new):
            out = lm.base(**step_in, **{cache_arg: cache}, use_cache=True, logits_to_keep=1)
            logits = out.logits[:, -1].float() / (1.0 if greedy else temperature)  # [B, V]
            if greedy:
                nxt = logits.argmax(-1)
            else:
                probs = torch.softmax(filter_logits(logits, top_k, top_p), -1)
                nxt = torch.multinomial(probs.cpu(), 1, generator=generator)[:, 0].to(dev)
            logp = torch.log_softmax(logits, -1).gather(1, nxt[:, None])[:, 0].cpu()
            live, nxt_c = ~done, nxt.cpu()
            out_tok[live, t] = nxt_c[live]
            out_logp[live, t] = logp[live]
            lengths += live.long()
            done |= torch.isin(nxt_c, eos)
            if stop:
                for i in torch.nonzero(live & ~done).flatten().tolist():
                    text = lm.tok.decode(out_tok[i, : int(lengths[i])])
                    done[i] = _cut_at_stop(text, stop)[1]
            if bool(done.all()):
                break
            attn = torch.cat([attn, torch.ones(b, 1, dtype=torch.long, device=dev)], 1)
            pos = pos[:, -1:] + 1
            step_in = {"input_ids": nxt[:, None], "attention_mask": attn, "position_ids": pos}
    return _right_padded(lm, rows, out_tok, out_logp, lengths, stop)


def _right_padded(
    lm: SlotLM,
    rows: list[list[int]],
    gen: Tensor,
    gen_logp: Tensor,
    lengths: Tensor,
    stop: Sequence[str] = (),
) -> Samples:
    """Lay prompts + completions out right-padded (what the losses take)."""
    full, texts = [], []
    for i, r in enumerate(rows):
        g = gen[i, : int(lengths[i])].tolist()
        full.append(r + g)
        texts.append(_cut_at_stop(lm.tok.decode(g), stop)[0])
    tokens = lm.tok.pad_right(full)
    width = tokens.shape[1]
    mask = torch.zeros(len(rows), width, dtype=torch.bool)
    logp = torch.zeros(len(rows), width)
    for i, r in enumerate(rows):
        n = int(lengths[i])
        mask[i, len(r) : len(r) + n] = True
        logp[i, len(r) : len(r) + n] = gen_logp[i, :n]
    return Samples(tokens, mask, logp, texts)


def token_logprobs(
    model: MultiLoraModel,
    tokens: Tensor,
    slot_ids: Tensor,
    temperature: float | Tensor = 1.0,
) -> Tensor:
    """log softmax(logits / temperature) of ``tokens[:, t]`` given ``tokens[:, :t]`` for
    t >= 1, 0 at t = 0: ``[B, T]`` (with grad); row b goes through slot ``slot_ids[b]`` of
    ``model`` (a ``SlotLM.mm``; -1 = base). ``temperature``: one value or one per row [B]
    (must be the sampling temperature for an exact importance ratio).

    ``tokens`` are right-padded, so causal attention needs no mask."""
    dev = next(model.base.parameters()).device
    with model.slots(slot_ids.to(dev)):
        logits = model.base(input_ids=tokens[:, :-1].to(dev)).logits  # [B, T-1, V]
    temp = torch.as_tensor(temperature, dtype=torch.float32, device=dev).reshape(-1)
    lp = selective_logp(logits, tokens[:, 1:].to(dev), temp)  # [B, T-1]
    return torch.cat([lp.new_zeros(tokens.shape[0], 1), lp], 1).cpu()  # [B, T]


def selective_logp(logits: Tensor, targets: Tensor, temperature: Tensor) -> Tensor:
    """log softmax(logits / temperature)[targets], ``[B, T]``, one row at a time in float32:
    with a large vocabulary, only one ``[T, V]`` temporary exists besides the logits.
    ``temperature``: [1] or [B]."""
    rows = []
    for i in range(logits.shape[0]):
        row = logits[i].float() / temperature[i if temperature.numel() > 1 else 0]
        rows.append(torch.log_softmax(row, -1).gather(1, targets[i, :, None])[:, 0])
    return torch.stack(rows)
