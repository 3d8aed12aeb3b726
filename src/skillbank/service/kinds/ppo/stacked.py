"""Acting for many runs at once: one forward over every served run's rows.

The multi-run orchestrator only acts (no gradients), so each run's broadcast adapter is
merged into its own copy of every LoRA target's weight (``W + alpha / r * B A``, the same
maths as ``MultiLoraModel.merged_copy``), and the copies of all local slots are stacked:
a layer holds ``weight [S, out, in]`` and computes ``x [S, M, in] -> [S, M, out]`` with
one batched matmul. Slot ``s`` of the input is run ``s``'s block of rows (padded to ``M``),
so one call acts for every run, with Python work that does not grow with the number of
runs (the per-row routing of ``MultiLoraModel`` costs more than the whole small MLP).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from skillbank.lora import MultiLoraModel


class StackedLinear(nn.Module):
    """``S`` versions of one ``nn.Linear``: input ``[S, M, in]``, output ``[S, M, out]``."""

    # buffers registered in __init__ (declared so attribute access is typed as Tensor)
    weight_t: Tensor
    bias: Tensor

    def __init__(self, base: nn.Linear, num_slots: int) -> None:
        super().__init__()
        w = base.weight.detach()
        b = base.bias.detach() if base.bias is not None else torch.zeros(w.shape[0])
        self.register_buffer("weight_t", w.t().unsqueeze(0).repeat(num_slots, 1, 1).clone())
        self.register_buffer("bias", b.reshape(1, 1, -1).repeat(num_slots, 1, 1).clone())

    def forward(self, x: Tensor) -> Tensor:
        return torch.baddbmm(self.bias, x, self.weight_t)


class StackedPolicy:
    """A copy of the base whose LoRA targets are ``StackedLinear`` layers, one slot per
    served run; ``load(slot, model)`` merges slot 0 of a 1-slot ``MultiLoraModel``."""

    def __init__(self, model: MultiLoraModel, num_slots: int) -> None:
        self.num_slots = num_slots
        self.net = model.plain_base().eval().requires_grad_(False)
        self.layers: dict[str, StackedLinear] = {}
        for name in model.lora_layers():
            parent_name, _, child = name.rpartition(".")
            parent = self.net.get_submodule(parent_name) if parent_name else self.net
            lin = parent.get_submodule(child)
            assert isinstance(lin, nn.Linear)
            self.layers[name] = StackedLinear(lin, num_slots)
            setattr(parent, child, self.layers[name])
        self._base = {
            n: (la.weight_t[0].clone(), la.bias[0].clone()) for n, la in self.layers.items()
        }

    @torch.no_grad()
    def load(self, slot: int, model: MultiLoraModel) -> None:
        """Set ``slot`` to the base with slot 0 of ``model`` merged in."""
        for name, lora in model.lora_layers().items():
            w_t, b = self._base[name]
            layer = self.layers[name]
            layer.weight_t[slot] = w_t + lora.delta_weight(0).t().to(w_t)
            layer.bias[slot] = b

    @torch.no_grad()
    def clear(self, slot: int) -> None:
        """Back to the plain base (a freed slot)."""
        for name, (w_t, b) in self._base.items():
            self.layers[name].weight_t[slot] = w_t
            self.layers[name].bias[slot] = b

    @torch.no_grad()
    def __call__(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x [S, M, in]`` -> (policy_out ``[S, M, n_out]``, value ``[S, M]``)."""
        return self.net(x)

    @torch.no_grad()
    def one(self, slot: int, x: Tensor) -> tuple[Tensor, Tensor]:
        """The rows ``x [R, in]`` of one slot (e.g. final observations to bootstrap)."""
        z = x.new_zeros(self.num_slots, *x.shape)
        z[slot] = x
        policy_out, value = self.net(z)
        return policy_out[slot], value[slot]
