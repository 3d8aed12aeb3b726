"""A toy Setting for fast tests: a 4-8-3 tanh MLP, each domain a regression onto its own
random teacher, trained by plain gradient descent (no RL)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from skillbank.interference.measures import NeuronPart
from skillbank.interference.setting import Setting, SharedTask, identity_effective


def mlp(params: Mapping[str, Tensor], x: Tensor) -> Tensor:
    """x [n, 4] -> [n, 3]."""
    return torch.tanh(x @ params["l1.weight"].T) @ params["l2.weight"].T


def toy_setting(num_domains: int = 3, seed: int = 0, lr: float = 0.3) -> Setting:
    gen = torch.Generator().manual_seed(seed)
    params = {
        "l1.weight": nn.Parameter(0.5 * torch.randn(8, 4, generator=gen)),
        "l2.weight": nn.Parameter(0.5 * torch.randn(3, 8, generator=gen)),
    }
    domains = []
    for i in range(num_domains):
        x = torch.randn(64, 4, generator=gen)
        teacher = {
            k: p.detach() + 0.3 * torch.randn(p.shape, generator=gen) for k, p in params.items()
        }
        y = mlp(teacher, x).detach()

        def loss(p: Mapping[str, Tensor], x: Tensor = x, y: Tensor = y) -> Tensor:
            return ((mlp(p, x) - y) ** 2).mean()

        def train(steps: int, s: int, keep_best: bool, loss=loss) -> dict:  # noqa: ANN001
            opt = torch.optim.SGD(list(params.values()), lr=lr)
            for _ in range(steps):
                opt.zero_grad()
                loss(params).backward()
                opt.step()
            return {"final_loss": float(loss(params).detach())}

        def score(loss=loss) -> float:  # noqa: ANN001
            with torch.no_grad():
                return 100.0 * math.exp(-float(loss(params)))

        def make_loss(loss=loss, x: Tensor = x) -> tuple:  # noqa: ANN001
            return loss, {"x": x}

        domains.append(SharedTask(f"toy/d{i}", train, score, make_loss))
    layers = {"l1": [NeuronPart("l1.weight", 0), NeuronPart("l2.weight", 1)]}
    return Setting(
        kind="toy",
        mode="full",
        domains=domains,
        params=params,
        neuron_layers=layers,
        effective=identity_effective,
        loss_text="MSE to the domain's teacher",
        score_text="100 exp(-MSE)",
        steps_unit="GD steps",
    )
