"""The library's error type and its skill-name rule (shared by every library module)."""

from __future__ import annotations

import re

from skillbank.errors import SkillbankError

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")


class LibraryError(SkillbankError, ValueError):
    """A library folder, skill or argument is not usable; the message names file and field."""


def check_skill_name(name: str) -> str:
    """``name`` if it is a folder-safe skill name, else a LibraryError."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or name in (".", ".."):
        raise LibraryError(
            f"skill name {name!r} is not allowed: use letters, digits, '_', '-', '.' (<= 100)"
        )
    return name
