"""The batched update: one PPO update over several runs' slots; a NaN loss in one run is
skipped and undone for that run only; each slot keeps its own learning rate."""

from __future__ import annotations

import torch
from svc_helpers import fake_rollout

from skillbank.algos.ppo import PPOConfig
from skillbank.algos.slot_adam import SlotAdam
from skillbank.lora import MultiLoraModel
from skillbank.models import ActorCritic, ActorCriticConfig
from skillbank.service.kinds.batch import RunBatch
from skillbank.service.kinds.ppo.update import batched_update


def _setup(slots: int = 3) -> tuple[MultiLoraModel, SlotAdam]:
    torch.manual_seed(0)
    model = MultiLoraModel(ActorCritic(ActorCriticConfig(4, "discrete", 2, [16, 16])), slots, 4)
    for k in range(slots):
        model.reset_slot(k, 4, 8.0, generator=torch.Generator().manual_seed(k))
    return model, SlotAdam(model.slot_parameters(), slots)


def _state(model: MultiLoraModel, k: int) -> list[torch.Tensor]:
    return [t for a, b, _ in model.slot_state(k).values() for t in (a, b)]


def _same(x: list[torch.Tensor], y: list[torch.Tensor]) -> bool:
    return all(torch.equal(a, b) for a, b in zip(x, y))


def test_only_runs_with_data_change() -> None:
    model, opt = _setup()
    before = [_state(model, k) for k in range(3)]
    runs = [
        RunBatch(0, 1e-2, fake_rollout(64, seed=0)),
        RunBatch(2, 1e-2, fake_rollout(64, seed=1)),
    ]
    result = batched_update(model, opt, runs, PPOConfig(), "discrete", torch.Generator())
    assert not result.skipped and "policy_loss" in result.stats
    assert not _same(before[0], _state(model, 0)) and not _same(before[2], _state(model, 2))
    assert _same(before[1], _state(model, 1))
    cfg = PPOConfig()
    assert opt.steps.tolist() == [cfg.update_epochs * cfg.num_minibatches, 0, 16]


def test_nan_loss_skips_that_run_only() -> None:
    model, opt = _setup()
    before = [_state(model, k) for k in range(3)]
    bad = fake_rollout(64, seed=1)
    bad["logp"] = torch.full((64,), -1e30)  # finite, but the ratio overflows: inf/NaN loss
    runs = [RunBatch(0, 1e-2, fake_rollout(64, seed=0)), RunBatch(1, 1e-2, bad)]
    result = batched_update(model, opt, runs, PPOConfig(), "discrete", torch.Generator())
    assert list(result.skipped) == [1]
    assert _same(before[1], _state(model, 1)) and int(opt.steps[1]) == 0
    assert not _same(before[0], _state(model, 0)) and int(opt.steps[0]) > 0
    assert all(bool(torch.isfinite(t).all()) for t in _state(model, 0))


def test_learning_rate_is_per_slot() -> None:
    model, opt = _setup(2)
    before = [_state(model, k) for k in range(2)]
    data = fake_rollout(64, seed=3)
    runs = [RunBatch(0, 1e-2, data), RunBatch(1, 0.0, data)]
    batched_update(model, opt, runs, PPOConfig(update_epochs=1), "discrete", torch.Generator())
    assert not _same(before[0], _state(model, 0))
    assert _same(before[1], _state(model, 1))  # lr 0: Adam moves nothing
