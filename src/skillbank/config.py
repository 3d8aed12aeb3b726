"""Typed configs from TOML: unknown fields and wrong types name the file and the field."""

from __future__ import annotations

import dataclasses
import sys
import typing
from pathlib import Path
from typing import Any, TypeVar

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file is unreadable or has a bad field; the message names both."""


def read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(Path(path).read_text())
    except FileNotFoundError as e:
        raise ConfigError(f"{path}: file not found") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from e


def _check_type(value: Any, annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return any(_check_type(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if origin is list:
        return isinstance(value, list)
    return True


def update_dataclass(obj: T, table: dict[str, Any], where: str) -> T:
    """``obj`` with the fields in ``table`` replaced, each checked against its type."""
    assert dataclasses.is_dataclass(obj)
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for key, value in table.items():
        if key not in names:
            raise ConfigError(f"{where}: unknown field {key!r}; valid fields: {sorted(names)}")
        if not _check_type(value, hints[key]):
            raise ConfigError(
                f"{where}: field {key!r} must be {hints[key]}, got {type(value).__name__}"
            )
    vals = {k: (float(v) if hints[k] is float else v) for k, v in table.items()}
    return dataclasses.replace(obj, **vals)  # type: ignore[type-var]


def load_table(path: Path, name: str, base: T) -> T:
    """``base`` (a dataclass) updated with the ``[name]`` table of a TOML file, the file's
    only table; fields are type-checked and every error names the file and field."""
    data = read_toml(path)
    unknown = set(data) - {name}
    if unknown:
        raise ConfigError(f"{path}: unknown table(s) {sorted(unknown)}; expected [{name}]")
    table = data.get(name, {})
    if not isinstance(table, dict):
        raise ConfigError(
            f"{path}: field {name!r} must be a table ([{name}]), got {type(table).__name__}"
        )
    try:
        return update_dataclass(base, table, f"{path} [{name}]")
    except ValueError as e:  # a dataclass's own __post_init__ check
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"{path} [{name}]: {e}") from e


def load_ppo_toml(path: Path, base: T) -> T:
    """Apply the ``[ppo]`` table of a TOML file to a PPOConfig."""
    return load_table(path, "ppo", base)
