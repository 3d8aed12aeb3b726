"""Argument types shared by the command lines: comma-separated lists, and the one
``--threads`` flag every verb that runs torch takes."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
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


def text_verb(
    subparsers: argparse._SubParsersAction,
    name: str,
    help: str,
    description: str | None = None,
    epilog: str | None = None,
) -> argparse.ArgumentParser:
    """Add verb ``name`` whose --help texts (``description``, ``epilog``: worked examples)
    keep their line breaks."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name,
        help=help,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser


THREADS_HELP = "torch threads (default {default}: RL batches are small, one thread is fastest)"


def positive_int(text: str) -> int:
    """An integer >= 1; anything else is an argparse error."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def add_threads_arg(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    default: int = 1,
    why: str | None = None,
) -> None:
    """``--threads N`` (torch threads), the same flag for every verb: default 1 unless a
    verb has a reason (``why``, shown in --help). Handlers call ``set_threads(args)``."""
    text = (
        THREADS_HELP.format(default=default)
        if why is None
        else (f"torch threads (default {default}: {why})")
    )
    parser.add_argument("--threads", type=positive_int, default=default, help=text)


def set_threads(args: argparse.Namespace) -> None:
    """Apply ``--threads`` (imports torch: call it in a handler, not at parse time)."""
    import torch

    torch.set_num_threads(args.threads)


def add_report_parser(
    subparsers: argparse._SubParsersAction,
    verb: str,
    producer: str,
    handler: Callable[[argparse.Namespace], None],
) -> argparse.ArgumentParser:
    """``skillbank VERB DIR``: rebuild DIR/report.html from the DIR/results.json that
    ``skillbank PRODUCER`` wrote."""
    text = f"rebuild DIR/report.html from DIR/results.json (of 'skillbank {producer}')"
    p = subparsers.add_parser(verb, help=text, description=text[0].upper() + text[1:] + ".")
    p.add_argument("dir", type=Path, help=f"output folder of a run of 'skillbank {producer}'")
    p.set_defaults(handler=handler)
    return p
