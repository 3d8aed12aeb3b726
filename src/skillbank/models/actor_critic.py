"""Actor-critic MLP for Discrete and Box action spaces (CleanRL-style initialisation).

Separate policy and value trunks, tanh activations, orthogonal init (gain sqrt(2) in the
trunks, 0.01 on the policy head, 1.0 on the value head), zero biases.

``forward(x)`` returns ``(policy_out, value)``:
- Discrete(n): ``policy_out`` = logits ``[B, n]``;
- Box(d): ``policy_out`` = ``[B, 2d]`` = mean and log-std. The log-std comes from the last
  policy layer as well (its bias starts at ``init_log_std``), so a LoRA skill adapts the
  exploration noise with the rest of the head; it is clamped to [-5, 2].
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn


@dataclass
class ActorCriticConfig:
    """Constructor arguments of an ActorCritic (stored in the library's base/config.json)."""

    obs_dim: int
    """Length of the (flat) observation vector."""
    action_kind: str
    """"discrete" or "box"."""
    action_dim: int
    """Number of discrete actions, or the dimension of a Box action."""
    hidden: list[int] = field(default_factory=lambda: [256, 256])
    """Widths of the hidden layers of each trunk (policy and value)."""
    init_log_std: float = 0.0
    """Initial log standard deviation of the Gaussian head (Box only)."""

    def to_dict(self) -> dict:
        return asdict(self)


def _layer(n_in: int, n_out: int, gain: float) -> nn.Linear:
    lin = nn.Linear(n_in, n_out)
    nn.init.orthogonal_(lin.weight, gain)
    nn.init.zeros_(lin.bias)
    return lin


def _trunk(sizes: list[int], head_gain: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-2], sizes[1:-1]):
        layers += [_layer(a, b, math.sqrt(2)), nn.Tanh()]
    layers.append(_layer(sizes[-2], sizes[-1], head_gain))
    return nn.Sequential(*layers)


class ActorCritic(nn.Module):
    """Policy trunk ``pi`` and value trunk ``v``; every Linear is a LoRA target."""

    def __init__(self, config: ActorCriticConfig) -> None:
        super().__init__()
        if config.action_kind not in ("discrete", "box"):
            raise ValueError(f"action_kind must be 'discrete' or 'box', got {config.action_kind!r}")
        self.config = config
        n_out = config.action_dim * (2 if config.action_kind == "box" else 1)
        self.pi = _trunk([config.obs_dim, *config.hidden, n_out], 0.01)
        self.v = _trunk([config.obs_dim, *config.hidden, 1], 1.0)
        if config.action_kind == "box":
            head = self.pi[-1]
            assert isinstance(head, nn.Linear)
            with torch.no_grad():
                head.bias[config.action_dim :] = config.init_log_std

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x [B, obs_dim] -> (policy_out [B, n_out], value [B])."""
        return self.pi(x), self.v(x).squeeze(-1)
