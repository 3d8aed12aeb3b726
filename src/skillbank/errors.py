"""One error base for everything a user can cause.

Every error that a user's input can trigger (a bad config, file, name, adapter, rollout,
environment) subclasses :class:`SkillbankError`; the command line catches that type alone
and prints its message on one line, while real bugs keep their tracebacks. The subclasses
also keep the builtin type they used to be (``ValueError``, ``KeyError``, ...) so code that
caught those still works.
"""

from __future__ import annotations


class SkillbankError(Exception):
    """A user-facing error; the message names the file and field (or task, run, row)."""


class ConfigError(SkillbankError, ValueError):
    """A config file, table or argument is unreadable or has a bad field."""


class FormatError(SkillbankError, ValueError):
    """A file on disk is missing, unreadable, or not in the expected format."""


__all__ = ["ConfigError", "FormatError", "SkillbankError"]
