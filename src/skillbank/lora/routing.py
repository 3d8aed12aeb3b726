"""Row routing for multi-slot LoRA: which rows of a forward pass use which slot.

Rows are routed by a slot id each (``-1`` = base only). Inside a layer the rows of each
used slot are laid out as one padded block ``[N, M, in]`` (N used slots, M rows per slot),
described by a ``RowPlan`` shared by every layer of the pass. Slot ids reach the layers
through a ``SlotRouter`` owned by the model (a context manager), or explicitly as
``layer(x, slot_ids=...)``; there is no global state.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class RowPlan:
    """How the rows of one forward pass are grouped by slot (shared by every layer)."""

    slots: Tensor  # [N] used slot ids, ascending
    slot_list: list[int]  # same, as Python ints
    block: int  # M: rows per slot in the padded block
    gather: Tensor | None  # [N*M] row index of each block position; None = identity view
    valid: Tensor | None  # [V] block positions holding a real row; None = all of them
    rows: Tensor | None  # [V] destination row of each valid position; None = in order


def make_plan(slot_ids: Tensor) -> RowPlan | None:
    """Group flat slot ids ``[rows]`` into a padded per-slot block. None if all are -1."""
    ids = slot_ids.reshape(-1).long()
    n_rows = ids.numel()
    if n_rows == 0:
        return None
    if int(ids.min()) < -1:
        raise ValueError(f"slot ids must be >= -1 (-1 = base only), got {int(ids.min())}")
    active = ids >= 0
    if not bool(active.any()):
        return None
    all_active = bool(active.all())
    sorted_in = all_active and bool((ids[1:] >= ids[:-1]).all())
    if sorted_in:
        order = None
        sorted_ids = ids
    else:
        act_rows = torch.nonzero(active).squeeze(1)
        keys = ids[act_rows]
        perm = torch.argsort(keys, stable=True)
        order = act_rows[perm]  # [V] original row of each sorted entry
        sorted_ids = keys[perm]
    slots, counts = torch.unique_consecutive(sorted_ids, return_counts=True)
    block = int(counts.max())
    slot_list = [int(s) for s in slots.tolist()]
    if sorted_in and bool((counts == block).all()):
        return RowPlan(slots, slot_list, block, None, None, None)
    n_valid = sorted_ids.numel()
    starts = torch.cumsum(counts, 0) - counts  # [N] start of each segment in sorted order
    j = torch.arange(block, device=ids.device)
    # sorted position of block cell (k, j): repeat the segment's last row as padding
    pos = starts[:, None] + torch.minimum(j[None, :], counts[:, None] - 1)  # [N, M]
    valid_cell = j[None, :] < counts[:, None]  # [N, M]
    valid = torch.nonzero(valid_cell.reshape(-1)).squeeze(1)  # [V], in sorted order
    pos = pos.reshape(-1)
    gather = pos if order is None else order[pos]
    assert valid.numel() == n_valid
    return RowPlan(slots, slot_list, block, gather, valid, order)


class SlotRouter:
    """Carries the slot ids of the current forward pass to the layers of one model."""

    def __init__(self) -> None:
        self._ids: Tensor | None = None
        self._plans: dict[tuple[int, ...], RowPlan | None] = {}

    @contextmanager
    def route(self, slot_ids: Tensor | None) -> Iterator[None]:
        """Within the block every routed layer uses ``slot_ids`` ([batch] or [batch, seq])."""
        prev = (self._ids, self._plans)
        self._ids, self._plans = slot_ids, {}
        try:
            yield
        finally:
            self._ids, self._plans = prev

    @property
    def active(self) -> Tensor | None:
        return self._ids

    def plan_for(self, lead_shape: torch.Size) -> RowPlan | None:
        """Plan for an input whose leading (row) dims are ``lead_shape``; cached per shape."""
        key = tuple(lead_shape)
        if key not in self._plans:
            assert self._ids is not None
            self._plans[key] = make_plan(broadcast_ids(self._ids, lead_shape))
        return self._plans[key]


def broadcast_ids(slot_ids: Tensor, lead_shape: torch.Size) -> Tensor:
    """Broadcast ids ``[batch]`` or ``[batch, seq]`` over an input's leading dims."""
    ids = torch.as_tensor(slot_ids)
    if tuple(ids.shape) == tuple(lead_shape):
        return ids
    if ids.dim() <= len(lead_shape) and tuple(lead_shape[: ids.dim()]) == tuple(ids.shape):
        view = ids.reshape(tuple(ids.shape) + (1,) * (len(lead_shape) - ids.dim()))
        return view.expand(lead_shape)
    raise ValueError(
        f"slot ids of shape {tuple(ids.shape)} do not match input rows {tuple(lead_shape)}"
    )
