"""``control/orch.toml`` of a language-model run (kind "lm"): GRPO on one text domain.
Light imports only (no torch): the trainer and the CLI validate with it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from skillbank.config import ConfigError
from skillbank.service.config import TrainerInfo


@dataclass
class LMRunConfig:
    """A run of kind "lm": flat fields, no tables."""

    kind: str = "lm"
    """Orchestrator kind ("lm": text domains with GRPO)."""
    domain: str = "reverse"
    """Text domain (``skillbank.lm.domains``): reverse, sort, add, caesar."""
    max_steps: int = 40
    """Policy updates of the run."""
    learning_rate: float = 2e-3
    """Adam learning rate of this run's adapter."""
    anneal_lr: bool = False
    """Decay the learning rate linearly to 0 over max_steps."""
    rank: int = 8
    """LoRA rank of a fresh adapter (a converted checkpoint keeps its own)."""
    alpha: float | None = None
    """LoRA alpha (scaling alpha / rank); None = 2 * rank."""
    prompts_per_step: int = 16
    """P: prompts per rollout."""
    group_size: int = 8
    """G: completions per prompt (the group of the group-relative advantage)."""
    clip_eps: float = 0.2
    """eps of the clipped importance ratio against the sampling policy."""
    kl_coef: float = 0.0
    """Weight of the KL penalty to the base (0 = none)."""
    scale_std: bool = False
    """Divide advantages by the group's reward std."""
    max_new_tokens: int = 16
    """Longest completion sampled."""
    temperature: float = 1.0
    """Sampling temperature."""
    seed: int = 0
    """Seed of the prompts, the sampling and a fresh adapter."""


def _need(ok: bool, path: Path, name: str, problem: str) -> None:
    if not ok:
        raise ConfigError(f"{path}: field {name!r}: {problem}")


def check_lm_run(cfg: LMRunConfig, path: Path, info: TrainerInfo) -> list:
    """Check an LM run config against the trainer; returns ``[domain name]``."""
    from skillbank.lm.domains import UnknownDomainError, get_domain

    _need(
        info.base_kind == "causal_lm",
        path,
        "kind",
        f"runs of kind 'lm' need a causal-LM base (trainer.toml lm_base); this trainer's "
        f"base is {info.base_kind!r}",
    )
    try:
        domain = get_domain(cfg.domain)
    except UnknownDomainError as e:
        raise ConfigError(f"{path}: field 'domain': {e}") from None
    context = int(info.base_kwargs.get("max_position_embeddings", 0))
    longest = max(len(e.prompt) + 2 for e in domain.examples(200))  # + bos + 1 answer token
    _need(
        longest <= context,
        path,
        "domain",
        f"prompts of {cfg.domain!r} take up to {longest} tokens with an answer; the base's "
        f"context is {context} tokens",
    )
    _need(
        1 <= cfg.rank <= info.rank_capacity,
        path,
        "rank",
        f"{cfg.rank} not in [1, the trainer's rank capacity {info.rank_capacity}]",
    )
    _need(
        cfg.alpha is None or (cfg.alpha > 0 and math.isfinite(cfg.alpha)),
        path,
        "alpha",
        "must be > 0",
    )
    _need(cfg.max_steps >= 1, path, "max_steps", "must be >= 1")
    lr_ok = cfg.learning_rate > 0 and math.isfinite(cfg.learning_rate)
    _need(lr_ok, path, "learning_rate", f"must be > 0, got {cfg.learning_rate}")
    _need(cfg.prompts_per_step >= 1, path, "prompts_per_step", "must be >= 1")
    _need(cfg.group_size >= 2, path, "group_size", "must be >= 2 (advantages are relative)")
    _need(0 < cfg.clip_eps < 1, path, "clip_eps", f"must be in (0, 1), got {cfg.clip_eps}")
    _need(cfg.kl_coef >= 0, path, "kl_coef", "must be >= 0")
    _need(cfg.max_new_tokens >= 1, path, "max_new_tokens", "must be >= 1")
    _need(cfg.temperature > 0, path, "temperature", "must be > 0")
    return [cfg.domain]
