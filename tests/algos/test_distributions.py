"""Action distributions: the hand-written maths equals torch's distributions."""

from __future__ import annotations

import pytest
import torch

from skillbank.algos.distributions import (
    ACTION_KINDS,
    greedy_action,
    log_prob_entropy,
    make_distribution,
    sample_seeded,
    sample_with_logp,
)
from skillbank.errors import ConfigError

OUTS = {"discrete": (16, 3), "box": (16, 4)}  # box: 2 action dims (mean, log-std)


@pytest.mark.parametrize("kind", sorted(ACTION_KINDS))
def test_log_prob_entropy_and_samples_match_torch(kind: str) -> None:
    torch.manual_seed(0)
    out = torch.randn(*OUTS[kind]) * 2
    dist = make_distribution(kind, out)
    action, logp = sample_with_logp(kind, out)
    torch.testing.assert_close(logp, dist.log_prob(action))
    lp, ent = log_prob_entropy(kind, out, action)
    torch.testing.assert_close(lp, dist.log_prob(action))
    torch.testing.assert_close(ent, dist.entropy())
    greedy = greedy_action(kind, out)
    expect = out.argmax(-1) if kind == "discrete" else out[:, : OUTS[kind][1] // 2]
    assert torch.equal(greedy, expect)


@pytest.mark.parametrize("kind", sorted(ACTION_KINDS))
def test_seeded_samples_repeat_with_the_generator(kind: str) -> None:
    out = torch.randn(*OUTS[kind], generator=torch.Generator().manual_seed(1))
    a = sample_seeded(kind, out, torch.Generator().manual_seed(5))
    b = sample_seeded(kind, out, torch.Generator().manual_seed(5))
    c = sample_seeded(kind, out, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_box_log_std_is_clamped() -> None:
    out = torch.tensor([[0.0, 50.0]])  # log-std 50 -> 2
    assert make_distribution("box", out).base_dist.scale.item() == pytest.approx(torch.e**2)


def test_unknown_kind_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown kind 'multi'.*box, discrete"):
        greedy_action("multi", torch.zeros(1, 2))
