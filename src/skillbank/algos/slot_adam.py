"""Adam over stacked per-slot parameters: one optimiser state per run, in one set of tensors.

Every multi-LoRA parameter has the slot as its leading dim (``lora_A [S, R, in]``), so the
runs of the trainer share tensors but not optimisers. ``SlotAdam`` keeps Adam's moments
elementwise (``[S, ...]``, like the parameters) and a learning rate and step count per slot.
``step()`` updates only the *active* slots (those with data in this update) that were not
*skipped* (non-finite gradients); the others keep their parameters, moments and step count.
For one slot it computes exactly what ``torch.optim.Adam`` computes (same operations in
the same order), which the unit tests check.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor


class SlotAdam:
    """Adam with per-slot learning rate and step count over ``[S, ...]`` parameters."""

    def __init__(
        self,
        params: Iterable[Tensor],
        num_slots: int,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-5,
    ) -> None:
        self.params = list(params)
        for p in self.params:
            if p.dim() < 1 or p.shape[0] != num_slots:
                raise ValueError(f"parameter of shape {tuple(p.shape)} has no slot dim {num_slots}")
        self.num_slots = num_slots
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        self.lr = torch.full((num_slots,), float(lr), dtype=torch.float64)
        self.steps = torch.zeros(num_slots, dtype=torch.int64)
        self.active = torch.ones(num_slots, dtype=torch.bool)
        self.skipped = torch.zeros(num_slots, dtype=torch.bool)

    # ----------------------------------------------------------------- control
    def set_active(self, slots: Sequence[int]) -> None:
        """Only ``slots`` are updated by the next ``step()`` calls; clears ``skipped``."""
        self.active.zero_()
        self.active[list(slots)] = True
        self.skipped.zero_()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    @torch.no_grad()
    def skip_nonfinite(self) -> list[int]:
        """Mark active slots with a NaN/inf gradient as skipped (and zero their gradient,
        so per-slot clipping stays finite for the others); returns the new ones."""
        grads = [p.grad for p in self.params if p.grad is not None]
        if not grads or bool(torch.isfinite(torch.stack([g.sum() for g in grads]).sum())):
            return []  # fast path: a NaN or inf anywhere would make the total non-finite
        bad = torch.zeros(self.num_slots, dtype=torch.bool)
        for p in self.params:
            if p.grad is not None:
                bad |= ~torch.isfinite(p.grad).reshape(self.num_slots, -1).all(1)
        new = bad & self.active & ~self.skipped
        self.skipped |= bad & self.active
        if bool(bad.any()):
            keep = (~bad).to(self.params[0].dtype)
            for p in self.params:
                if p.grad is not None:
                    p.grad.nan_to_num_(0.0, 0.0, 0.0).mul_(keep.view(-1, *[1] * (p.dim() - 1)))
        return [int(k) for k in torch.nonzero(new).flatten()]

    # -------------------------------------------------------------------- step
    @torch.no_grad()
    def step(self) -> None:
        """One Adam step for every active, not skipped slot."""
        upd = self.active & ~self.skipped
        idx = torch.nonzero(upd).flatten()
        if idx.numel() == 0:
            return
        self.steps[idx] += 1
        t = self.steps[idx].to(torch.float64)
        bias1 = 1.0 - torch.pow(torch.tensor(self.beta1, dtype=torch.float64), t)
        bias2 = 1.0 - torch.pow(torch.tensor(self.beta2, dtype=torch.float64), t)
        step_size = self.lr[idx] / bias1  # [N] float64, as torch's python-float step size
        bias2_sqrt = bias2.sqrt()
        whole = idx.numel() == self.num_slots
        for p, m, v in zip(self.params, self.exp_avg, self.exp_avg_sq):
            if p.grad is None:
                continue
            shape = (-1,) + (1,) * (p.dim() - 1)
            neg_step = (-step_size).to(p.dtype).view(shape)
            b2s = bias2_sqrt.to(p.dtype).view(shape)
            if whole:
                g, mi, vi = p.grad, m, v
            else:
                g, mi, vi = (
                    p.grad.index_select(0, idx),
                    m.index_select(0, idx),
                    v.index_select(0, idx),
                )
            mi.lerp_(g, 1 - self.beta1)
            vi.mul_(self.beta2).addcmul_(g, g, value=1 - self.beta2)
            denom = (vi.sqrt() / b2s).add_(self.eps)
            delta = (neg_step * mi) / denom  # addcdiv's order: (value * t1) / t2
            if whole:
                p.add_(delta)
            else:
                m.index_copy_(0, idx, mi)
                v.index_copy_(0, idx, vi)
                p.index_copy_(0, idx, p.index_select(0, idx) + delta)

    # ------------------------------------------------------------ slot state
    def reset_slot(self, k: int, lr: float | None = None) -> None:
        """Fresh state for slot ``k`` (a new run)."""
        for m, v in zip(self.exp_avg, self.exp_avg_sq):
            m[k].zero_()
            v[k].zero_()
        self.steps[k] = 0
        if lr is not None:
            self.lr[k] = lr

    def slot_state(self, k: int) -> tuple[int, list[Tensor], list[Tensor]]:
        """(step count, [exp_avg[k]], [exp_avg_sq[k]]) of slot ``k`` (copies)."""
        return (
            int(self.steps[k]),
            [m[k].clone() for m in self.exp_avg],
            [v[k].clone() for v in self.exp_avg_sq],
        )

    @torch.no_grad()
    def load_slot_state(
        self, k: int, step: int, exp_avg: Sequence[Tensor], exp_avg_sq: Sequence[Tensor]
    ) -> None:
        if len(exp_avg) != len(self.params) or len(exp_avg_sq) != len(self.params):
            raise ValueError(f"expected {len(self.params)} moment tensors per kind")
        for m, v, a, b in zip(self.exp_avg, self.exp_avg_sq, exp_avg, exp_avg_sq):
            if a.shape != m[k].shape or b.shape != v[k].shape:
                raise ValueError(f"moment shape {tuple(a.shape)}, expected {tuple(m[k].shape)}")
            m[k].copy_(a)
            v[k].copy_(b)
        self.steps[k] = int(step)
