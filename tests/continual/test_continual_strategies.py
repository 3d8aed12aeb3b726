"""Pieces of the strategies: registry, penalties, Fisher, replay buffer, LoRA slots."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from skillbank.algos.distributions import make_distribution
from skillbank.algos.normalize import ObsNorm
from skillbank.cli import continual as cli
from skillbank.continual.config import ContinualConfig
from skillbank.continual.experiment import make_context
from skillbank.continual.strategies import STRATEGIES, get_strategy
from skillbank.continual.strategies import lora as lora_mod
from skillbank.continual.strategies.replay import cloning_loss, merge_buffer
from skillbank.continual.strategies.shared import diagonal_fisher, quadratic_penalty
from skillbank.models import ActorCritic, ActorCriticConfig
from skillbank.tasks import get_suite

torch.set_num_threads(1)


def small_context(tasks: list[int], **kw: object):
    cfg = ContinualConfig(tasks=tasks, hidden=[16], lora_rank=2, lora_alpha=4.0, **kw)
    specs = [get_suite("cartpole-physics")[i] for i in tasks]
    return make_context(cfg, specs, seed=0)


def test_registry_matches_cli_help() -> None:
    assert set(STRATEGIES) == set(cli.STRATEGY_NAMES)
    with pytest.raises(ValueError, match="unknown strategy 'packnet'; valid strategies: ") as err:
        get_strategy("packnet")
    assert all(name in str(err.value) for name in cli.STRATEGY_NAMES)


def test_quadratic_penalty_by_hand() -> None:
    params = {"a": torch.tensor([1.0, 2.0]), "b": torch.tensor([[3.0]])}
    anchor = {"a": torch.tensor([0.0, 2.0]), "b": torch.tensor([[1.0]])}
    # L2: coef/2 * (1^2 + 0^2 + 2^2) = 0.5 * 2 * 5
    assert float(quadratic_penalty(params, anchor, None, 2.0)) == pytest.approx(5.0)
    weight = {"a": torch.tensor([3.0, 9.0]), "b": torch.tensor([[0.5]])}
    # EWC: 0.5 * (3 * 1 + 9 * 0 + 0.5 * 4) = 2.5
    assert float(quadratic_penalty(params, anchor, weight, 1.0)) == pytest.approx(2.5)


def test_diagonal_fisher_matches_a_loop() -> None:
    torch.manual_seed(0)
    net = ActorCritic(ActorCriticConfig(3, "discrete", 2, [5]))
    states = torch.randn(6, 3)
    fisher = diagonal_fisher(net, states, "discrete", seed=1, value=True, chunk=4)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        probs = make_distribution("discrete", net(states)[0]).probs
    actions = torch.multinomial(probs, 1, generator=gen).squeeze(1)
    expect = {k: torch.zeros_like(p) for k, p in net.named_parameters()}
    for x, a in zip(states, actions):
        for target in ("pi", "v"):
            net.zero_grad()
            out, v = net(x[None])
            y = (
                make_distribution("discrete", out).log_prob(a[None]).sum()
                if target == "pi"
                else v.sum()
            )
            y.backward()
            for k, p in net.named_parameters():
                if p.grad is not None:
                    expect[k] += p.grad.pow(2) / len(states)
    for k in expect:
        assert torch.allclose(fisher[k], expect[k], atol=1e-6), k
    assert float(fisher["v.0.weight"].abs().sum()) > 0 and float(fisher["pi.0.weight"].sum()) > 0


def test_merge_buffer_keeps_an_even_split() -> None:
    gen = torch.Generator().manual_seed(0)

    def rows(task: int, n: int) -> dict:
        return {
            "obs": torch.full((n, 2), float(task)),
            "policy_out": torch.zeros(n, 2),
            "value": torch.arange(n, dtype=torch.float32),
            "task": torch.full((n,), task, dtype=torch.long),
        }

    buf = merge_buffer({}, rows(0, 12), capacity=12, generator=gen)
    assert len(buf["task"]) == 12
    buf = merge_buffer(buf, rows(1, 6), capacity=12, generator=gen)
    assert torch.bincount(buf["task"]).tolist() == [6, 6]
    buf = merge_buffer(buf, rows(2, 4), capacity=12, generator=gen)
    assert torch.bincount(buf["task"]).tolist() == [4, 4, 4]
    assert (buf["obs"][:, 0] == buf["task"].float()).all()  # rows stay intact
    kept = buf["value"][buf["task"] == 0]
    assert (kept[1:] > kept[:-1]).all()  # a subset in the original order


def test_cloning_loss() -> None:
    out = torch.tensor([[0.0, 1.0], [2.0, -1.0]])
    value = torch.tensor([1.0, 2.0])
    zero, _ = cloning_loss(out, value, out, value, "discrete", "kl", 1.0, 0.5)
    assert float(zero) == pytest.approx(0.0, abs=1e-7)
    # MSE on outputs: rows sum (1 + 0) and (0 + 4) -> mean 2.5; value MSE (1 + 0) / 2 * 0.5
    loss, stats = cloning_loss(
        out,
        value,
        out + torch.tensor([[1.0, 0.0], [0.0, 2.0]]),
        value + torch.tensor([1.0, 0.0]),
        "discrete",
        "mse",
        1.0,
        0.5,
    )
    assert float(loss) == pytest.approx(2.5 + 0.25)
    p = torch.softmax(out, -1)
    q = torch.softmax(out + 1.0 * torch.tensor([[1.0, 0.0], [0.0, 0.0]]), -1)
    kl, _ = cloning_loss(torch.log(p), value, torch.log(q), value, "discrete", "kl", 1.0, 0.0)
    assert float(kl) == pytest.approx(float((q * (q.log() - p.log())).sum(-1).mean()), rel=1e-5)


def test_lora_skill_slots_are_independent() -> None:
    ctx = small_context([0, 3, 1])
    strat = get_strategy("lora")(ctx)
    torch.manual_seed(0)
    strat.adopt_first(ActorCritic(ActorCriticConfig(4, "discrete", 2, [16])), ObsNorm.identity(4))
    norms = [ObsNorm.identity(4)]
    setup = strat.setup_task(1, norms)
    params = setup.bank.parameters()
    opt = torch.optim.Adam(params, lr=0.1)
    x, task = torch.randn(8, 4), torch.zeros(8, dtype=torch.long)
    for _ in range(3):
        out, v = setup.bank(x, task)
        opt.zero_grad()
        (out.sum() + v.sum()).backward()
        opt.step()
    before = {k: v.clone() for k, v in strat.model.state_dict().items()}
    base = strat.policy()(x, torch.zeros(8, dtype=torch.long))
    setup = strat.setup_task(2, [*norms, ObsNorm.identity(4)])  # fresh slot 1
    skill2 = strat.policy()(x, torch.full((8,), 2))
    assert torch.allclose(skill2[0], base[0]) and torch.allclose(skill2[1], base[1])  # B = 0
    assert strat.extras["start_from"] == ["scratch", "base", "base"]
    after = strat.model.state_dict()
    for k, v in before.items():
        if "lora_" in k:
            assert torch.equal(after[k][0], v[0]), k  # skill of task 1 untouched
        elif "slot_" not in k:
            assert torch.equal(after[k], v), k  # base frozen
    mem = strat.memory_bytes()
    # two skills; rank 2 on the four Linear layers of a [16] actor-critic, r * (in + out)
    # floats each, except the value head (out = 1) whose rank is capped at 1
    per_skill = (2 * (4 + 16) + 2 * (16 + 2) + 2 * (4 + 16) + 1 * (16 + 1)) * 4
    assert mem["skills"] == 2 * per_skill
    assert mem["base"] == sum(
        p.numel() * 4 for p in ActorCritic(ActorCriticConfig(4, "discrete", 2, [16])).parameters()
    )


def test_lora_transfer_copies_the_best_skill(monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = small_context([0, 3, 1])
    strat = get_strategy("lora-transfer")(ctx)
    strat.adopt_first(ActorCritic(ActorCriticConfig(4, "discrete", 2, [16])), ObsNorm.identity(4))
    norms = [ObsNorm.identity(4), ObsNorm(torch.ones(4).numpy(), torch.ones(4).numpy(), 5.0)]
    strat.setup_task(1, norms[:1])
    with torch.no_grad():
        strat.model.slot_parameters()[1][0].fill_(0.01)  # slot 0's lora_B: a non-trivial skill
    scores = torch.tensor([[100.0], [300.0]]).numpy()  # base 100, skill of task 1: 300
    monkeypatch.setattr(lora_mod, "evaluate_bank", lambda *a, **k: scores)
    setup = strat.setup_task(2, norms)
    assert strat.extras["start_from"][-1] == "task 1"
    assert setup.init_norm.count == 5.0 and setup.init_norm is not norms[1]
    for layer in strat.model.lora_layers().values():
        assert torch.equal(layer.lora_A[1], layer.lora_A[0])
        assert torch.equal(layer.lora_B[1], layer.lora_B[0])
    monkeypatch.setattr(lora_mod, "evaluate_bank", lambda *a, **k: scores[::-1].copy())
    setup = strat.setup_task(2, norms)  # base now best: fresh slot (acts as the base)
    assert strat.extras["start_from"][-1] == "base"
    assert float(strat.model.lora_layers()["pi.0"].lora_B[1].detach().abs().sum()) == 0.0


def test_shared_norm_starts_from_previous_task() -> None:
    ctx = replace(small_context([0, 3]), seed=1)
    strat = get_strategy("finetune")(ctx)
    prev = ObsNorm(torch.zeros(4).numpy() + 2, torch.ones(4).numpy(), 7.0)
    setup = strat.setup_task(1, [prev])
    assert setup.init_norm.count == 7.0 and setup.init_norm is not prev
    assert setup.extra_loss is None
