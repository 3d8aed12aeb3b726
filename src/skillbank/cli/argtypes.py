"""Argument types shared by the command lines: comma-separated lists."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def _parts(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _list_of(kind: Callable[[str], T], what: str) -> Callable[[str], list[T]]:
    def parse(text: str) -> list[T]:
        try:
            return [kind(t) for t in _parts(text)]
        except ValueError:
            msg = f"expected comma-separated {what}, got {text!r}"
            raise argparse.ArgumentTypeError(msg) from None

    return parse


name_list: Callable[[str], list[str]] = _parts
"""``"a, b,c"`` -> ``["a", "b", "c"]``."""
int_list = _list_of(int, "integers")
"""``"0,3,2"`` -> ``[0, 3, 2]``; anything else is an argparse error."""
float_list = _list_of(float, "numbers")
"""``"0.01,0.05"`` -> ``[0.01, 0.05]``; anything else is an argparse error."""
