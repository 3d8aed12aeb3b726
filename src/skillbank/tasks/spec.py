"""TaskSpec: one environment configuration, and ``parse_task`` to read one from text."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from skillbank.tasks.families import FamilyInfo, get_family, list_families


def format_value(value: float) -> str:
    """Short text for a float that parses back to exactly the same float."""
    short = f"{value:g}"
    return short if float(short) == value else repr(value)


def default_name(family: str, params: dict[str, float]) -> str:
    """Canonical display name: ``family`` or ``family:k=v,...`` (sorted keys)."""
    if not params:
        return family
    return family + ":" + ",".join(f"{k}={format_value(v)}" for k, v in sorted(params.items()))


@dataclass(frozen=True)
class TaskSpec:
    """One task: a family plus the parameters that differ from the family's defaults.

    Construction validates the family, the parameter names and their values (ValueError
    listing the valid names), converts values to float, drops parameters equal to the default
    (so equal tasks compare equal), and fills ``name`` with the canonical name when empty.
    """

    family: str
    params: dict[str, float] = field(default_factory=dict)
    name: str = ""

    def __post_init__(self) -> None:
        info = get_family(self.family)
        if not isinstance(self.params, dict):
            raise ValueError(f"TaskSpec.params must be a dict, got {type(self.params).__name__}")
        clean: dict[str, float] = {}
        for key, raw in self.params.items():
            if key not in info.defaults:
                raise ValueError(
                    f"unknown parameter {key!r} for family {self.family!r}; "
                    f"valid parameters: {', '.join(sorted(info.defaults))}"
                )
            value = _to_float(self.family, key, raw)
            info.check_value(key, value)
            if value != info.defaults[key]:
                clean[key] = value
        object.__setattr__(self, "params", dict(sorted(clean.items())))
        if not isinstance(self.name, str):
            raise ValueError(f"TaskSpec.name must be a str, got {type(self.name).__name__}")
        if not self.name:
            object.__setattr__(self, "name", default_name(self.family, clean))

    def __hash__(self) -> int:
        return hash((self.family, tuple(self.params.items()), self.name))

    @property
    def info(self) -> FamilyInfo:
        return get_family(self.family)

    def full_params(self) -> dict[str, float]:
        """Every parameter of the family: the defaults updated with ``params``."""
        return {**self.info.defaults, **self.params}

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form; ``TaskSpec.from_dict(spec.to_dict()) == spec``."""
        return {"family": self.family, "params": dict(self.params), "name": self.name}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TaskSpec:
        """Inverse of ``to_dict`` (gym tasks included); unknown or missing keys raise
        ValueError."""
        if isinstance(d, dict) and d.get("family") in ("gym", "metaworld") and cls is TaskSpec:
            from skillbank.tasks.gym_spec import GymTaskSpec

            return GymTaskSpec.from_dict(d)
        if not isinstance(d, dict):
            raise ValueError(f"a task spec must be a dict, got {type(d).__name__}")
        allowed = {"family", "params", "name"}
        extra = set(d) - allowed
        if extra or "family" not in d:
            raise ValueError(
                f"bad task spec {d!r}: keys must be 'family' (required), 'params', 'name'"
            )
        return cls(family=d["family"], params=dict(d.get("params") or {}), name=d.get("name", ""))


def _to_float(family: str, key: str, raw: object) -> float:
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise ValueError(f"{family}: parameter {key}={raw!r} must be a number")
    return float(raw)


def key_values(rest: str, text: str, error: type[Exception] = ValueError) -> list[tuple[str, str]]:
    """``"a=1, b=x"`` -> ``[("a", "1"), ("b", "x")]``; ``error`` for an item that is not
    ``key=value`` or a key given twice (``text``: the whole task, for the message)."""
    pairs: list[tuple[str, str]] = []
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise error(f"bad parameter {item!r} in task {text!r}: expected key=value")
        if key in dict(pairs):
            raise error(f"parameter {key!r} given twice in task {text!r}")
        pairs.append((key, value))
    return pairs


def parse_task(text: str) -> TaskSpec:
    """Read a task from text.

    Accepted forms: ``"cartpole"`` (family defaults), ``"cartpole:pole_length=1.5,force_mag=5"``
    (family with parameters), a suite task name such as ``"cartpole/long-pole"``, any
    Gymnasium env ``"gym:LunarLander-v3?gravity=-5.0,enable_wind=true"`` and a Meta-World
    task ``"metaworld:reach-v3"`` (``skillbank.tasks.gym_spec``).
    """
    from skillbank.tasks.suites import find_suite_task, list_suite_tasks

    text = text.strip()
    if text.partition(":")[0].strip() in ("gym", "metaworld"):
        from skillbank.tasks.gym_spec import parse_gym_task

        return parse_gym_task(text)
    if ":" in text:
        family, _, rest = text.partition(":")
        family = family.strip()
        get_family(family)
        params: dict[str, float] = {}
        for key, value in key_values(rest, text):
            try:
                params[key] = float(value)
            except ValueError:
                raise ValueError(
                    f"bad value {value!r} for parameter {key!r} in task {text!r}: not a number"
                ) from None
            if not math.isfinite(params[key]):
                raise ValueError(f"parameter {key}={value} in task {text!r} must be finite")
        return TaskSpec(family=family, params=params)
    found = find_suite_task(text)
    if found is not None:
        return found
    if "/" not in text and text in list_families():
        return TaskSpec(family=text)
    raise ValueError(
        f"unknown task {text!r}; valid families: {', '.join(list_families())}; "
        f"valid suite tasks: {', '.join(list_suite_tasks())}"
    )
