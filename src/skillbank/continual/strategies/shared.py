"""One shared network for every task: ``finetune``, ``l2`` and ``ewc``.

The network is single-headed and does not see the task; each task has its own running
observation normaliser (index = position in the sequence), kept after its task ends and
used whenever that task is evaluated. A new task's normaliser starts as a copy of the
previous task's (the inputs the network was last trained on) and is then updated on the
new task only.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from skillbank.algos.distributions import make_distribution, sample_seeded
from skillbank.algos.normalize import ObsNorm
from skillbank.continual.rollouts import sample_states
from skillbank.continual.strategies.base import (
    Context,
    ExtraLoss,
    Forward,
    Strategy,
    TaskSetup,
    module_bytes,
    register,
    tensors_bytes,
)
from skillbank.models import ActorCritic, ActorCriticConfig
from skillbank.training.loop import FullBank


def quadratic_penalty(
    params: Mapping[str, Tensor],
    anchor: dict[str, Tensor],
    weight: dict[str, Tensor] | None,
    coef: float,
) -> Tensor:
    """``coef / 2 * sum_k w_k (theta_k - anchor_k)^2`` (w = 1 when ``weight`` is None)."""
    total = torch.zeros(())
    for name, p in params.items():
        sq = (p - anchor[name]) ** 2
        total = total + (sq if weight is None else weight[name] * sq).sum()
    return 0.5 * coef * total


def diagonal_fisher(
    net: nn.Module, states: Tensor, action_kind: str, seed: int, value: bool, chunk: int = 128
) -> dict[str, Tensor]:
    """Diagonal Fisher information of ``net`` (an actor-critic returning
    ``(policy_out, value)``) on ``states``: the mean over states of the squared gradient of
    ``log pi(a|s)`` with ``a`` sampled from the policy, plus (``value``) the squared
    gradient of ``V(s)`` (the Fisher of a unit-variance Gaussian around V)."""
    params = {k: p.detach() for k, p in net.named_parameters()}
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        actions = sample_seeded(action_kind, net(states)[0], gen)

    def logp(p: dict[str, Tensor], x: Tensor, a: Tensor) -> tuple[Tensor, Tensor]:
        out, v = functional_call(net, p, (x[None],))
        lp = make_distribution(action_kind, out).log_prob(a[None]).sum()
        return lp, v.sum()

    def per_sample(p: dict[str, Tensor], x: Tensor, a: Tensor) -> tuple[dict, dict]:
        g_pi = grad(lambda q: logp(q, x, a)[0])(p)
        g_v = grad(lambda q: logp(q, x, a)[1])(p)
        return g_pi, g_v

    fisher = {k: torch.zeros_like(p) for k, p in params.items()}
    for x, a in zip(states.split(chunk), actions.split(chunk)):
        g_pi, g_v = vmap(per_sample, in_dims=(None, 0, 0))(params, x, a)
        for k in fisher:
            fisher[k] += g_pi[k].pow(2).sum(0)
            if value:
                fisher[k] += g_v[k].pow(2).sum(0)
    return {k: f / states.shape[0] for k, f in fisher.items()}


class SharedNetwork(Strategy):
    """A single actor-critic trained on every task in turn (no extra loss)."""

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        net_cfg = ActorCriticConfig(
            obs_dim=ctx.obs_dim,
            action_kind=ctx.action_kind,
            action_dim=ctx.action_dim,
            hidden=list(ctx.config.hidden),
        )
        self.net = ActorCritic(net_cfg)

    def adopt_first(self, net: nn.Module, norm: ObsNorm) -> None:
        self.net.load_state_dict(net.state_dict())

    def setup_task(self, j: int, norms: list[ObsNorm]) -> TaskSetup:
        return TaskSetup(
            FullBank([self.net]), self.ctx.full_ppo, norms[-1].copy(), self.extra_loss()
        )

    def extra_loss(self) -> ExtraLoss | None:
        return None

    def policy(self) -> Forward:
        return lambda x, task: self.net(x)

    def memory_bytes(self) -> dict[str, int]:
        return {"network": module_bytes(self.net)}

    def state_tensors(self) -> dict[str, Tensor]:
        return {f"net.{k}": v for k, v in self.net.state_dict().items()}

    def load_state_tensors(self, tensors: dict[str, Tensor]) -> None:
        self.net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})


@register
class Finetune(SharedNetwork):
    name = "finetune"
    description = "one shared network trained on each task in turn (the forgetting baseline)"


class Anchored(SharedNetwork):
    """A shared network with a quadratic penalty towards the weights after the last task."""

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.anchor: dict[str, Tensor] = {}
        self.weight: dict[str, Tensor] | None = None
        self.coef = 0.0

    def extra_loss(self) -> ExtraLoss | None:
        if not self.anchor:
            return None
        params = dict(self.net.named_parameters())

        def penalty() -> tuple[Tensor, dict[str, float]]:
            loss = quadratic_penalty(params, self.anchor, self.weight, self.coef)
            return loss, {f"{self.name}_penalty": float(loss.detach())}

        return penalty

    def set_anchor(self) -> None:
        self.anchor = {k: p.detach().clone() for k, p in self.net.named_parameters()}

    def memory_bytes(self) -> dict[str, int]:
        out = {**super().memory_bytes(), "anchor": tensors_bytes(self.anchor)}
        if self.weight is not None:
            out["fisher"] = tensors_bytes(self.weight)
        return out

    def state_tensors(self) -> dict[str, Tensor]:
        out = super().state_tensors()
        out.update({f"anchor.{k}": v for k, v in self.anchor.items()})
        if self.weight is not None:
            out.update({f"fisher.{k}": v for k, v in self.weight.items()})
        return out

    def load_state_tensors(self, tensors: dict[str, Tensor]) -> None:
        super().load_state_tensors(tensors)
        self.anchor = {k[7:]: v for k, v in tensors.items() if k.startswith("anchor.")}
        fisher = {k[7:]: v for k, v in tensors.items() if k.startswith("fisher.")}
        self.weight = fisher or self.weight


@register
class L2(Anchored):
    name = "l2"
    description = "shared network + L2 penalty towards the weights after the previous task"

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.coef = ctx.config.l2_coef

    def adopt_first(self, net: nn.Module, norm: ObsNorm) -> None:
        super().adopt_first(net, norm)
        self.set_anchor()

    def finish_task(self, j: int, norm: ObsNorm) -> None:
        self.set_anchor()


@register
class EWC(Anchored):
    name = "ewc"
    description = "shared network + Fisher-weighted penalty (diagonal Fisher summed over tasks)"

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.coef = ctx.config.ewc_coef

    def adopt_first(self, net: nn.Module, norm: ObsNorm) -> None:
        super().adopt_first(net, norm)
        self.consolidate(0, norm)

    def finish_task(self, j: int, norm: ObsNorm) -> None:
        self.consolidate(j, norm)

    def consolidate(self, j: int, norm: ObsNorm) -> None:
        """Add task j's Fisher to the running sum; anchor at the current weights."""
        cfg, seed = self.ctx.config, self.ctx.seed * 1000 + j
        states = sample_states(
            self.policy(), self.ctx.specs[j], norm, self.ctx.action_kind, cfg.fisher_states, seed
        )
        fisher = diagonal_fisher(self.net, states, self.ctx.action_kind, seed, cfg.ewc_value_fisher)
        if self.weight is None:
            self.weight = fisher
        else:
            self.weight = {k: self.weight[k] + fisher[k] for k in fisher}
        self.set_anchor()
        self.extras.setdefault("fisher_mean", []).append(
            float(torch.cat([f.flatten() for f in fisher.values()]).mean())
        )
