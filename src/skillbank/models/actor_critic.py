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
from torch.distributions import Categorical, Distribution, Independent, Normal

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


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
            with torch.no_grad():
                self.pi[-1].bias[config.action_dim :] = config.init_log_std

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x [B, obs_dim] -> (policy_out [B, n_out], value [B])."""
        return self.pi(x), self.v(x).squeeze(-1)

    def distribution(self, policy_out: Tensor) -> Distribution:
        return make_distribution(self.config.action_kind, policy_out)


def make_distribution(action_kind: str, policy_out: Tensor) -> Distribution:
    """The action distribution for a batch of policy outputs."""
    if action_kind == "discrete":
        return Categorical(logits=policy_out, validate_args=False)
    mean, log_std = policy_out.chunk(2, dim=-1)  # [B, d] each
    log_std = log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)
    return Independent(Normal(mean, log_std.exp(), validate_args=False), 1, validate_args=False)


_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def log_prob_entropy(
    action_kind: str, policy_out: Tensor, actions: Tensor
) -> tuple[Tensor, Tensor]:
    """(log-probability [B], entropy [B]) of ``actions`` under the policy outputs, written
    out by hand (the same values as ``make_distribution``, fewer tensor operations)."""
    if action_kind == "discrete":
        logp_all = torch.log_softmax(policy_out, dim=-1)  # [B, n]
        logp = logp_all.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)
        entropy = -(logp_all.exp() * logp_all).sum(-1)
        return logp, entropy
    mean, log_std = policy_out.chunk(2, dim=-1)  # [B, d] each
    log_std = log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)
    z = (actions - mean) * torch.exp(-log_std)
    logp = (-0.5 * z.square() - log_std - _HALF_LOG_2PI).sum(-1)
    entropy = (log_std + 0.5 + _HALF_LOG_2PI).sum(-1)
    return logp, entropy


def sample_action(action_kind: str, policy_out: Tensor) -> tuple[Tensor, Tensor]:
    """(action, log-probability) sampled from the policy outputs, with few operations
    (Gumbel-max for Discrete, mean + std * noise for Box)."""
    if action_kind == "discrete":
        logp_all = torch.log_softmax(policy_out, dim=-1)  # [B, n]
        gumbel = -torch.log(-torch.log(torch.rand_like(logp_all).clamp_(1e-20, 1.0)))
        action = (logp_all + gumbel).argmax(-1)
        return action, logp_all.gather(-1, action.unsqueeze(-1)).squeeze(-1)
    mean, log_std = policy_out.chunk(2, dim=-1)
    log_std = log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)
    noise = torch.randn_like(mean)
    action = mean + log_std.exp() * noise
    logp = (-0.5 * noise.square() - log_std - _HALF_LOG_2PI).sum(-1)
    return action, logp


def greedy_action(action_kind: str, policy_out: Tensor) -> Tensor:
    """Deterministic action: argmax for Discrete, the mean for Box."""
    if action_kind == "discrete":
        return policy_out.argmax(-1)
    return policy_out.chunk(2, dim=-1)[0]
