"""Standalone policy runner, copied next to every exported skill as ``policy.py``.

It needs only torch and safetensors (no skillbank): it rebuilds the actor from
``model.safetensors`` (``pi.<i>.weight``/``pi.<i>.bias``: Linear layers with tanh between
them), normalises observations with ``config.json``'s ``obs_norm`` and returns greedy
actions::

    from policy import load
    act = load("exported_skill/")
    action = act(obs)            # obs [obs_dim] or [batch, obs_dim] -> action(s)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file


def _mlp(state: dict[str, torch.Tensor], prefix: str) -> torch.nn.Sequential:
    idx = sorted({int(k.split(".")[1]) for k in state if k.startswith(prefix + ".")})
    layers: list[torch.nn.Module] = []
    for n, i in enumerate(idx):
        w, b = state[f"{prefix}.{i}.weight"], state[f"{prefix}.{i}.bias"]
        lin = torch.nn.Linear(w.shape[1], w.shape[0])
        lin.load_state_dict({"weight": w, "bias": b})
        layers.append(lin)
        if n < len(idx) - 1:
            layers.append(torch.nn.Tanh())
    return torch.nn.Sequential(*layers).eval()


def load(folder: str | Path) -> Callable:
    """Return ``act(obs) -> numpy actions`` for the exported policy in ``folder``."""
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    pi = _mlp(load_file(str(folder / "model.safetensors")), "pi")
    kw = config["kwargs"]
    norm = config.get("obs_norm") or {}
    mean = torch.tensor(norm.get("mean", [0.0] * kw["obs_dim"]), dtype=torch.float32)
    var = torch.tensor(norm.get("var", [1.0] * kw["obs_dim"]), dtype=torch.float32)
    inv_std = 1.0 / torch.sqrt(var + 1e-8)

    @torch.no_grad()
    def act(obs):  # noqa: ANN001, ANN202
        x = torch.as_tensor(obs, dtype=torch.float32)
        single = x.dim() == 1
        x = ((x.reshape(-1, kw["obs_dim"]) - mean) * inv_std).clamp(-10.0, 10.0)
        out = pi(x)
        if kw["action_kind"] == "discrete":
            action = out.argmax(-1)
        else:
            action = out[:, : kw["action_dim"]]
        action = action.numpy()
        return action[0] if single else action

    return act
