"""Multi-slot LoRA: many adapters stacked in one layer, one slot id per input row.

A ``MultiLoraLinear`` wraps a frozen ``nn.Linear`` (kept as ``base_layer``) and holds
``S`` adapter slots in two stacked parameters::

    lora_A: [S, R, in]    lora_B: [S, out, R]     (R = rank capacity of the layer)

Slot ``k`` uses the first ``rank[k]`` rows of ``A[k]`` and columns of ``B[k]`` (the rest
stay exactly zero) and is scaled by ``alpha[k] / rank[k]``. ``y = base(x) + s_k B_k A_k x``.

Rows are routed by a slot id each (``-1`` = base only). Inside a layer the rows of each
used slot are laid out as one padded block ``[N, M, in]`` (N used slots, M rows per slot)
so the low-rank term is two batched matmuls; when the rows arrive sorted by slot with
equal counts (what ``PolicyLibrary.forward`` and the PPO minibatches produce) the block is
a free view and the up-projection is accumulated in place into the base output
(``baddbmm_``), so the only extra memory pass is over the small ``[N, M, R]`` tensor.

Slot ids reach the layers through a ``SlotRouter`` owned by the model (a context
manager), or explicitly as ``layer(x, slot_ids=...)``; there is no global state.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn


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


class MultiLoraLinear(nn.Module):
    """A frozen ``nn.Linear`` plus ``num_slots`` LoRA adapters of rank <= ``rank``."""

    def __init__(
        self,
        base_layer: nn.Linear,
        num_slots: int,
        rank: int,
        router: SlotRouter | None = None,
    ) -> None:
        super().__init__()
        if num_slots < 1 or rank < 1:
            raise ValueError(f"num_slots and rank must be >= 1 (got {num_slots}, {rank})")
        self.base_layer = base_layer
        base_layer.requires_grad_(False)
        w = base_layer.weight
        out_f, in_f = w.shape
        self.in_features, self.out_features = in_f, out_f
        self.num_slots, self.capacity = num_slots, rank
        kw = {"device": w.device, "dtype": w.dtype}
        self.lora_A = nn.Parameter(torch.zeros(num_slots, rank, in_f, **kw))  # [S, R, in]
        self.lora_B = nn.Parameter(torch.zeros(num_slots, out_f, rank, **kw))  # [S, out, R]
        self.register_buffer("slot_rank", torch.zeros(num_slots, dtype=torch.long))
        self.register_buffer("slot_alpha", torch.zeros(num_slots, dtype=torch.float32))
        self.register_buffer("slot_scale", torch.zeros(num_slots, dtype=w.dtype))  # alpha / r
        self.router = router  # plain attribute, not a submodule

    # ------------------------------------------------------------------ forward
    @torch.no_grad()
    def _set_meta(self, k: int, rank: int, alpha: float) -> None:
        self.slot_rank[k] = rank
        self.slot_alpha[k] = float(alpha)
        self.slot_scale[k] = float(alpha) / rank if rank > 0 else 0.0

    def forward(self, x: Tensor, slot_ids: Tensor | None = None) -> Tensor:
        lead = x.shape[:-1]
        if slot_ids is not None:
            plan = make_plan(broadcast_ids(slot_ids, lead))
        elif self.router is not None and self.router.active is not None:
            plan = self.router.plan_for(lead)
        else:
            plan = None
        if plan is None:
            return self.base_layer(x)
        x2 = x.reshape(-1, self.in_features)  # [rows, in]
        n, m = len(plan.slot_list), plan.block
        if plan.slot_list[-1] >= self.num_slots:
            raise IndexError(f"slot id {plan.slot_list[-1]} >= num_slots {self.num_slots}")
        if n == self.num_slots:  # every slot present: no copy of the adapter stacks
            a, b, s = self.lora_A, self.lora_B, self.slot_scale
        else:
            a = self.lora_A.index_select(0, plan.slots)  # [N, R, in]
            b = self.lora_B.index_select(0, plan.slots)  # [N, out, R]
            s = self.slot_scale.index_select(0, plan.slots)
        bt = b.transpose(1, 2)  # [N, R, out]
        xb = x2 if plan.gather is None else x2.index_select(0, plan.gather)
        z = torch.bmm(xb.view(n, m, self.in_features), a.transpose(1, 2))  # [N, M, R]
        z = z * s.view(n, 1, 1)
        w, bias = self.base_layer.weight, self.base_layer.bias
        if plan.gather is None and z.requires_grad:
            # training: out of place (an in-place accumulation into a view would make
            # autograd copy every output gradient back through the view).
            y = nn.functional.linear(x2, w, bias).view(n, m, self.out_features)
            return torch.baddbmm(y, z, bt).view(*lead, self.out_features)  # [N, M, out]
        if plan.gather is None:
            # rows sorted with equal counts: write bias + low-rank term in the pass that
            # would broadcast the bias anyway, then accumulate the base matmul into it.
            # The bias rides along as one more rank: [z, 1] @ [B^T; bias].
            if bias is not None:
                z = torch.cat([z, z.new_ones(n, m, 1)], dim=2)  # [N, M, R+1]
                bt = torch.cat([bt, bias.view(1, 1, -1).expand(n, 1, -1)], dim=1)  # [N, R+1, out]
            y = torch.bmm(z, bt)  # [N, M, out]
            y2 = y.view(-1, self.out_features).addmm_(x2, w.t())  # [rows, out]
            return y2.view(*lead, self.out_features)
        y = self.base_layer(x)
        y2 = y.view(-1, self.out_features)  # [rows, out]
        delta = torch.bmm(z, bt).view(n * m, self.out_features)  # [N*M, out]
        assert plan.valid is not None
        delta = delta.index_select(0, plan.valid)  # [V, out]
        if plan.rows is None:
            y2.add_(delta)
        else:
            y2.index_add_(0, plan.rows, delta)
        return y

    # ---------------------------------------------------------------- slot ops
    def _check_slot(self, k: int) -> None:
        if not 0 <= k < self.num_slots:
            raise IndexError(f"slot {k} out of range [0, {self.num_slots})")

    @torch.no_grad()
    def reset_slot(
        self, k: int, rank: int, alpha: float, generator: torch.Generator | None = None
    ) -> None:
        """Fresh adapter: A ~ U(-1/sqrt(in), 1/sqrt(in)) on the first rows, B = 0.

        The rank is capped at ``min(in, out)`` (a product B A cannot have a higher rank, so
        the extra rows would only cost memory), with alpha scaled so alpha / r is kept."""
        self._check_slot(k)
        if not 1 <= rank <= self.capacity:
            raise ValueError(f"rank {rank} not in [1, capacity {self.capacity}]")
        eff = min(rank, self.in_features, self.out_features)
        self.zero_slot(k)
        bound = 1.0 / math.sqrt(self.in_features)
        a = torch.empty(eff, self.in_features, dtype=self.lora_A.dtype)
        a.uniform_(-bound, bound, generator=generator)
        self.lora_A[k, :eff] = a.to(self.lora_A.device)
        self._set_meta(k, eff, alpha * eff / rank)

    @torch.no_grad()
    def zero_slot(self, k: int) -> None:
        """Empty the slot: it then acts as the base."""
        self._check_slot(k)
        self.lora_A[k].zero_()
        self.lora_B[k].zero_()
        self._set_meta(k, 0, 0.0)

    @torch.no_grad()
    def copy_slot(self, src: int, dst: int) -> None:
        self._check_slot(src)
        self._check_slot(dst)
        self.lora_A[dst] = self.lora_A[src]
        self.lora_B[dst] = self.lora_B[src]
        self._set_meta(dst, int(self.slot_rank[src]), float(self.slot_alpha[src]))

    def get_slot(self, k: int) -> tuple[Tensor, Tensor, float]:
        """(A [r, in], B [out, r], alpha) of slot k, unpadded copies."""
        self._check_slot(k)
        r = int(self.slot_rank[k])
        a = self.lora_A[k, :r].detach().clone()
        b = self.lora_B[k, :, :r].detach().clone()
        return a, b, float(self.slot_alpha[k])

    @torch.no_grad()
    def set_slot(self, k: int, a: Tensor, b: Tensor, alpha: float) -> None:
        """Load A [r, in] and B [out, r] into slot k (r <= capacity)."""
        self._check_slot(k)
        r = a.shape[0]
        if a.dim() != 2 or a.shape[1] != self.in_features:
            raise ValueError(f"lora_A shape {tuple(a.shape)}, expected [r, {self.in_features}]")
        if b.dim() != 2 or tuple(b.shape) != (self.out_features, r):
            raise ValueError(f"lora_B shape {tuple(b.shape)}, expected [{self.out_features}, {r}]")
        if r > self.capacity:
            raise ValueError(f"rank {r} is above the slot capacity {self.capacity}")
        self.zero_slot(k)
        self.lora_A[k, :r] = a.to(self.lora_A)
        self.lora_B[k, :, :r] = b.to(self.lora_B)
        self._set_meta(k, r, alpha)

    def delta_weight(self, k: int) -> Tensor:
        """[out, in] weight change of slot k: alpha/r * B A."""
        a, b, _ = self.get_slot(k)
        return (b @ a) * self.slot_scale[k]

    def extra_repr(self) -> str:
        return f"slots={self.num_slots}, capacity={self.capacity}"


def _matches(name: str, targets: str | Sequence[str] | None, module: nn.Module) -> bool:
    if not isinstance(module, nn.Linear):
        return False
    if targets is None:
        return True
    if isinstance(targets, str):
        return re.fullmatch(targets, name) is not None
    return any(name == t or name.endswith("." + t) for t in targets)


def inject(
    model: nn.Module,
    num_slots: int,
    rank: int,
    target_modules: str | Sequence[str] | None = None,
    router: SlotRouter | None = None,
) -> dict[str, MultiLoraLinear]:
    """Replace matching ``nn.Linear`` modules of ``model`` in place; returns {path: layer}.

    ``target_modules``: a list of exact names or name suffixes (PEFT style), a regex string
    matched against the full module path, or None for every Linear.
    """
    found = [
        (n, m)
        for n, m in model.named_modules()
        if n and not isinstance(m, MultiLoraLinear) and _matches(n, target_modules, m)
    ]
    if not found:
        raise ValueError(f"no nn.Linear in the model matches target_modules={target_modules!r}")
    layers = {}
    for name, module in found:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        layer = MultiLoraLinear(module, num_slots, rank, router)  # type: ignore[arg-type]
        setattr(parent, child, layer)
        layers[name] = layer
    return layers


def strip(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` with every MultiLoraLinear replaced by its base layer."""
    plain = copy.deepcopy(model)
    for name, module in list(plain.named_modules()):
        if isinstance(module, MultiLoraLinear):
            parent_name, _, child = name.rpartition(".")
            parent = plain.get_submodule(parent_name) if parent_name else plain
            setattr(parent, child, module.base_layer)
    for p in plain.parameters():
        p.requires_grad_(True)
    return plain


class MultiLoraModel(nn.Module):
    """A base module with multi-slot LoRA injected; owns the router of its layers.

    ``model(*args, slot_ids=ids, **kw)`` runs the base with each row's slot applied;
    ``with model.slots(ids): model.base(...)`` does the same for any other entry point.
    """

    def __init__(
        self,
        base: nn.Module,
        num_slots: int,
        rank: int,
        target_modules: str | Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        self.router = SlotRouter()
        self.base = base
        base.requires_grad_(False)
        self.layers = inject(base, num_slots, rank, target_modules, self.router)
        self.num_slots, self.capacity = num_slots, rank
        self.target_modules = target_modules

    def forward(self, *args: object, slot_ids: Tensor | None = None, **kwargs: object) -> object:
        with self.router.route(slot_ids):
            return self.base(*args, **kwargs)

    def slots(self, slot_ids: Tensor | None) -> AbstractContextManager[None]:
        """Context manager routing ``slot_ids`` to every layer."""
        return self.router.route(slot_ids)

    def lora_layers(self) -> dict[str, MultiLoraLinear]:
        """{module path relative to the base: layer}."""
        return dict(self.layers)

    def slot_parameters(self) -> list[nn.Parameter]:
        return [p for layer in self.layers.values() for p in (layer.lora_A, layer.lora_B)]

    def reset_slot(
        self, k: int, rank: int, alpha: float, generator: torch.Generator | None = None
    ) -> None:
        for layer in self.layers.values():
            layer.reset_slot(k, rank, alpha, generator)

    def zero_slot(self, k: int) -> None:
        for layer in self.layers.values():
            layer.zero_slot(k)

    def copy_slot(self, src: int, dst: int) -> None:
        for layer in self.layers.values():
            layer.copy_slot(src, dst)

    def slot_state(self, k: int) -> dict[str, tuple[Tensor, Tensor, float]]:
        """{module path: (A [r, in], B [out, r], alpha)} of slot k."""
        return {name: layer.get_slot(k) for name, layer in self.layers.items()}

    def load_slot_state(self, k: int, state: dict[str, tuple[Tensor, Tensor, float]]) -> None:
        unknown = sorted(set(state) - set(self.layers))
        if unknown:
            raise KeyError(f"adapter modules not in the model: {unknown}")
        for name, layer in self.layers.items():
            if name in state:
                layer.set_slot(k, *state[name])
            else:
                layer.zero_slot(k)

    def plain_base(self) -> nn.Module:
        """A deep copy of the base with no adapters (plain nn.Linear layers)."""
        return strip(self.base)

    @torch.no_grad()
    def merged_copy(self, k: int) -> nn.Module:
        """A plain copy of the base with slot k merged into its weights (standalone policy)."""
        plain = strip(self.base)
        for name, layer in self.layers.items():
            lin = plain.get_submodule(name)
            assert isinstance(lin, nn.Linear)
            lin.weight += layer.delta_weight(k).to(lin.weight)
        return plain
