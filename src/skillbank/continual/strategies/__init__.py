"""Continual-learning strategies, registered by name in ``STRATEGIES``."""

from __future__ import annotations

from skillbank.continual.strategies import lora, multitask, replay, shared  # noqa: F401
from skillbank.continual.strategies.base import STRATEGIES, Context, Strategy, TaskSetup
from skillbank.errors import ConfigError


def get_strategy(name: str) -> type[Strategy]:
    """The strategy class called ``name``; ValueError listing the valid names otherwise."""
    if name not in STRATEGIES:
        valid = ", ".join(sorted(STRATEGIES))
        raise ConfigError(f"field strategies: unknown strategy {name!r}; valid strategies: {valid}")
    return STRATEGIES[name]


__all__ = ["STRATEGIES", "Context", "Strategy", "TaskSetup", "get_strategy"]
