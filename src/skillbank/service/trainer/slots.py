"""Move one run between a trainer slot (model + SlotAdam) and the internal key space."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from skillbank.algos.slot_adam import SlotAdam
from skillbank.lora import MultiLoraModel
from skillbank.service.protocol.checkpoint import (
    CheckpointError,
    LoraState,
    adapter_state,
    adapter_tensors,
    norm_from_tensors,
    norm_tensors,
    optimizer_state,
    optimizer_tensors,
)


def check_fits(model: MultiLoraModel, state: LoraState, source: Path) -> None:
    """Raise ``CheckpointError`` (file + key) unless ``state`` fits the model's layers."""
    for path, (a, b, _) in state.items():
        key = f"lora.{path}.A"
        layer = model.layers.get(path)
        if layer is None:
            raise CheckpointError(
                source, f"module {path!r} is not a LoRA layer here ({sorted(model.layers)})", key
            )
        rank = a.shape[0]
        if a.shape[1] != layer.in_features or b.shape[0] != layer.out_features:
            raise CheckpointError(
                source,
                f"A {tuple(a.shape)} / B {tuple(b.shape)} do not fit the layer "
                f"[{layer.out_features}, {layer.in_features}]",
                key,
            )
        if rank > layer.capacity:
            raise CheckpointError(source, f"rank {rank} above the capacity {layer.capacity}", key)


def rank_tensors(
    model: MultiLoraModel,
    opt: SlotAdam | None,
    slot: int,
    step: int,
    obs_norm: dict[str, Any] | None,
) -> dict[str, Tensor]:
    """Everything a checkpoint's rank file holds for the run in ``slot``."""
    tensors = adapter_tensors(model.slot_state(slot))
    if opt is not None:
        moments: dict[str, tuple[Tensor, Tensor]] = {}
        for i, (path, layer) in enumerate(model.layers.items()):
            r = layer.get_slot(slot)[0].shape[0]
            if r == 0:
                continue
            m_a, m_b = opt.exp_avg[2 * i][slot], opt.exp_avg[2 * i + 1][slot]
            v_a, v_b = opt.exp_avg_sq[2 * i][slot], opt.exp_avg_sq[2 * i + 1][slot]
            moments[f"{path}.A"] = (m_a[:r], v_a[:r])
            moments[f"{path}.B"] = (m_b[:, :r], v_b[:, :r])
        tensors.update(optimizer_tensors(int(opt.steps[slot]), moments))
    tensors.update(norm_tensors(obs_norm))
    tensors["run.step"] = torch.tensor(step, dtype=torch.int64)
    return tensors


@torch.no_grad()
def load_slot(
    model: MultiLoraModel, opt: SlotAdam, slot: int, tensors: dict[str, Tensor], source: Path
) -> tuple[dict[str, Any] | None, bool]:
    """Load a rank file's run into ``slot`` -> (obs_norm, whether it had optimiser state).

    Everything is checked before the slot is touched."""
    state = adapter_state(tensors, source)
    check_fits(model, state, source)
    optim = optimizer_state(tensors, source)
    if optim is not None:
        for name, (m, v) in optim[1].items():
            path, _, part = name.rpartition(".")
            a, b, _ = state.get(path, (None, None, 0.0))
            want = a if part == "A" else b
            if want is None or m.shape != want.shape or v.shape != want.shape:
                raise CheckpointError(source, "does not match the adapter", f"optim.{name}.exp_avg")
    model.load_slot_state(slot, state)
    opt.reset_slot(slot)
    if optim is not None:
        moments = optim[1]
        for i, path in enumerate(model.layers):
            for j, part in ((0, "A"), (1, "B")):
                if f"{path}.{part}" not in moments:
                    continue
                m, v = moments[f"{path}.{part}"]
                dst_m, dst_v = opt.exp_avg[2 * i + j][slot], opt.exp_avg_sq[2 * i + j][slot]
                if part == "A":
                    dst_m[: m.shape[0]].copy_(m)
                    dst_v[: v.shape[0]].copy_(v)
                else:
                    dst_m[:, : m.shape[1]].copy_(m)
                    dst_v[:, : v.shape[1]].copy_(v)
        opt.steps[slot] = optim[0]
    return norm_from_tensors(tensors), optim is not None
