"""Registry of orchestrator kinds: the config schema, its check, and the entry point.

A kind is looked up by the ``kind`` field of ``orch.toml`` (default "ppo"). The entry
point is a ``"module:function"`` string imported only when an orchestrator starts, so the
trainer and the CLI can validate configs without loading the collector code. The
language-model kind registers itself here the same way.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skillbank.service.config import PPORunConfig, TrainerInfo, check_ppo_run
from skillbank.service.lm_config import LMRunConfig, check_lm_run


@dataclass(frozen=True)
class OrchestratorKind:
    """One kind of orchestrator."""

    name: str
    config_cls: type
    """Dataclass of its ``orch.toml`` fields (with defaults)."""
    check: Callable[[Any, Path, TrainerInfo], list]
    """Validate a config against the trainer; returns the run's task specs."""
    entry: str
    """``"module:function"``; the function takes (RunPaths, config, specs, TrainerInfo)
    and returns an exit code."""

    def load_entry(self) -> Callable[..., int]:
        module, _, func = self.entry.partition(":")
        return getattr(importlib.import_module(module), func)


KINDS: dict[str, OrchestratorKind] = {}


def register(kind: OrchestratorKind) -> None:
    KINDS[kind.name] = kind


def get_kind(name: str) -> OrchestratorKind:
    if name not in KINDS:
        raise KeyError(f"unknown orchestrator kind {name!r}; known kinds: {sorted(KINDS)}")
    return KINDS[name]


register(
    OrchestratorKind(
        name="ppo",
        config_cls=PPORunConfig,
        check=check_ppo_run,
        entry="skillbank.service.orchestrator:run_ppo",
    )
)
register(
    OrchestratorKind(
        name="lm",
        config_cls=LMRunConfig,
        check=check_lm_run,
        entry="skillbank.service.lm_orchestrator:run_lm",
    )
)
