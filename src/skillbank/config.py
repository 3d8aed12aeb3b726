"""Typed configs: pydantic models loaded from TOML and generated into CLI flags.

Every config is a :class:`Config` (``extra="forbid"``, frozen, a docstring per field that
becomes its description and its ``--help`` text). :func:`load_toml` reads a file (or one
table of it) into a model; any problem becomes one :class:`ConfigError` of the form
``FILE: field NAME: problem``. :func:`add_config_args` turns a model's fields into argparse
flags (defaults stated once, in the model) and :func:`config_from_args` applies the flags
a user gave on top of a base config.
"""

from __future__ import annotations

import argparse
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from skillbank.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

M = TypeVar("M", bound="Config")


class Config(BaseModel):
    """Base of every skillbank config: strict fields, immutable, documented."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        strict=True,
        validate_default=True,
        use_attribute_docstrings=True,
        protected_namespaces=(),
    )

    def replace(self: M, **changes: Any) -> M:
        """A validated copy with ``changes`` applied (like ``dataclasses.replace``)."""
        data = {**self.model_dump(), **changes}
        return validate(type(self), data, type(self).__name__)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (what is written next to results)."""
        return self.model_dump(mode="json")


def unique_items(field: str, problem: str) -> Any:
    """A field validator (assign it in the class body) of the list ``field``: ValueError
    ``problem`` (``{}`` = the list) when an item repeats in it."""

    def check(cls: type, value: list[Any]) -> list[Any]:
        if len(set(value)) != len(value):
            raise ValueError(problem.format(value))
        return value

    return field_validator(field)(check)


def _problem(err: Any) -> str:
    msg = str(err.get("msg", "invalid"))
    if err.get("type") == "extra_forbidden":
        return "unknown field"
    if "input" in err and err.get("type") not in ("missing",):
        value = err["input"]
        shown = repr(value) if not isinstance(value, dict) else "a table"
        if len(shown) > 60:
            shown = shown[:57] + "..."
        return f"{msg} (got {shown})"
    return msg


def format_validation_error(where: str, error: ValidationError, model: type[BaseModel]) -> str:
    """``WHERE: field NAME: problem`` for each error (one line each, first ones only)."""
    lines = []
    for err in error.errors()[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ())) or "(top level)"
        line = f"{where}: field {loc!r}: {_problem(err)}"
        if err.get("type") == "extra_forbidden":
            line += f"; valid fields: {sorted(model.model_fields)}"
        lines.append(line)
    return "\n".join(lines)


def validate(model: type[M], data: Any, where: str) -> M:
    """``model`` built from ``data``; a :class:`ConfigError` naming ``where`` otherwise."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(where, e, model)) from None


def read_toml(path: Path) -> dict[str, Any]:
    """A TOML file as a dict; missing or invalid files raise a ConfigError naming them."""
    try:
        return tomllib.loads(Path(path).read_text())
    except FileNotFoundError as e:
        raise ConfigError(f"{path}: file not found") from e
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read ({e})") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from e


def load_toml(path: Path, model: type[M], table: str | None = None, base: M | None = None) -> M:
    """Load ``path`` (or its ``[table]``, which must then be the file's only table) into
    ``model``, on top of ``base`` when given. Errors read ``FILE: field NAME: problem``."""
    data = read_toml(path)
    where = str(path)
    if table is not None:
        unknown = set(data) - {table}
        if unknown:
            raise ConfigError(f"{path}: unknown table(s) {sorted(unknown)}; expected [{table}]")
        data = data.get(table, {})
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: field {table!r}: must be a table ([{table}])")
        where = f"{path} [{table}]"
    return validate_table(model, data, where, base)


def validate_table(model: type[M], data: dict[str, Any], where: str, base: M | None = None) -> M:
    """``model`` from ``data`` laid over ``base`` (its own defaults when None)."""
    if base is not None:
        unknown = set(data) - set(model.model_fields)
        if unknown:
            name = sorted(unknown)[0]
            valid = sorted(model.model_fields)
            raise ConfigError(f"{where}: field {name!r}: unknown field; valid fields: {valid}")
        data = {**base.model_dump(), **data}
    return validate(model, data, where)


# ------------------------------------------------------------------------- CLI flags
def _flag_type(annotation: Any) -> tuple[Any, dict[str, Any]]:
    """argparse ``type`` and extra kwargs for a field annotation."""
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin in (typing.Union, types.UnionType) and len(args) == 1:
        return _flag_type(args[0])
    if origin is Literal:
        return type(args[0]), {"choices": list(args)}
    if annotation is bool:
        return _bool, {"metavar": "BOOL"}
    if annotation in (int, float, str, Path):
        return annotation, {}
    if origin in (list, tuple):
        inner = args[0] if args else str
        kind = inner if inner in (int, float, str) else str
        return _comma_list(kind), {"metavar": "A,B,..."}
    return str, {}


def _bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _comma_list(kind: type) -> Any:
    def parse(text: str) -> list[Any]:
        try:
            return [kind(t.strip()) for t in text.split(",") if t.strip()]
        except ValueError:
            msg = f"expected a comma-separated list, got {text!r}"
            raise argparse.ArgumentTypeError(msg) from None

    return parse


def add_config_args(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    model: type[Config],
    only: typing.Iterable[str] | None = None,
    skip: typing.Iterable[str] = (),
    prefix: str = "",
) -> None:
    """Add ``--FIELD-NAME`` for each field of ``model`` (help = the field's docstring and
    default). Flags default to "not given", so :func:`config_from_args` changes only the
    fields the user named."""
    names = list(only) if only is not None else list(model.model_fields)
    for name in names:
        if name in skip:
            continue
        field = model.model_fields[name]
        kind, extra = _flag_type(field.annotation)
        desc = (field.description or "").strip().replace("%", "%%")
        default = field.get_default(call_default_factory=True)
        help_text = f"{desc} (default: {default})" if desc else f"default: {default}"
        parser.add_argument(
            f"--{prefix}{name.replace('_', '-')}",
            dest=f"{prefix.replace('-', '_')}{name}",
            type=kind,
            default=argparse.SUPPRESS,
            help=help_text,
            **extra,
        )


def config_from_args(args: argparse.Namespace, base: M, prefix: str = "") -> M:
    """``base`` with the fields the user gave as flags (see :func:`add_config_args`)."""
    given = vars(args)
    key = prefix.replace("-", "_")
    changes = {
        name: given[f"{key}{name}"] for name in type(base).model_fields if f"{key}{name}" in given
    }
    if not changes:
        return base
    return validate(type(base), {**base.model_dump(), **changes}, "command line")


__all__ = [
    "Config",
    "ConfigError",
    "add_config_args",
    "config_from_args",
    "format_validation_error",
    "load_toml",
    "read_toml",
    "validate",
    "validate_table",
]
