"""What the PPO verbs check about tasks: their spaces, their fit to a library's base, the
skill name of a task."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import TypeVar

from skillbank.errors import ConfigError, SkillbankError
from skillbank.library.core import LibraryError, PolicyLibrary
from skillbank.tasks import TaskSpec, get_suite, parse_task
from skillbank.tasks.spaces import spaces_of

T = TypeVar("T")


def check_compatible(lib: PolicyLibrary, specs: Sequence[TaskSpec]) -> None:
    """Every task must have the base's observation and action shapes."""
    kw = lib.base_config["kwargs"]
    base_shape = (kw["obs_dim"], kw["action_kind"], kw["action_dim"])
    for spec in specs:
        obs_dim, kind, dim, _ = spaces_of(spec)
        if (obs_dim, kind, dim) != base_shape:
            raise LibraryError(
                f"{lib.path / 'base' / 'config.json'}: base expects obs [{base_shape[0]}] and "
                f"{base_shape[1]} actions [{base_shape[2]}], task {spec.name!r} has obs "
                f"[{obs_dim}] and {kind} actions [{dim}]"
            )


def skill_name(spec: TaskSpec) -> str:
    """Folder-safe skill name for a task (``family/variant`` -> ``family-variant``)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in spec.name.replace("/", "-"))
    return safe.strip("-.")[:100] or "task"


def _named(field: str, where: str, read: Callable[[], T]) -> T:
    """``read()``, its ValueError (a bad name from the user) as a ConfigError naming
    ``where`` and ``field``."""
    try:
        return read()
    except ValueError as e:
        if isinstance(e, SkillbankError):
            raise
        raise ConfigError(f"{where}: field {field}: {e}") from None


def user_tasks(
    suite: str | None, tasks: Sequence[str] = (), where: str = "command line"
) -> list[TaskSpec]:
    """The tasks of ``suite`` (if any) then each of ``tasks`` parsed; a bad suite or task
    is a ConfigError naming ``where`` and the field."""
    specs = list(_named("suite", where, lambda: get_suite(suite))) if suite else []
    return specs + [_named("task", where, partial(parse_task, t)) for t in tasks]
