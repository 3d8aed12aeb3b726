"""The run-kind registry: every kind of run (PPO on control tasks, GRPO on text domains)
registers the same five parts, and the trainer, the orchestrator entry and the tools look
them up by the ``kind`` field of ``orch.toml`` (default "ppo"), never by an if/else.

The parts that need torch (orchestrate, read, update) are ``"module:function"`` strings,
imported on first use, so the CLI and the trainer's registry validate configs without
loading collector or loss code.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from skillbank.config import Config, ConfigError, read_toml, validate_table
from skillbank.service.protocol.info import TrainerInfo
from skillbank.service.protocol.paths import RunPaths


@dataclass(frozen=True)
class RunKind:
    """One kind of run."""

    name: str
    config: type[Config]
    """Its ``orch.toml`` model (flat fields; ``kind`` is a Literal of ``name``)."""
    check: Callable[[Any, Path, TrainerInfo], list[Any]]
    """Check a config against the trainer -> the run's tasks (ConfigError: file + field)."""
    orchestrate: str
    """``"module:function"``: (RunPaths, config, tasks, TrainerInfo) -> exit code."""
    read: str
    """``"module:function"``: (RunPaths, step, config, TrainerInfo) -> Rollout, or
    RolloutError naming the file and the key."""
    update: str
    """``"module:function"``: (UpdateContext, [RunBatch]) -> UpdateResult: one batched,
    failure-isolated update of every ready run of this kind."""
    skill_task: Callable[[Any], dict[str, Any]]
    """The ``task`` record of a skill made from a run (``skillbank library add``)."""
    algo: str
    """Training algorithm recorded with such a skill ("ppo", "grpo")."""
    serve_many: str | None = None
    """``"module:Class"``: (TrainerInfo, num_slots) -> a ``RunGroup`` that serves many
    runs of this kind in one orchestrator process (one batched act per env step), or
    None: such runs get one orchestrator process each."""
    _loaded: dict[str, Callable[..., Any]] = field(default_factory=dict, compare=False)

    def part(self, name: str) -> Callable[..., Any]:
        """The function of part ``name`` ("orchestrate", "read", "update", "serve_many")."""
        if name not in self._loaded:
            spec = getattr(self, name)
            if spec is None:
                raise KeyError(f"run kind {self.name!r} has no part {name!r}")
            module, _, func = spec.partition(":")
            self._loaded[name] = getattr(importlib.import_module(module), func)
        return self._loaded[name]


class RunGroup(Protocol):
    """Many runs of one kind served by one orchestrator process (``serve_many``)."""

    def add(self, run: RunPaths, cfg: Any, tasks: list[Any]) -> None:
        """Start serving ``run`` (errors: the caller reports them for that run alone)."""
        ...

    def tick(self) -> tuple[list[Any], bool]:
        """One step of every served run -> (runs that ended: ``.run``, ``.code``,
        ``.why``; whether any work was done)."""
        ...

    def serves(self) -> list[RunPaths]: ...

    def close(self) -> None: ...


class RunKinds:
    """Name -> RunKind."""

    def __init__(self) -> None:
        self._kinds: dict[str, RunKind] = {}

    def register(self, kind: RunKind) -> None:
        if kind.name in self._kinds:
            raise ValueError(f"run kind {kind.name!r} is registered already")
        self._kinds[kind.name] = kind

    def get(self, name: str) -> RunKind:
        if name not in self._kinds:
            raise KeyError(f"unknown run kind {name!r}; known kinds: {sorted(self._kinds)}")
        return self._kinds[name]

    def names(self) -> list[str]:
        return sorted(self._kinds)


KINDS = RunKinds()
"""Filled by ``skillbank.service.kinds`` (each kind's package registers itself)."""


def register_builtin(
    name: str,
    config: type[Config],
    check: Callable[[Any, Path, TrainerInfo], list[Any]],
    skill_task: Callable[[Any], dict[str, Any]],
    algo: str,
    serve_many: str | None = None,
) -> None:
    """Register a kind packaged as ``skillbank.service.kinds.<name>``: its parts are
    ``orchestrate:run_<name>``, ``update:read_<name>_rollout`` and
    ``update:<name>_update_runs``; ``serve_many`` is relative to that package."""
    package = f"skillbank.service.kinds.{name}"
    KINDS.register(
        RunKind(
            name=name,
            config=config,
            check=check,
            orchestrate=f"{package}.orchestrate:run_{name}",
            read=f"{package}.update:read_{name}_rollout",
            update=f"{package}.update:{name}_update_runs",
            skill_task=skill_task,
            algo=algo,
            serve_many=None if serve_many is None else f"{package}.{serve_many}",
        )
    )


def load_run_config(path: Path, info: TrainerInfo) -> tuple[Any, list[Any]]:
    """Read and check a run's ``orch.toml`` (any registered kind) -> (config, tasks)."""
    data = read_toml(path)
    kind_name = data.get("kind", "ppo")
    if not isinstance(kind_name, str):
        raise ConfigError(f"{path}: field 'kind': must be a string, got {kind_name!r}")
    try:
        kind = KINDS.get(kind_name)
    except KeyError as e:
        raise ConfigError(f"{path}: field 'kind': {e.args[0]}") from None
    for key, value in data.items():
        if isinstance(value, dict):
            raise ConfigError(f"{path}: field {key!r}: tables are not allowed in orch.toml")
    cfg = validate_table(kind.config, data, str(path))
    return cfg, kind.check(cfg, path, info)
