"""PolicyLibrary: a base plus named skills on disk, batched act(), export, memory report."""

from skillbank.library.core import PolicyLibrary, load_policy

__all__ = ["PolicyLibrary", "load_policy"]
