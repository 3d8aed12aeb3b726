"""GRPO-style policy gradient on LoRA slots, readable top to bottom.

1. ``collect``: for P prompts, sample G completions each with the current adapter
   (``sample.generate``, at ``temperature`` with top-k / top-p / stop strings), score them
   with the task's rewards (a domain's verifier or a dataset's reward functions), and
   compute the group-relative advantage (``algos.grpo.group_advantages``).
2. the loss (``algos.grpo.grpo_loss``): token-level clipped importance ratio against the
   sampling policy, optionally + beta KL(pi || base), normalised per slot as TRL's
   ``loss_type`` says. Tokens are scored at the sampling temperature, so the first ratio
   is exactly 1.
3. ``grpo_step``: forward all rows at once (each through its slot), the loss, per-slot
   gradient clipping, one ``SlotAdam`` step. The multi-run service's trainer calls the same
   function, so there is one implementation.
4. ``train_grpo``: the in-process loop (``skillbank lm rl``).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from skillbank.algos.grpo import (
    group_advantages,
    grpo_loss,
    loss_weights,
    ratio_mask,
    slot_token_weights,
)
from skillbank.algos.ppo import clip_grad_norm_per_slot
from skillbank.algos.slot_adam import SlotAdam
from skillbank.lm.configs import GRPOConfig
from skillbank.lm.domains import Example
from skillbank.lm.loop import run_steps, slot_optimizer
from skillbank.lm.model import SlotLM
from skillbank.lm.sample import generate, token_logprobs
from skillbank.lora import MultiLoraModel


def grpo_step(
    model: MultiLoraModel,
    opt: SlotAdam,
    batch: dict[str, Tensor],
    cfg: GRPOConfig,
    reduce_grads: Callable[[], None] | None = None,
) -> dict[str, float]:
    """``cfg.update_epochs`` gradient steps on a batch: ``tokens, mask, logp`` [B, T],
    ``advantages, slot`` [B], optionally per-row ``clip_eps, kl_coef, temperature`` [B]
    (else ``cfg``'s) and ``weight`` [B] (else ``loss_weights`` of this batch).
    The caller sets ``opt``'s active slots and learning rates. Slots with non-finite
    gradients are marked skipped in ``opt`` and not stepped.

    Data parallel: the loss is a weighted *sum* over tokens, so ranks that each pass a share
    of the rows with the whole batch's ``weight`` and sum their gradients in
    ``reduce_grads`` (called after each backward, before the checks and clipping) take
    exactly the single-process step."""
    tokens, mask, slot = batch["tokens"], batch["mask"].bool(), batch["slot"]
    weight = batch.get("weight")
    if weight is None:
        weight = loss_weights(slot, mask, cfg.loss_type, cfg.max_new_tokens)
    clip_eps = batch.get("clip_eps", torch.tensor(cfg.clip_eps))
    kl_coef = batch.get("kl_coef", torch.tensor(cfg.kl_coef))
    temp = batch.get("temperature", torch.tensor(cfg.temperature))
    ref = None
    if bool((kl_coef > 0).any()):
        with torch.no_grad():
            ref = token_logprobs(model, tokens, torch.full_like(slot, -1), temp)
    masking = cfg.ratio_mask_low is not None or cfg.ratio_mask_high is not None
    stats: dict[str, float] = {}
    for _ in range(cfg.update_epochs):
        logp = token_logprobs(model, tokens, slot, temp)  # [B, T]
        m = mask
        if masking:
            low, high = cfg.ratio_mask_low or 0.0, cfg.ratio_mask_high or float("inf")
            m = ratio_mask(logp, batch["logp"], mask, low, high)
        loss, stats = grpo_loss(
            logp,
            batch["logp"],
            batch["advantages"],
            m,
            weight,
            clip_eps,
            kl_coef,
            ref,
            cfg.clip_eps_high,
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


def task_rewards(task: Any, completions: Sequence[str], examples: Sequence[Example]) -> Tensor:
    """[N] float64 rewards of completions: the task's batch ``rewards`` (datasets, domains) or its
    per-row ``reward(completion, answer)`` (older Domain subclasses)."""
    if hasattr(task, "rewards"):
        values = task.rewards(list(completions), list(examples))
    else:
        values = [task.reward(c, e.answer) for c, e in zip(completions, examples)]
    return torch.tensor(values, dtype=torch.float64)


@torch.no_grad()
def collect(
    lm: SlotLM,
    domain: Any,
    examples: Sequence[Example],
    slot: int,
    cfg: GRPOConfig,
    generator: torch.Generator,
) -> tuple[dict[str, Tensor], Tensor]:
    """Sample G completions per example with ``slot``; (batch tensors, rewards [P*G]).
    ``domain``: a ``Domain`` or a ``DatasetTask`` (anything with ``rewards``)."""
    g = cfg.group_size
    rows = [ex for ex in examples for _ in range(g)]
    s = generate(
        lm,
        [ex.prompt for ex in rows],
        slot,
        cfg.max_new_tokens,
        False,
        cfg.temperature,
        generator,
        top_k=cfg.top_k,
        top_p=cfg.top_p,
        stop=cfg.stop,
    )
    rewards = task_rewards(domain, s.completions, rows)
    scale = "group" if cfg.scale_std else cfg.scale_rewards
    batch = {
        "tokens": s.tokens,
        "mask": s.mask,
        "logp": s.logp,
        "advantages": group_advantages(rewards, g, scale=scale).float(),
        "rewards": rewards.float(),
    }
    return batch, rewards.float()


def train_grpo(
    lm: SlotLM,
    slot: int,
    domains: Sequence[Any],
    cfg: GRPOConfig,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    optimizer: Any = None,
) -> list[dict[str, float]]:
    """Train slot ``slot`` of ``lm`` in place with GRPO on ``domains`` (domains or dataset
    tasks; a shared adapter if several: each step's prompts are drawn from all of them,
    round-robin). The slot must hold an adapter already (``init_slot`` or a loaded one).
    ``optimizer``: instead of Adam on the slot, any object with ``zero_grad()``,
    ``skip_nonfinite()``, ``step()`` and a ``params`` list (clipped per slot; [] = no clip),
    e.g. to train full weights with ``slot=-1``. Returns per-step stats (``reward`` = mean
    reward of the step's samples, before the update)."""
    opt = slot_optimizer(lm, slot, cfg.learning_rate, optimizer)
    rng = random.Random(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    n = len(domains)

    def one_step(step: int) -> dict[str, float]:
        exs = [domains[i % n].sample(rng) for i in range(cfg.prompts_per_step)]
        parts = [
            collect(lm, d, exs[j::n], slot, cfg, gen) for j, d in enumerate(domains) if exs[j::n]
        ]
        batch = merge_batches([p[0] for p in parts], [slot] * len(parts))
        rewards = torch.cat([p[1] for p in parts])
        stats = grpo_step(lm.mm, opt, batch, cfg)
        stats["reward"] = float(rewards.mean())
        return stats

    return run_steps(cfg.steps, one_step, on_step)


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


__all__ = [
    "GRPOConfig",
    "collect",
    "group_advantages",
    "grpo_loss",
    "grpo_step",
    "merge_batches",
    "slot_token_weights",
    "train_grpo",
]
