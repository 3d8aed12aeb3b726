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

import math

import torch
from torch import Tensor, nn

from skillbank.lora.routing import SlotRouter, broadcast_ids, make_plan


class MultiLoraLinear(nn.Module):
    """A frozen ``nn.Linear`` plus ``num_slots`` LoRA adapters of rank <= ``rank``."""

    # buffers registered in __init__ (declared so attribute access is typed as Tensor)
    slot_rank: Tensor
    slot_alpha: Tensor
    slot_scale: Tensor

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
        dev, dt = w.device, w.dtype
        # lora_A [S, R, in], lora_B [S, out, R]
        self.lora_A = nn.Parameter(torch.zeros(num_slots, rank, in_f, device=dev, dtype=dt))
        self.lora_B = nn.Parameter(torch.zeros(num_slots, out_f, rank, device=dev, dtype=dt))
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
        a: Tensor
        b: Tensor
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
