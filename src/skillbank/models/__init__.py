"""Base networks and the registry that rebuilds them from ``base/config.json``.

``BASE_KINDS`` maps a base kind to a builder ``kwargs -> nn.Module``. skillbank registers
``actor_critic`` (the MLP) and ``module`` (a user's network built by import path,
``skillbank.models.custom``); packages above this layer register their own kinds with
``register_base_kind`` (``skillbank.lm`` registers ``causal_lm`` when imported), so this
package never imports them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from skillbank.errors import SkillbankError
from skillbank.models.actor_critic import ActorCritic, ActorCriticConfig
from skillbank.models.custom import ModelError, build_module_base, module_base_config

BaseBuilder = Callable[[dict[str, Any]], nn.Module]

BASE_KINDS: dict[str, BaseBuilder] = {
    "actor_critic": lambda kw: ActorCritic(ActorCriticConfig(**kw)),
    "module": build_module_base,
}

# Kinds registered by other packages on import: the hint names what to import.
_REGISTERED_BY = {"causal_lm": "skillbank.lm.model"}


class UnknownBaseKindError(SkillbankError, ValueError):
    """A base config names a kind nobody registered."""


def register_base_kind(kind: str, builder: BaseBuilder, replace: bool = False) -> None:
    """Make ``build_base(kind, kwargs)`` call ``builder(kwargs)``.

    Registering a kind twice with a different builder raises ValueError unless ``replace``."""
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"a base kind must be a non-empty string, got {kind!r}")
    old = BASE_KINDS.get(kind)
    if old is not None and old is not builder and not replace:
        raise ValueError(f"base kind {kind!r} is already registered (pass replace=True)")
    BASE_KINDS[kind] = builder


def build_base(kind: str, kwargs: dict[str, Any]) -> nn.Module:
    """Rebuild a base module from its kind and constructor arguments."""
    if kind not in BASE_KINDS:
        hint = (
            f" (registered by {_REGISTERED_BY[kind]}: import it first)"
            if kind in _REGISTERED_BY
            else ""
        )
        raise UnknownBaseKindError(
            f"field kind: unknown base kind {kind!r}{hint}; known: {sorted(BASE_KINDS)}"
        )
    return BASE_KINDS[kind](kwargs)


__all__ = [
    "BASE_KINDS",
    "ActorCritic",
    "ActorCriticConfig",
    "BaseBuilder",
    "ModelError",
    "UnknownBaseKindError",
    "build_base",
    "build_module_base",
    "module_base_config",
    "register_base_kind",
]
