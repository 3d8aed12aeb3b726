"""Reward functions as users write them for TRL: found by import path, called in batches.

A reward function has TRL's ``reward_funcs`` signature::

    def exact_match(completions, **kwargs) -> list[float]: ...

called with keyword arguments ``prompts`` (one per completion), ``completions`` (strings,
or ``[{"role": "assistant", "content": text}]`` lists for conversational prompts)
and every other column of the dataset (one value per
completion, e.g. ``answer`` or ``completion``). It returns one float per completion (None
= not applicable to that row, counted as 0). Several functions combine as a weighted sum.
``load_reward("my_rewards:exact_match")`` imports ``my_rewards`` (from the working
directory too) or ``path/to/file.py:exact_match``.

Anything wrong (import fails, the function raises, returns the wrong number of values, a
NaN, a non-number) is one ``RewardError`` naming the function and the row.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skillbank.errors import SkillbankError
from skillbank.lm.domains import similarity as _similarity

RewardFn = Callable[..., Sequence[float | None]]


class RewardError(SkillbankError, ValueError):
    """A reward function that cannot be imported or returned something unusable."""


def _import_file(path: Path) -> Any:
    name = f"skillbank_user_{path.stem}_{abs(hash(str(path.absolute())))}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_object(spec: str, what: str = "reward function") -> Any:
    """The object named ``module:attr`` or ``file.py:attr``; RewardError if not found."""
    mod_name, sep, attr = spec.rpartition(":")
    if not sep or not mod_name or not attr:
        raise RewardError(f"{what} {spec!r}: expected MODULE:NAME or FILE.py:NAME")
    try:
        if mod_name.endswith(".py"):
            module = _import_file(Path(mod_name))
        else:
            if os.getcwd() not in sys.path:
                sys.path.insert(0, os.getcwd())
            module = importlib.import_module(mod_name)
    except Exception as e:  # a user's module may raise anything on import
        raise RewardError(f"{what} {spec!r}: cannot import {mod_name!r} ({e})") from e
    try:
        return getattr(module, attr)
    except AttributeError:
        raise RewardError(f"{what} {spec!r}: {mod_name!r} has no attribute {attr!r}") from None


def load_reward(spec: str) -> RewardFn:
    fn = load_object(spec)
    if not callable(fn):
        raise RewardError(f"reward function {spec!r}: not callable")
    return fn


def _check(name: str, values: Any, n: int) -> list[float]:
    if not isinstance(values, Sequence) and not hasattr(values, "tolist"):
        raise RewardError(f"reward function {name}: returned {type(values).__name__}, not a list")
    vals = list(values.tolist() if hasattr(values, "tolist") else values)
    if len(vals) != n:
        raise RewardError(f"reward function {name}: returned {len(vals)} values for {n} rows")
    out = []
    for i, v in enumerate(vals):
        if v is None:
            out.append(0.0)
            continue
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise RewardError(f"reward function {name}: row {i}: {v!r} is not a number")
        if not math.isfinite(float(v)):
            raise RewardError(f"reward function {name}: row {i}: returned {v} (not finite)")
        out.append(float(v))
    return out


@dataclass
class Rewards:
    """Weighted reward functions: ``__call__`` returns one combined reward per completion."""

    functions: list[RewardFn]
    weights: list[float]
    names: list[str]

    @classmethod
    def from_specs(cls, specs: Sequence[str], weights: Sequence[float] | None = None) -> Rewards:
        if not specs:
            raise RewardError("no reward function given (--reward MODULE:FUNCTION)")
        w = list(weights) if weights else [1.0] * len(specs)
        if len(w) != len(specs):
            raise RewardError(f"{len(w)} reward weights for {len(specs)} reward functions")
        return cls([load_reward(s) for s in specs], [float(x) for x in w], list(specs))

    def per_function(
        self, completions: list[Any], columns: dict[str, list[Any]]
    ) -> list[list[float]]:
        """[functions][rows] of checked values."""
        out = []
        for fn, name in zip(self.functions, self.names):
            try:
                values = fn(completions=completions, **columns)
            except RewardError:
                raise
            except Exception as e:  # the user's function: name it and what it raised
                raise RewardError(f"reward function {name}: raised {type(e).__name__}: {e}") from e
            out.append(_check(name, values, len(completions)))
        return out

    def __call__(self, completions: list[Any], columns: dict[str, list[Any]]) -> list[float]:
        per = self.per_function(completions, columns)
        return [sum(w * v[i] for w, v in zip(self.weights, per)) for i in range(len(completions))]


# ----------------------------------------------------------------- built-in rewards
def _text(c: Any) -> str:
    if isinstance(c, list):  # conversational: [{"role": "assistant", "content": ...}]
        return str(c[-1].get("content", "")) if c else ""
    return str(c)


def _refs(kwargs: dict[str, Any], n: int) -> list[str]:
    for key in ("answer", "solution", "completion"):
        if key in kwargs:
            return [_text(x) for x in kwargs[key]]
    raise RewardError("built-in reward: the dataset needs an 'answer' or 'completion' column")


def exact_match(completions: list[Any], **kwargs: Any) -> list[float]:
    """1.0 where the completion (stripped) equals the reference answer column."""
    refs = _refs(kwargs, len(completions))
    return [float(_text(c).strip() == r.strip()) for c, r in zip(completions, refs)]


def similarity(completions: list[Any], **kwargs: Any) -> list[float]:
    """difflib's ratio between the completion and the reference answer column, in [0, 1]."""
    refs = _refs(kwargs, len(completions))
    return [_similarity(_text(c), r) for c, r in zip(completions, refs)]
