"""``skillbank lm pretrain``: a fresh tiny causal LM trained on the domains' *formats*.

Each training sequence is ``bos + prompt + answer + eos`` where the prompt is a real
prompt of a domain and the answer is ``Domain.format_answer``: the right length and
alphabet, random content. The base so learns every prompt format, where the answer
starts and ends, and what an answer looks like, but none of the skills: it scores low on
every domain. ``copy_share`` of the sequences are ``copy:<s>=<s>`` (echo the string), a
generic in-context copying ability (not a domain) that pretrained LMs have and that the
skills build on. Full-parameter AdamW, loss on every token after bos.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence

import torch

from skillbank.lm.configs import PretrainConfig
from skillbank.lm.domains import LETTERS, Domain, Example, get_domain
from skillbank.lm.model import new_base
from skillbank.lm.tokenizer import CharTokenizer


def lr_factor(step: int, total: int, pct_start: float = 0.05) -> float:
    """torch's OneCycleLR (cosine, div_factor 25, final_div_factor 1e4) as a factor of the
    peak rate, defined for any ``total`` >= 1: when the warm-up would be shorter than one
    step, it starts at the peak (OneCycleLR divides by zero there)."""
    initial, final = 1.0 / 25, 1.0 / 25 / 1e4
    up_end, down_end = float(pct_start * total) - 1, float(total - 1)
    phases = [(0.0, up_end, initial, 1.0), (up_end, down_end, 1.0, final)]
    if up_end <= 0:
        phases = [(0.0, max(down_end, 1.0), 1.0, final)]
    for start, end, lr0, lr1 in phases:
        if step <= end or end == phases[-1][1]:
            pct = min(1.0, max(0.0, (step - start) / max(end - start, 1e-12)))
            return lr1 + (lr0 - lr1) / 2.0 * (1 + math.cos(math.pi * pct))
    return final


def copy_example(rng: random.Random) -> Example:
    s = "".join(rng.choice(LETTERS) for _ in range(rng.randint(2, 10)))
    return Example(f"copy:{s}=", s, "copy")


def pretrain_example(rng: random.Random, domains: Sequence[Domain], copy_share: float) -> Example:
    if rng.random() < copy_share:
        return copy_example(rng)
    d = domains[rng.randrange(len(domains))]
    ex = d.sample(rng, "train")
    return Example(ex.prompt, d.format_answer(rng, ex), d.name)


def pretrain(
    cfg: PretrainConfig, on_step: Callable[[int, float], None] | None = None
) -> tuple[torch.nn.Module, CharTokenizer]:
    """Train a fresh base; returns (model, tokenizer)."""
    tok = CharTokenizer()
    domains = [get_domain(n) for n in cfg.domains]
    model = new_base(cfg.arch, tok, cfg.seed)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg.steps))
    rng = random.Random(cfg.seed)
    for step in range(cfg.steps):
        exs = [pretrain_example(rng, domains, cfg.copy_share) for _ in range(cfg.batch_size)]
        rows = [tok.prompt_ids(e.prompt) + tok.answer_ids(e.answer) for e in exs]
        tokens = tok.pad_right(rows)  # [B, T]
        if tokens.shape[1] > cfg.arch.max_len:
            raise ValueError(f"pretraining sequence of {tokens.shape[1]} tokens > max_len")
        logits = model(input_ids=tokens[:, :-1]).logits  # [B, T-1, V]
        target = tokens[:, 1:].clone()
        target[target == tok.pad_id] = -100
        loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if on_step is not None:
            on_step(step, float(loss.detach()))
    return model.eval(), tok
