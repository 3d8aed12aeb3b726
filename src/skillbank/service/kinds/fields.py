"""What every run kind's config shares: field types, the field check, the rank check."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field

from skillbank.config import ConfigError

SEED_LIMIT = 2**63 - 1
"""Seeds are in ``[0, SEED_LIMIT)``: every generator and environment accepts them."""
Seed = Annotated[int, Field(ge=0, lt=SEED_LIMIT)]
PositiveFinite = Annotated[float, Field(gt=0.0, allow_inf_nan=False)]
"""A float > 0 that is not inf or nan (TOML has both)."""


def need(ok: bool, path: Path, name: str, problem: str) -> None:
    """ConfigError ``PATH: field NAME: problem`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"{path}: field {name!r}: {problem}")


def check_rank(rank: int, path: Path, capacity: int) -> None:
    """The run's LoRA rank must fit the trainer's slots."""
    need(
        rank <= capacity,
        path,
        "rank",
        f"{rank} is above the trainer's rank capacity {capacity}",
    )


def mix_seed(seed: int, salt: int, n: int) -> int:
    """A generator seed from a run seed, a stream ``salt`` and a step ``n``, kept below
    2**63 whatever the run seed (``seed * salt`` alone overflows int64)."""
    return (seed * salt + n) % (2**63)
