"""Tasks from any Gymnasium environment: ``GymTaskSpec``, its text form and its TOML table.

A gym task is plain data, stored as is in ``skill.json`` so a library rebuilds the exact env:

- ``env_id``: a registered id (``"LunarLander-v3"``, ``"my_pkg.envs:MyEnv-v0"``: gymnasium
  imports ``my_pkg.envs`` first) or an entry point ``"module:Class"`` (a class or a function
  returning an env; used when the text after the colon is not a registered id);
- ``kwargs``: ``gymnasium.make`` keyword arguments (JSON values);
- ``wrappers``: observation wrappers by import path, applied in order (``"module:Class"``);
- ``max_episode_steps``: overrides the env spec's limit (else the spec's, else 1000);
- ``task_index`` / ``num_tasks``: task conditioning, a one-hot of ``task_index`` among
  ``num_tasks`` appended to the (flattened) observation;
- ``max_return``: the best episode return when known (scores are normalised by it).

Text form (``parse_task``): ``gym:ENV_ID?key=value,...`` where values are JSON-ish
(``true``, ``3``, ``-5.0``, ``none``, else a string) and the reserved keys ``wrappers``
(import paths joined by ``+``), ``max_episode_steps``, ``task_index``, ``num_tasks``,
``max_return`` and ``name`` set the fields of the same name; every other key is a kwarg.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field

from skillbank.config import Config
from skillbank.errors import SkillbankError
from skillbank.tasks.families import FamilyInfo
from skillbank.tasks.spec import TaskSpec, key_values

DEFAULT_EPISODE_STEPS = 1000
GYM_FAMILIES = ("gym", "metaworld")
RESERVED = ("wrappers", "max_episode_steps", "task_index", "num_tasks", "max_return", "name")


class GymTaskError(SkillbankError, ValueError):
    """A gym task that cannot be built: bad id, entry point, kwargs, space or wrapper."""


def _jsonable(task: str, key: str, value: object) -> Any:
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise GymTaskError(
            f"task {task!r}: field {key}: {value!r} is not plain JSON data ({exc})"
        ) from None


@dataclass(frozen=True, eq=False)
class GymTaskSpec(TaskSpec):
    """One task from a Gymnasium environment (module docstring); compares by value."""

    family: str = "gym"
    params: dict[str, float] = field(default_factory=dict)
    name: str = ""
    env_id: str = ""
    kwargs: dict[str, Any] = field(default_factory=dict)
    wrappers: tuple[str, ...] = ()
    max_episode_steps: int | None = None
    task_index: int | None = None
    num_tasks: int | None = None
    max_return: float | None = None

    def __post_init__(self) -> None:
        label = self.name or self.env_id
        if self.family not in GYM_FAMILIES:
            raise GymTaskError(f"task {label!r}: field family: must be one of {GYM_FAMILIES}")
        if self.params:
            raise GymTaskError(f"task {label!r}: field params: gym tasks take kwargs, not params")
        if not isinstance(self.env_id, str) or not self.env_id.strip():
            raise GymTaskError(f"task {label!r}: field env_id: must be a non-empty string")
        if not isinstance(self.kwargs, dict):
            raise GymTaskError(f"task {label!r}: field kwargs: must be a table/dict")
        kwargs = _jsonable(label, "kwargs", self.kwargs)
        object.__setattr__(self, "kwargs", dict(sorted(kwargs.items())))
        wrappers = (self.wrappers,) if isinstance(self.wrappers, str) else tuple(self.wrappers)
        for w in wrappers:
            if not isinstance(w, str) or ":" not in w:
                raise GymTaskError(f"task {label!r}: field wrappers: {w!r} is not 'module:Class'")
        object.__setattr__(self, "wrappers", wrappers)
        for key in ("max_episode_steps", "task_index", "num_tasks"):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise GymTaskError(f"task {label!r}: field {key}: must be an integer")
        if self.max_episode_steps is not None and self.max_episode_steps < 1:
            raise GymTaskError(f"task {label!r}: field max_episode_steps: must be >= 1")
        if (self.task_index is None) != (self.num_tasks is None):
            raise GymTaskError(f"task {label!r}: field task_index: give it with num_tasks")
        if self.num_tasks is not None and not 0 <= self.task_index < self.num_tasks:  # type: ignore[operator]
            raise GymTaskError(f"task {label!r}: field task_index: must be in [0, num_tasks)")
        if self.max_return is not None:
            object.__setattr__(self, "max_return", float(self.max_return))
        if not self.name:
            object.__setattr__(self, "name", self.default_name())

    def default_name(self) -> str:
        """``gym:ENV_ID`` plus the kwargs in text form."""
        items = [f"{k}={_format(v)}" for k, v in self.kwargs.items()]
        if self.wrappers:
            items.append("wrappers=" + "+".join(self.wrappers))
        for key in ("max_episode_steps", "task_index", "num_tasks"):
            if getattr(self, key) is not None:
                items.append(f"{key}={getattr(self, key)}")
        text = f"{self.family}:{self.env_id}"
        return text + ("?" + ",".join(items) if items else "")

    def _key(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GymTaskSpec) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    @property
    def info(self) -> FamilyInfo:
        """Episode limit (the override, else the env spec's, else 1000) and ``max_return``."""
        cached = self.__dict__.get("_info")
        if cached is None:
            from skillbank.tasks.gym_env import registered_limit

            limit = self.max_episode_steps or registered_limit(self) or DEFAULT_EPISODE_STEPS
            cached = FamilyInfo(
                name=self.family,
                gym_id=self.env_id,
                defaults={},
                positive=frozenset(),
                max_episode_steps=int(limit),
                max_return=self.max_return,
                mujoco=self.family == "metaworld" or "mujoco" in self.env_id.lower(),
            )
            object.__setattr__(self, "_info", cached)
        return cached

    def full_params(self) -> dict[str, float]:
        return {}

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form; ``task_from_dict(spec.to_dict()) == spec``."""
        return {
            "family": self.family,
            "name": self.name,
            "env_id": self.env_id,
            "kwargs": dict(self.kwargs),
            "wrappers": list(self.wrappers),
            "max_episode_steps": self.max_episode_steps,
            "task_index": self.task_index,
            "num_tasks": self.num_tasks,
            "max_return": self.max_return,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GymTaskSpec:
        """Inverse of ``to_dict``; unknown keys raise GymTaskError."""
        if not isinstance(d, dict):
            raise GymTaskError(f"a task spec must be a dict, got {type(d).__name__}")
        allowed = set(cls.__dataclass_fields__) - {"params"}
        extra = sorted(set(d) - allowed)
        if extra:
            raise GymTaskError(
                f"task {d.get('name') or d.get('env_id')!r}: unknown field(s) {extra}; "
                f"valid: {sorted(allowed)}"
            )
        return cls(**{**d, "wrappers": tuple(d.get("wrappers") or ())})

    def conditioned(self, task_index: int, num_tasks: int) -> GymTaskSpec:
        """This task with a one-hot task id (``task_index`` of ``num_tasks``) appended."""
        d = self.to_dict()
        d.update(task_index=task_index, num_tasks=num_tasks)
        d["name"] = (
            "" if self.name == self.default_name() else f"{self.name}#{task_index}/{num_tasks}"
        )
        return GymTaskSpec.from_dict(d)


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


def _parse_value(text: str) -> Any:
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return text.strip()
    if isinstance(value, float) and value != value:  # NaN
        return text.strip()
    return value


def parse_gym_task(text: str) -> GymTaskSpec:
    """``gym:ENV_ID?key=value,...`` (or ``metaworld:...``) -> GymTaskSpec (module docstring)."""
    family, _, rest = text.strip().partition(":")
    env_id, _, query = rest.partition("?")
    fields: dict[str, Any] = {"family": family.strip(), "env_id": env_id.strip()}
    kwargs: dict[str, Any] = {}
    for key, raw in key_values(query, text, GymTaskError):
        if key in fields:
            raise GymTaskError(f"parameter {key!r} given twice in task {text!r}")
        if key == "wrappers":
            fields[key] = tuple(w.strip() for w in raw.split("+") if w.strip())
        elif key == "name":
            fields[key] = raw.strip()
        elif key in RESERVED:
            fields[key] = _parse_value(raw)
        else:
            kwargs[key] = _parse_value(raw)
    if family.strip() == "metaworld":
        from skillbank.tasks.metaworld_tasks import metaworld_task

        return metaworld_task(fields.pop("env_id"), **{**fields, "kwargs": kwargs})
    return GymTaskSpec(**fields, kwargs=kwargs)


class GymTaskConfig(Config):
    """A ``[task]`` table in TOML: ``env_id = "LunarLander-v3"``, ``kwargs = {gravity = -5.0}``."""

    env_id: str
    """Registered Gymnasium id (``"my_pkg.envs:MyEnv-v0"`` imports the module) or an entry
    point ``"module:Class"``."""
    kwargs: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments of ``gymnasium.make``."""
    wrappers: list[str] = Field(default_factory=list)
    """Observation wrappers by import path (``"module:Class"``), applied in order."""
    max_episode_steps: int | None = None
    """Episode limit; default: the env spec's, else 1000."""
    task_index: int | None = None
    """Task conditioning: index of this task in the one-hot appended to the observation."""
    num_tasks: int | None = None
    """Task conditioning: length of the one-hot."""
    max_return: float | None = None
    """Best achievable episode return, when known (normalises scores)."""
    name: str = ""
    """Display name; default ``gym:ENV_ID?kwargs``."""

    def to_spec(self) -> GymTaskSpec:
        return GymTaskSpec.from_dict({**self.model_dump(), "family": "gym"})


def task_from_dict(d: dict[str, Any]) -> TaskSpec:
    """A task spec from its ``to_dict`` form, for every family (gym tasks included)."""
    if isinstance(d, dict) and d.get("family") in GYM_FAMILIES:
        return GymTaskSpec.from_dict(d)
    return TaskSpec.from_dict(d)
