"""API keys: read from an environment variable or a file, compared in constant time.

A key file holds one key per line (``#`` comments and blank lines ignored). Each key is
one *owner*: the models, futures, sessions and checkpoints created with a key are visible
to that key only. The SDK requires keys to start with ``tml-``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from skillbank.errors import ConfigError

ENV_KEYS = "SKILLBANK_SERVE_API_KEYS"
"""Comma-separated API keys (used when no key file is given)."""


def read_keys(key_file: str | None, env: str = ENV_KEYS) -> list[str]:
    """The accepted keys; ConfigError naming the file or variable when there are none."""
    if key_file:
        path = Path(key_file)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"{path}: cannot read the API key file ({e})") from e
        keys = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
        where = str(path)
    else:
        keys = [k.strip() for k in os.environ.get(env, "").split(",") if k.strip()]
        where = f"environment variable {env}"
    if not keys:
        raise ConfigError(f"{where}: no API key (the server never runs without one)")
    for key in keys:
        if len(key) < 16:
            raise ConfigError(f"{where}: an API key is shorter than 16 characters")
    return keys


class KeyRing:
    """Maps a presented key to its owner id (a digest), in constant time per key."""

    def __init__(self, keys: list[str]) -> None:
        self._keys = [k.encode("utf-8") for k in keys]

    @staticmethod
    def owner_of(key: str) -> str:
        return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]

    def check(self, presented: str | None) -> str | None:
        """The owner id of ``presented``, or None. Every key is compared (no early exit)."""
        if not presented:
            return None
        given = presented.encode("utf-8")
        found = False
        for key in self._keys:
            found |= hmac.compare_digest(given, key)
        return self.owner_of(presented) if found else None
