"""Base networks and the registry that rebuilds them from ``base/config.json``."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from skillbank.models.actor_critic import ActorCritic, ActorCriticConfig

BASE_KINDS: dict[str, Callable[[dict], nn.Module]] = {
    "actor_critic": lambda kw: ActorCritic(ActorCriticConfig(**kw)),
    "causal_lm": lambda kw: _causal_lm(kw),
}


def _causal_lm(kw: dict) -> nn.Module:
    from skillbank.lm.model import build_causal_lm  # transformers: imported only when used

    return build_causal_lm(kw)


def build_base(kind: str, kwargs: dict) -> nn.Module:
    """Rebuild a base module from its kind and constructor arguments."""
    if kind not in BASE_KINDS:
        raise ValueError(f"unknown base kind {kind!r}; known: {sorted(BASE_KINDS)}")
    return BASE_KINDS[kind](kwargs)


__all__ = ["ActorCritic", "ActorCriticConfig", "BASE_KINDS", "build_base"]
