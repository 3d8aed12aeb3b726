"""Run kinds: one registry (``registry.KINDS``); each kind's package registers its config
model, check, orchestrator, rollout reader and update the same way. Importing this package
fills the registry without importing torch."""

from skillbank.service.kinds import lm, ppo  # noqa: F401  # each registers itself
from skillbank.service.kinds.registry import KINDS, RunKind, load_run_config

__all__ = ["KINDS", "RunKind", "load_run_config"]
