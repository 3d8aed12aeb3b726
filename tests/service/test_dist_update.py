"""The batched update on 2 gloo ranks (2 spawned processes) against 1 process: rows split
unevenly, one run with a NaN loss skipped on every rank, the other's update equal.

Tolerance: statistics rtol 1e-5, slot parameters and Adam moments atol 1e-6 (float32
sums in another order)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as tdist
import torch.multiprocessing as tmp
from svc_helpers import fake_rollout

from skillbank.algos.ppo import PPOConfig
from skillbank.algos.slot_adam import SlotAdam
from skillbank.lora import MultiLoraModel
from skillbank.models import ActorCritic, ActorCriticConfig
from skillbank.service.kinds.batch import RunBatch
from skillbank.service.kinds.ppo.update import batched_update
from skillbank.service.trainer.dist import Dist


def _update(dist: Dist | None) -> dict[str, torch.Tensor]:
    """Two updates of runs in slots 0 and 2 (301 and 157 rows: uneven chunks); the run in
    slot 2 turns NaN in the second -> the result's tensors (state, stats, skips)."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = MultiLoraModel(ActorCritic(ActorCriticConfig(4, "discrete", 2, [16, 16])), 3, 4)
    for k in range(3):
        model.reset_slot(k, 4, 8.0, generator=torch.Generator().manual_seed(k))
    opt = SlotAdam(model.slot_parameters(), 3)
    gen = torch.Generator().manual_seed(5)
    cfg = PPOConfig(max_grad_norm=0.05)  # small: clipping acts, on the global gradient
    out: dict[str, torch.Tensor] = {}
    for i in range(2):
        bad = fake_rollout(157, seed=10 + i)
        if i == 1:
            bad["logp"] = torch.full((157,), -1e30)  # the ratio overflows: a NaN loss
        parts = [RunBatch(0, 1e-2, fake_rollout(301, seed=i)), RunBatch(2, 3e-3, bad)]
        result = batched_update(model, opt, parts, cfg, "discrete", gen, dist)
        for k, v in result.stats.items():
            out[f"stats{i}.{k}"] = torch.tensor(v, dtype=torch.float64)
        out[f"skipped{i}"] = torch.tensor(sorted(result.skipped), dtype=torch.int64)
    for j, p in enumerate(opt.params):
        out[f"param{j}"] = p.detach().clone()
        out[f"exp_avg{j}"] = opt.exp_avg[j].clone()
    out["steps"] = opt.steps.clone()
    return out


def _rank(rank: int, folder: str) -> None:
    tdist.init_process_group(
        "gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=2
    )
    try:
        result = _update(Dist(rank, 2, torch.device("cpu")))
        torch.save(result, f"{folder}/rank_{rank}.pt")
    finally:
        tdist.destroy_process_group()


def test_two_rank_update_equals_one_process(tmp_path: Path) -> None:
    tmp.spawn(_rank, args=(str(tmp_path),), nprocs=2, join=True)
    want = _update(None)
    assert want["skipped0"].tolist() == [] and want["skipped1"].tolist() == [2]
    assert want["steps"].tolist()[1] == 0  # slot 1 had no data
    for rank in range(2):
        got = torch.load(tmp_path / f"rank_{rank}.pt", weights_only=True)
        assert sorted(got) == sorted(want)
        for key, w in want.items():
            g = got[key]
            if key.startswith(("skipped", "steps")):
                assert torch.equal(g, w), key
            elif key.startswith("stats"):
                assert torch.allclose(g, w, rtol=1e-5, atol=1e-7, equal_nan=True), key
            else:
                assert torch.allclose(g, w, atol=1e-6), key
    one, two = (torch.load(tmp_path / f"rank_{r}.pt", weights_only=True) for r in range(2))
    assert all(torch.equal(one[k], two[k]) for k in one)  # the replicas are bitwise equal
