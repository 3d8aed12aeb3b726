"""Action distributions of a policy's outputs, one entry per action kind (a registry).

- ``"discrete"``: ``policy_out`` = logits ``[B, n]``; a categorical distribution.
- ``"box"``: ``policy_out`` = ``[B, 2d]`` = mean and log-std (clamped to
  [``LOG_STD_MIN``, ``LOG_STD_MAX``]); a diagonal Gaussian.

Each kind gives the torch distribution, the log-probability and entropy written out by
hand (the same values, fewer tensor operations), a sample with its log-probability, a
sample drawn with an explicit generator, and the greedy action. Pure tensor maths.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.distributions import Categorical, Distribution, Independent, Normal

from skillbank.errors import ConfigError

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


@dataclass(frozen=True)
class ActionKind:
    """The distribution operations of one action kind."""

    distribution: Callable[[Tensor], Distribution]
    log_prob_entropy: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
    sample: Callable[[Tensor], tuple[Tensor, Tensor]]
    sample_seeded: Callable[[Tensor, torch.Generator], Tensor]
    greedy: Callable[[Tensor], Tensor]


# ------------------------------------------------------------------------------- discrete
def _cat(policy_out: Tensor) -> Distribution:
    return Categorical(logits=policy_out, validate_args=False)


def _cat_logp_entropy(policy_out: Tensor, actions: Tensor) -> tuple[Tensor, Tensor]:
    logp_all = torch.log_softmax(policy_out, dim=-1)  # [B, n]
    logp = logp_all.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp, entropy


def _cat_sample(policy_out: Tensor) -> tuple[Tensor, Tensor]:
    """Gumbel-max sample and its log-probability."""
    logp_all = torch.log_softmax(policy_out, dim=-1)  # [B, n]
    gumbel = -torch.log(-torch.log(torch.rand_like(logp_all).clamp_(1e-20, 1.0)))
    action = (logp_all + gumbel).argmax(-1)
    return action, logp_all.gather(-1, action.unsqueeze(-1)).squeeze(-1)


def _cat_seeded(policy_out: Tensor, generator: torch.Generator) -> Tensor:
    probs = Categorical(logits=policy_out, validate_args=False).probs
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


# ------------------------------------------------------------------------------------ box
def _mean_log_std(policy_out: Tensor) -> tuple[Tensor, Tensor]:
    mean, log_std = policy_out.chunk(2, dim=-1)  # [B, d] each
    return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)


def _normal(policy_out: Tensor) -> Distribution:
    mean, log_std = _mean_log_std(policy_out)
    return Independent(Normal(mean, log_std.exp(), validate_args=False), 1, validate_args=False)


def _normal_logp_entropy(policy_out: Tensor, actions: Tensor) -> tuple[Tensor, Tensor]:
    mean, log_std = _mean_log_std(policy_out)
    z = (actions - mean) * torch.exp(-log_std)
    logp = (-0.5 * z.square() - log_std - _HALF_LOG_2PI).sum(-1)
    entropy = (log_std + 0.5 + _HALF_LOG_2PI).sum(-1)
    return logp, entropy


def _normal_sample(policy_out: Tensor) -> tuple[Tensor, Tensor]:
    mean, log_std = _mean_log_std(policy_out)
    noise = torch.randn_like(mean)
    action = mean + log_std.exp() * noise
    logp = (-0.5 * noise.square() - log_std - _HALF_LOG_2PI).sum(-1)
    return action, logp


def _normal_seeded(policy_out: Tensor, generator: torch.Generator) -> Tensor:
    mean, log_std = _mean_log_std(policy_out)
    noise = torch.randn(mean.shape, generator=generator)
    return mean + log_std.exp() * noise


ACTION_KINDS: dict[str, ActionKind] = {
    "discrete": ActionKind(
        _cat, _cat_logp_entropy, _cat_sample, _cat_seeded, lambda out: out.argmax(-1)
    ),
    "box": ActionKind(
        _normal,
        _normal_logp_entropy,
        _normal_sample,
        _normal_seeded,
        lambda out: out.chunk(2, dim=-1)[0],
    ),
}


def action_kind(name: str) -> ActionKind:
    """The operations of action kind ``name`` (ConfigError naming the known kinds)."""
    try:
        return ACTION_KINDS[name]
    except KeyError:
        known = ", ".join(sorted(ACTION_KINDS))
        raise ConfigError(f"field action_kind: unknown kind {name!r} (known: {known})") from None


def make_distribution(kind: str, policy_out: Tensor) -> Distribution:
    """The action distribution for a batch of policy outputs."""
    return action_kind(kind).distribution(policy_out)


def log_prob_entropy(kind: str, policy_out: Tensor, actions: Tensor) -> tuple[Tensor, Tensor]:
    """(log-probability [B], entropy [B]) of ``actions`` under the policy outputs."""
    return action_kind(kind).log_prob_entropy(policy_out, actions)


def sample_with_logp(kind: str, policy_out: Tensor) -> tuple[Tensor, Tensor]:
    """(action, log-probability) sampled from the policy outputs (global torch RNG)."""
    return action_kind(kind).sample(policy_out)


def sample_seeded(kind: str, policy_out: Tensor, generator: torch.Generator) -> Tensor:
    """An action sampled from the policy outputs with ``generator``."""
    return action_kind(kind).sample_seeded(policy_out, generator)


def greedy_action(kind: str, policy_out: Tensor) -> Tensor:
    """Deterministic action: argmax for Discrete, the mean for Box."""
    return action_kind(kind).greedy(policy_out)
