"""TEMPORARY: dataclass config helpers still used by configs not yet ported to skillbank.config
(pydantic). Delete this module once every config is a skillbank.config.Config."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, TypeVar

from skillbank.config import ConfigError, read_toml

T = TypeVar("T")


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
