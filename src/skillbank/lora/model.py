"""Multi-slot LoRA in a whole module: inject ``MultiLoraLinear`` layers into a base,
strip them again, and ``MultiLoraModel``, which owns the router of its layers."""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from contextlib import AbstractContextManager

import torch
from torch import Tensor, nn

from skillbank.errors import ConfigError
from skillbank.lora.layer import MultiLoraLinear
from skillbank.lora.routing import SlotRouter


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
        raise ConfigError(
            f"field target_modules: no nn.Linear in the model matches {target_modules!r}"
        )
    layers = {}
    for name, module in found:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        layer = MultiLoraLinear(module, num_slots, rank, router)
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
