"""The GRPO update of LM runs on 2 gloo ranks (2 spawned processes) against 1 process:
each rank takes a contiguous share of the rows with the whole batch's token weights and the
ranks sum their gradients, so the step is the single-process step.

Tolerance: slot parameters and Adam moments atol 1e-6 (float32 sums in another order)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as tdist
import torch.multiprocessing as tmp

from skillbank.algos.slot_adam import SlotAdam
from skillbank.lm import SlotLM, init_slot, load_base
from skillbank.service.kinds.batch import RunBatch
from skillbank.service.kinds.lm.update import lm_update
from skillbank.service.trainer.dist import Dist


def _rollout(rows: int, width: int, vocab: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(rows, width, dtype=torch.bool)
    for i in range(rows):  # completions of different lengths after a 5-token prompt
        mask[i, 5 : 5 + 1 + int(torch.randint(0, width - 6, (1,), generator=g))] = True
    return {
        "tokens": torch.randint(0, vocab, (rows, width), generator=g),
        "mask": mask,
        "logp": -torch.rand(rows, width, generator=g) * 3 * mask,
        "advantages": torch.randn(rows, generator=g),
        "rewards": torch.rand(rows, generator=g),
        "clip_eps": torch.full((rows,), 0.2),
        "kl_coef": torch.full((rows,), 0.05),
    }


def _update(dist: Dist | None) -> dict[str, torch.Tensor]:
    """One GRPO update of runs in slots 0 and 2 (13 and 6 rows: uneven shares)."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    base, tok = load_base()
    lm = SlotLM(base, tok, num_slots=3, capacity=4)
    for k in (0, 2):
        init_slot(lm, k, rank=4, seed=k)
        for layer in lm.mm.lora_layers().values():  # B != 0: gradients reach A as well
            layer.lora_B.data[k].normal_(0, 0.02, generator=torch.Generator().manual_seed(k))
    opt = SlotAdam(lm.mm.slot_parameters(), 3)
    vocab = base.config.vocab_size
    parts = [
        RunBatch(0, 1e-2, _rollout(13, 20, vocab, 1), "lm"),
        RunBatch(2, 3e-3, _rollout(6, 16, vocab, 2), "lm"),
    ]
    result = lm_update(lm.mm, opt, parts, dist)
    assert not result.skipped, result.skipped
    out: dict[str, torch.Tensor] = {"steps": opt.steps.clone()}
    for j, p in enumerate(opt.params):
        out[f"param{j}"] = p.detach().clone()
        out[f"exp_avg{j}"] = opt.exp_avg[j].clone()
    return out


def _rank(rank: int, folder: str) -> None:
    tdist.init_process_group(
        "gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=2
    )
    try:
        torch.save(_update(Dist(rank, 2, torch.device("cpu"))), f"{folder}/rank_{rank}.pt")
    finally:
        tdist.destroy_process_group()


def test_two_rank_lm_update_equals_one_process(tmp_path: Path) -> None:
    tmp.spawn(_rank, args=(str(tmp_path),), nprocs=2, join=True)
    want = _update(None)
    assert want["steps"].tolist() == [2, 0, 2]  # SERVICE_GRPO: 2 epochs; slot 1 unused
    for rank in range(2):
        got = torch.load(tmp_path / f"rank_{rank}.pt", weights_only=True)
        for key, w in want.items():
            assert torch.allclose(got[key], w, atol=1e-6), (rank, key)
    one, two = (torch.load(tmp_path / f"rank_{r}.pt", weights_only=True) for r in range(2))
    assert all(torch.equal(one[k], two[k]) for k in one)  # the replicas are bitwise equal
