"""A user's own base network, built by import path (base kind ``module``).

``base/config.json`` holds ``{"kind": "module", "kwargs": {"factory": "pkg.nets:build",
"obs_dim": D, "action_kind": "discrete" | "box", "action_dim": A, "kwargs": {...}}}``;
the base is ``build(obs_dim=D, action_kind=..., action_dim=A, **kwargs)``, any ``nn.Module``
whose ``forward(x [B, D])`` returns what ``ActorCritic``'s does: ``(policy_out, value [B])``
with ``policy_out`` the logits ``[B, A]`` (Discrete) or mean and log-std ``[B, 2A]`` (Box).
Observations arrive flat (``[B, D]``); a CNN reshapes them itself. LoRA goes into the
modules named by the library's ``target_modules`` (every ``nn.Linear`` when None), so PEFT
loads the skills on this base as on every other.
"""

from __future__ import annotations

import importlib
import json
from typing import Any

import torch
from torch import nn

from skillbank.errors import SkillbankError

ACTION_KINDS = ("discrete", "box")


class ModelError(SkillbankError, ValueError):
    """A ``module`` base that cannot be built or does not return what a policy must."""


def module_base_config(
    factory: str, obs_dim: int, action_kind: str, action_dim: int, **kwargs: Any
) -> dict[str, Any]:
    """The ``kwargs`` of a ``module`` base config (what ``build_module_base`` takes)."""
    return {
        "factory": factory,
        "obs_dim": int(obs_dim),
        "action_kind": action_kind,
        "action_dim": int(action_dim),
        "kwargs": json.loads(json.dumps(kwargs)),
    }


def _import(path: str) -> Any:
    module, sep, attr = path.partition(":")
    if not sep or not module or not attr:
        raise ModelError(f"field kwargs.factory: {path!r} is not 'module:function'")
    try:
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ModelError(f"field kwargs.factory: {path!r} cannot be imported: {exc}") from None
    if not callable(obj):
        raise ModelError(f"field kwargs.factory: {path!r} is not callable")
    return obj


def build_module_base(kw: dict[str, Any]) -> nn.Module:
    """Build and check a user's base from ``module_base_config`` data."""
    allowed = {"factory", "obs_dim", "action_kind", "action_dim", "kwargs"}
    extra = sorted(set(kw) - allowed)
    missing = sorted(allowed - {"kwargs"} - set(kw))
    if extra or missing:
        raise ModelError(f"field kwargs: unknown keys {extra}, missing keys {missing}")
    if kw["action_kind"] not in ACTION_KINDS:
        raise ModelError(f"field kwargs.action_kind: must be one of {ACTION_KINDS}")
    fn = _import(str(kw["factory"]))
    obs_dim, kind, dim = int(kw["obs_dim"]), kw["action_kind"], int(kw["action_dim"])
    try:
        net = fn(obs_dim=obs_dim, action_kind=kind, action_dim=dim, **dict(kw.get("kwargs") or {}))
    except TypeError as exc:
        raise ModelError(f"field kwargs.kwargs: {kw['factory']} rejected them: {exc}") from None
    if not isinstance(net, nn.Module):
        raise ModelError(f"field kwargs.factory: {kw['factory']} returned {type(net).__name__}")
    check_policy_outputs(net, obs_dim, kind, dim, str(kw["factory"]))
    return net


def check_policy_outputs(net: nn.Module, obs_dim: int, kind: str, dim: int, what: str) -> None:
    """ModelError unless ``net(x [2, obs_dim])`` is ``(policy_out [2, n], value [2])``."""
    n_out = dim * (2 if kind == "box" else 1)
    with torch.no_grad():
        out = net(torch.zeros(2, obs_dim))
    ok = isinstance(out, tuple) and len(out) == 2 and all(isinstance(t, torch.Tensor) for t in out)
    if not ok or tuple(out[0].shape) != (2, n_out) or tuple(out[1].shape) != (2,):
        shapes = [tuple(t.shape) for t in out] if isinstance(out, tuple) else type(out).__name__
        raise ModelError(
            f"field kwargs.factory: {what}(x [2, {obs_dim}]) must return (policy_out [2, {n_out}], "
            f"value [2]) like ActorCritic; got {shapes}"
        )
