"""What an interference experiment runs on: a model's shared trainable parameters (by
name) and, per domain, closures that train them, score them and give a smooth loss.

Nothing here knows about PPO, GRPO, environments or tokenizers: ``control.py`` and
``text.py`` build ``Setting`` objects; ``experiment.py`` only calls these closures."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from skillbank.interference.hessian import LossFn
from skillbank.interference.measures import NeuronLayers


def _no_state() -> object:
    return None


def _ignore_state(state: object) -> None:
    return None


@dataclass
class SharedTask:
    """One domain (a text task or a control task) trained on the shared parameters."""

    name: str
    """Short name shown in tables."""
    train: Callable[[int, int, bool], dict[str, Any]]
    """``(steps, seed, sequence) -> summary``: train the shared parameters in place on
    this domain with the setting's RL code (GRPO or PPO). The sequence passes
    ``sequence=True`` (a setting may then warm up with SFT or keep its best validated
    weights); refresh passes False (plain ``steps`` of RL)."""
    score: Callable[[], float]
    """The domain's score in [0, 100] at the current parameters (accuracy %, or return as
    % of the best return)."""
    make_loss: Callable[[], tuple[LossFn, dict[str, Tensor]]]
    """Called right after the domain is trained (at theta_A): its smooth loss L_A as a
    function of the shared parameters, and the tensors that define it (stored in the run
    folder, e.g. the sampled states)."""
    get_state: Callable[[], object] = _no_state
    """Per-domain state outside the shared parameters (e.g. observation statistics)."""
    set_state: Callable[[object], None] = _ignore_state
    """Restore what ``get_state`` returned."""


@dataclass
class Setting:
    """A model's shared parameters and its domains, in training order."""

    kind: str
    """"control" or "text"."""
    mode: str
    """"full" (every weight) or "shared-adapter" (one LoRA adapter for all domains)."""
    domains: list[SharedTask]
    """The domains in training order."""
    params: dict[str, nn.Parameter]
    """The shared trainable parameters (theta), by name."""
    neuron_layers: NeuronLayers
    """Neurons per layer, as slices of the tensors ``effective`` returns."""
    effective: Callable[[Mapping[str, Tensor]], dict[str, Tensor]]
    """theta -> the weights in which neurons are counted (theta itself in full mode; the
    merged weights W0 + scale * B A in shared-adapter mode)."""
    loss_text: str
    """How L_A is defined (stated in the report)."""
    score_text: str
    """How the score is defined (stated in the report)."""
    steps_unit: str
    """What a training step is ("env steps", "GRPO steps")."""
    active: dict[str, Tensor] | None = None
    """Boolean masks of the coordinates that can train (e.g. a LoRA slot's rows beyond
    the layer's rank stay 0 by construction); None = all. Used by the sparsity measures."""
    info: dict[str, Any] = field(default_factory=dict)
    """JSON-able description of the model and training settings (for results.json)."""

    def theta(self) -> dict[str, Tensor]:
        """A detached copy of the current shared parameters."""
        return {k: p.detach().clone() for k, p in self.params.items()}

    @torch.no_grad()
    def load(self, theta: Mapping[str, Tensor]) -> None:
        """Set the shared parameters to ``theta`` (same names and shapes)."""
        missing = sorted(set(self.params) - set(theta))
        if missing:
            raise KeyError(f"theta lacks shared parameters {missing[:3]}")
        for k, p in self.params.items():
            p.copy_(theta[k])

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.domains]


def identity_effective(theta: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Full mode: neurons are counted on the parameters themselves."""
    return dict(theta)
