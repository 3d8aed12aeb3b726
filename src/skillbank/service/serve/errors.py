"""Errors in the Tinker SDK's shape: ``{"error": MESSAGE, "category": "user"}``.

Raised anywhere while serving a request; the app turns them into an HTTP answer (for a
call that is refused at once) or a failed future (``RequestFailedError`` in the SDK).
Messages name the field: ``field NAME: problem``.
"""

from __future__ import annotations

from typing import Any

from skillbank.errors import SkillbankError


class ServeError(SkillbankError, ValueError):
    """A request the server refuses; ``status`` is the HTTP status of a direct answer."""

    def __init__(self, message: str, status: int = 400, category: str = "user") -> None:
        super().__init__(message)
        self.status = status
        self.category = category

    def body(self) -> dict[str, Any]:
        return {"error": str(self), "category": self.category}


def field_error(field: str, problem: str, status: int = 400) -> ServeError:
    """``field NAME: problem``."""
    return ServeError(f"field {field!r}: {problem}", status)


def not_found(what: str, field: str, value: str) -> ServeError:
    """The same answer for an unknown id and another tenant's id (nothing leaks)."""
    return ServeError(f"field {field!r}: no {what} {value!r} for this API key", 404)


class Unsupported(ServeError):
    """A Tinker call or option this server does not implement (HTTP 400, never 5xx: the
    SDK retries server errors for minutes, which would read as a hang)."""

    def __init__(self, what: str) -> None:
        super().__init__(f"not supported by skillbank serve: {what}", 400)
