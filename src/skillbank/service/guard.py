"""How every service entry point reports a user's error: one line, exit code 2.

A ``SkillbankError`` (bad config, path, adapter, rollout, checkpoint, a held lock) and the
file errors a user causes (a missing or existing file, no permission) print ``error: ...``
on one line; anything else is a bug and keeps its traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

from skillbank.errors import SkillbankError

A = TypeVar("A")

USER_FILE_ERRORS = (FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError)


def guard(handler: Callable[[A], None]) -> Callable[[A], None]:
    """``handler`` with a user's error printed as one line and ``SystemExit(2)``."""

    def run(args: A) -> None:
        try:
            handler(args)
        except SkillbankError as e:
            print(f"error: {e}", file=sys.stderr)
            raise SystemExit(2) from None
        except USER_FILE_ERRORS as e:
            name = f"{e.filename}: " if getattr(e, "filename", None) else ""
            print(f"error: {name}{e.strerror or e}", file=sys.stderr)
            raise SystemExit(2) from None

    return run
