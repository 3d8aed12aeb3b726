"""GRPO-style policy gradient on LoRA slots, readable top to bottom.

1. ``collect``: for P prompts, sample G completions each with the current adapter
   (``sample.generate``), score them with the domain's verifier, and compute the
   group-relative advantage A = r - mean(group) (optionally / std(group)).
2. ``grpo_loss``: token-level clipped importance ratio against the sampling policy,
   -min(rho A, clip(rho, 1 - eps, 1 + eps) A), optionally + beta KL(pi || base)
   (the k3 estimator exp(ref - logp) - (ref - logp) - 1), averaged over the completion
   tokens of each slot (every slot's tokens weigh 1 in total, whatever its batch share).
3. ``grpo_step``: forward all rows at once (each through its slot), the loss, per-slot
   gradient clipping, one ``SlotAdam`` step. The multi-run service's trainer calls the same
   function (``skillbank.service.lm_update``), so there is one implementation.
4. ``train_grpo``: the in-process loop (``skillbank lm rl``).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from skillbank.algos.ppo import clip_grad_norm_per_slot
from skillbank.algos.slot_adam import SlotAdam
from skillbank.lm.domains import Domain, Example
from skillbank.lm.model import SlotLM
from skillbank.lm.sample import generate, token_logprobs
from skillbank.lora.layer import MultiLoraModel


@dataclass
class GRPOConfig:
    """Settings of GRPO (in-process ``skillbank lm rl`` and service runs of kind "lm")."""

    steps: int = 60
    """Policy updates."""
    prompts_per_step: int = 16
    """P: prompts per update."""
    group_size: int = 8
    """G: completions sampled per prompt."""
    learning_rate: float = 2e-3
    """Adam learning rate of the adapter."""
    clip_eps: float = 0.2
    """eps of the clipped importance ratio."""
    kl_coef: float = 0.0
    """beta: weight of the KL penalty to the base (0 = none, no reference forward)."""
    scale_std: bool = False
    """Divide the group-relative advantage by the group's std."""
    update_epochs: int = 2
    """Gradient steps per rollout (the ratio moves away from 1 after the first: clipped)."""
    max_grad_norm: float = 1.0
    """Per-slot gradient-norm clip."""
    max_new_tokens: int = 16
    """Longest completion sampled."""
    temperature: float = 1.0
    """Sampling temperature (1.0 keeps the ratio against the sampled distribution exact)."""
    seed: int = 0
    """Seed of prompts and sampling."""


def group_advantages(rewards: Tensor, group_size: int, scale_std: bool = False) -> Tensor:
    """A = r - mean of its group (rows are groups of ``group_size`` consecutive samples)."""
    r = rewards.view(-1, group_size)  # [P, G]
    adv = r - r.mean(1, keepdim=True)
    if scale_std:
        adv = adv / (r.std(1, keepdim=True) + 1e-4)
    return adv.reshape(-1)  # [P*G]


def grpo_loss(
    logp: Tensor,
    old_logp: Tensor,
    adv: Tensor,
    mask: Tensor,
    weight: Tensor,
    clip_eps: float | Tensor,
    kl_coef: float | Tensor = 0.0,
    ref_logp: Tensor | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """GRPO loss over tokens. ``logp``/``old_logp``/``ref_logp``/``mask``: [B, T];
    ``adv``: [B]; ``weight``: [B] = 1 / (completion tokens of the row's slot);
    ``clip_eps`` and ``kl_coef``: one value or one per row [B] (runs of the service)."""
    m = mask.float()
    w = weight[:, None] * m  # [B, T]
    ratio = torch.exp(logp - old_logp)  # [B, T]
    a = adv[:, None]
    eps = torch.as_tensor(clip_eps, dtype=logp.dtype).reshape(-1, 1)  # [B or 1, 1]
    surr = torch.minimum(ratio * a, torch.clamp(ratio, 1 - eps, 1 + eps) * a)
    loss = -(surr * w).sum()
    stats = {}
    if ref_logp is not None:
        beta = torch.as_tensor(kl_coef, dtype=logp.dtype).reshape(-1, 1)  # [B or 1, 1]
        d = ref_logp - logp
        kl = torch.exp(d) - d - 1  # [B, T], k3 estimator of KL(pi || ref)
        loss = loss + (beta * kl * w).sum()
        stats["kl"] = float((kl.detach() * m).sum() / m.sum().clamp(min=1))
    with torch.no_grad():
        n = m.sum().clamp(min=1)
        stats["clip_frac"] = float((((ratio - 1).abs() > eps).float() * m).sum() / n)
        stats["ratio_mean"] = float((ratio * m).sum() / n)
    return loss, stats


def slot_token_weights(slot: Tensor, mask: Tensor) -> Tensor:
    """[B]: 1 / (number of completion tokens of all rows sharing the row's slot)."""
    per_row = mask.float().sum(1)  # [B]
    uniq, inv = torch.unique(slot, return_inverse=True)
    totals = torch.zeros(len(uniq)).index_add_(0, inv, per_row)  # [N]
    return 1.0 / totals[inv].clamp(min=1)


def grpo_step(
    model: MultiLoraModel,
    opt: SlotAdam,
    batch: dict[str, Tensor],
    cfg: GRPOConfig,
    reduce_grads: Callable[[], None] | None = None,
) -> dict[str, float]:
    """``cfg.update_epochs`` gradient steps on a batch: ``tokens, mask, logp`` [B, T],
    ``advantages, slot`` [B], optionally per-row ``clip_eps, kl_coef`` [B] (else ``cfg``'s)
    and ``weight`` [B] (else ``slot_token_weights`` of this batch).
    The caller sets ``opt``'s active slots and learning rates. Slots with non-finite
    gradients are marked skipped in ``opt`` and not stepped.

    Data parallel: the loss is a weighted *sum* over tokens, so ranks that each pass a share
    of the rows with the whole batch's ``weight`` and sum their gradients in
    ``reduce_grads`` (called after each backward, before the checks and clipping) take
    exactly the single-process step."""
    tokens, mask, slot = batch["tokens"], batch["mask"].bool(), batch["slot"]
    weight = batch["weight"] if "weight" in batch else slot_token_weights(slot, mask)
    clip_eps = batch.get("clip_eps", torch.tensor(cfg.clip_eps))
    kl_coef = batch.get("kl_coef", torch.tensor(cfg.kl_coef))
    ref = None
    if bool((kl_coef > 0).any()):
        with torch.no_grad():
            ref = token_logprobs(model, tokens, torch.full_like(slot, -1))
    stats: dict[str, float] = {}
    for _ in range(cfg.update_epochs):
        logp = token_logprobs(model, tokens, slot)  # [B, T]
        loss, stats = grpo_loss(
            logp, batch["logp"], batch["advantages"], mask, weight, clip_eps, kl_coef, ref
        )
        opt.zero_grad()
        loss.backward()
        if reduce_grads is not None:
            reduce_grads()
        opt.skip_nonfinite()
        clip_grad_norm_per_slot(opt.params, cfg.max_grad_norm)
        opt.step()
        stats["loss"] = float(loss.detach())
    return stats


@torch.no_grad()
def collect(
    lm: SlotLM,
    domain: Domain,
    examples: Sequence[Example],
    slot: int,
    cfg: GRPOConfig,
    generator: torch.Generator,
) -> tuple[dict[str, Tensor], Tensor]:
    """Sample G completions per example with ``slot``; (batch tensors, rewards [P*G])."""
    g = cfg.group_size
    prompts = [ex.prompt for ex in examples for _ in range(g)]
    s = generate(lm, prompts, slot, cfg.max_new_tokens, False, cfg.temperature, generator)
    answers = [ex.answer for ex in examples for _ in range(g)]
    rewards = torch.tensor([domain.reward(c, a) for c, a in zip(s.completions, answers)])
    batch = {
        "tokens": s.tokens,
        "mask": s.mask,
        "logp": s.logp,
        "advantages": group_advantages(rewards, g, cfg.scale_std).float(),
        "rewards": rewards.float(),
    }
    return batch, rewards


def train_grpo(
    lm: SlotLM,
    slot: int,
    domains: Sequence[Domain],
    cfg: GRPOConfig,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    optimizer: Any = None,
) -> list[dict[str, float]]:
    """Train slot ``slot`` of ``lm`` in place with GRPO on ``domains`` (a shared adapter if
    several: each step's prompts are drawn from all of them, round-robin). The slot must
    hold an adapter already (``init_slot`` or a loaded one). ``optimizer``: instead of Adam
    on the slot, any object with ``zero_grad()``, ``skip_nonfinite()``, ``step()`` and a
    ``params`` list (clipped per slot; [] = no clip), e.g. to train full weights with
    ``slot=-1``. Returns per-step stats (``reward`` = mean reward of the step's samples,
    before the update)."""
    opt = optimizer
    if opt is None:
        opt = SlotAdam(lm.slot_parameters(), lm.mm.num_slots, lr=cfg.learning_rate)
        opt.set_active([slot])
    rng = random.Random(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    history = []
    for step in range(cfg.steps):
        exs = [domains[i % len(domains)].sample(rng) for i in range(cfg.prompts_per_step)]
        parts = []
        for d in domains:
            mine = [e for e in exs if e.domain == d.name]
            if mine:
                parts.append(collect(lm, d, mine, slot, cfg, gen))
        batch = merge_batches([p[0] for p in parts], [slot] * len(parts))
        rewards = torch.cat([p[1] for p in parts])
        stats = grpo_step(lm.mm, opt, batch, cfg)
        stats["reward"] = float(rewards.mean())
        history.append(stats)
        if on_step is not None:
            on_step(step, stats)
    return history


def merge_batches(batches: Sequence[dict[str, Tensor]], slots: Sequence[int]) -> dict[str, Tensor]:
    """Concatenate rollout batches (right-padding ``[B, T]`` tensors to one width) and add
    ``slot`` [B]: batch i's rows go through slot ``slots[i]``."""
    width = max(b["tokens"].shape[1] for b in batches)
    out: dict[str, list[Tensor]] = {}
    for b in batches:
        for k, v in b.items():
            if v.dim() == 2:
                v = torch.cat([v, v.new_zeros(v.shape[0], width - v.shape[1])], 1)
            out.setdefault(k, []).append(v)
    merged = {k: torch.cat(v) for k, v in out.items()}
    merged["slot"] = torch.cat(
        [torch.full((b["tokens"].shape[0],), s, dtype=torch.long) for b, s in zip(batches, slots)]
    )
    return merged
