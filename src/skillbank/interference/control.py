"""The control case: one actor-critic (full weights, or one shared LoRA adapter on a base
trained on the first task) trained on a suite's tasks in order with the project's PPO loop
(``skillbank.training.loop.train_ppo``), wrapped as a ``Setting``.

Smooth loss of task A: ``KL(pi_{theta_A}(.|s) || pi_theta(.|s))`` averaged over states s
visited by the policy at theta_A on A (sampled actions, A's observation statistics). It is
0 with zero gradient at theta_A, so A's damage is second order there by construction.
Score: greedy return as % of the task's best return (CartPole: 500)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.distributions import kl_divergence
from torch.func import functional_call

from skillbank.algos.distributions import make_distribution
from skillbank.algos.normalize import ObsNorm
from skillbank.interference.config import ControlOptions
from skillbank.interference.measures import NeuronPart
from skillbank.interference.setting import Setting, SharedTask, identity_effective
from skillbank.lora import MultiLoraModel
from skillbank.models import ActorCritic, ActorCriticConfig
from skillbank.tasks import TaskSpec
from skillbank.training.loop import FullBank, LoraBank, evaluate_bank, train_ppo

EVAL_SEED = 515_151
"""Greedy evaluation episodes use seeds derived from this."""
VALID_SEED = EVAL_SEED + 50_000
"""Validation episodes (keep-best during a domain's training) use these seeds."""


def linear_neurons(model: nn.Module, prefix: str, in_effective: set[str]) -> dict[str, list]:
    """Hidden units of every Linear followed by another Linear in the same Sequential:
    unit j owns row j of its weight (and bias entry j) and column j of the next weight."""
    layers: dict[str, list] = {}
    for name, mod in model.named_modules():
        if not isinstance(mod, nn.Sequential):
            continue
        lins = [f"{prefix}{name}.{k}" for k, m in mod.named_children() if _is_linear(m)]
        for cur, nxt in zip(lins[:-1], lins[1:]):
            parts = [NeuronPart(f"{cur}.weight", 0), NeuronPart(f"{nxt}.weight", 1)]
            if f"{cur}.bias" in in_effective:
                parts.append(NeuronPart(f"{cur}.bias", 0))
            layers[cur] = parts
    return layers


def _is_linear(m: nn.Module) -> bool:
    return isinstance(m, nn.Linear) or hasattr(m, "base_layer")


def kl_loss(kind: str, reference: Tensor, out: Tensor) -> Tensor:
    """Mean over rows of ``KL(pi_reference || pi_out)``."""
    return kl_divergence(make_distribution(kind, reference), make_distribution(kind, out)).mean()


class ControlModel:
    """The network, its shared parameters and the PPO pieces every domain uses."""

    def __init__(self, opts: ControlOptions) -> None:
        from skillbank.algos.ppo_defaults import config_with, default_ppo
        from skillbank.tasks.spaces import spaces_of

        self.opts = opts
        obs_dim, self.kind, action_dim, self.max_return = spaces_of(opts.specs[0])
        torch.manual_seed(opts.seed)
        self.net = ActorCritic(
            ActorCriticConfig(
                obs_dim=obs_dim,
                action_kind=self.kind,
                action_dim=action_dim,
                hidden=list(opts.hidden),
            )
        )
        what = "full" if opts.mode == "full" else "lora"
        self.ppo = config_with(default_ppo(opts.specs[0], what), learning_rate=opts.learning_rate)
        self.last_norm: ObsNorm | None = None
        if opts.mode == "full":
            self.module: nn.Module = self.net
            self.bank: Any = FullBank([self.net])
        else:  # shared-adapter
            base_cfg = config_with(default_ppo(opts.specs[0], "full"), total_steps=opts.base_steps)
            res = train_ppo(
                FullBank([self.net]), opts.specs[:1], base_cfg, self.kind, seed=opts.seed
            )
            self.last_norm = res.norms[0]
            self.module = MultiLoraModel(self.net, 1, opts.rank)
            self.module.reset_slot(
                0, opts.rank, 2.0 * opts.rank, torch.Generator().manual_seed(opts.seed)
            )
            self.bank = LoraBank(self.module, [0])
        self.params = {k: p for k, p in self.module.named_parameters() if p.requires_grad}

    def _lora_model(self) -> MultiLoraModel:
        """shared-adapter: the wrapped ``MultiLoraModel``."""
        assert isinstance(self.module, MultiLoraModel)
        return self.module

    def active(self) -> dict[str, Tensor] | None:
        """shared-adapter: the slot's rows and columns within each layer's rank."""
        if self.opts.mode == "full":
            return None
        out = {}
        for name, layer in self._lora_model().lora_layers().items():
            r = int(layer.slot_rank[0])
            a = torch.zeros_like(layer.lora_A, dtype=torch.bool)  # [1, R, in]
            b = torch.zeros_like(layer.lora_B, dtype=torch.bool)  # [1, out, R]
            a[:, :r] = True
            b[:, :, :r] = True
            out[f"base.{name}.lora_A"], out[f"base.{name}.lora_B"] = a, b
        return out

    def policy_out(self, params: Mapping[str, Tensor], x: Tensor) -> Tensor:
        """Policy outputs [B, n_out] with the shared parameters replaced by ``params``."""
        kwargs = (
            {"slot_ids": torch.zeros(x.shape[0], dtype=torch.long)}
            if self.opts.mode != "full"
            else {}
        )
        return functional_call(self.module, dict(params), (x,), kwargs, strict=False)[0]

    def forward(self, x: Tensor, task: Tensor) -> tuple[Tensor, Tensor]:
        return self.bank(x, torch.zeros_like(task))

    def effective(self, theta: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """shared-adapter: merged weights ``W0 + scale * B A`` per adapted Linear."""
        if self.opts.mode == "full":
            return identity_effective(theta)
        out = {}
        for name, layer in self._lora_model().lora_layers().items():
            a = theta[f"base.{name}.lora_A"][0]  # [r, in]
            b = theta[f"base.{name}.lora_B"][0]  # [out, r]
            out[f"base.{name}.weight"] = layer.base_layer.weight + layer.slot_scale[0] * b @ a
        return out

    def score(self, spec: TaskSpec, norm: ObsNorm, seed: int = EVAL_SEED) -> float:
        with torch.no_grad():
            ret = evaluate_bank(
                self.forward, [spec], [norm], self.kind, self.opts.eval_episodes, seed
            )
        if self.max_return:  # % of the best return
            return float(100.0 * ret.mean() / self.max_return)
        return float(ret.mean())  # a family without a known best return: the raw return


class ControlDomain:
    """Closures of one task: train (PPO, keep-best by validation), score, smooth loss."""

    def __init__(self, model: ControlModel, spec: TaskSpec, index: int) -> None:
        self.m, self.spec, self.index = model, spec, index
        self.norm: ObsNorm | None = None

    def current_norm(self) -> ObsNorm:
        if self.norm is not None:
            return self.norm
        return self.m.last_norm or ObsNorm.identity(self.m.net.config.obs_dim)

    def train(self, steps: int, seed: int, sequence: bool) -> dict[str, Any]:
        from skillbank.algos.ppo_defaults import config_with

        m = self.m
        cfg = config_with(m.ppo, total_steps=steps)
        start = self.norm or m.last_norm
        params = list(m.params.values())
        best: dict[str, Any] = {"score": -math.inf}
        every = m.opts.eval_every if sequence else 0

        def hook(row: dict, norms: list[ObsNorm]) -> bool:
            if every and row["update"] % every == 0:
                val = m.score(self.spec, norms[0], VALID_SEED)
                if val >= best["score"]:
                    best.update(
                        score=val, w=[p.detach().clone() for p in params], norm=norms[0].copy()
                    )
            return False

        res = train_ppo(
            m.bank,
            [self.spec],
            cfg,
            m.kind,
            seed=seed,
            init_norms=[start] if start else None,
            should_stop=hook,
        )
        norm, kept = res.norms[0], False
        if every:
            last = m.score(self.spec, norm, VALID_SEED)
            if "w" in best and best["score"] > last:
                with torch.no_grad():
                    for p, w in zip(params, best["w"]):
                        p.copy_(w)
                norm, kept = best["norm"], True
        self.norm = m.last_norm = norm
        return {
            "env_steps": res.steps_per_task,
            "kept_best": kept,
            "recent_return": res.curves[-1]["episodic_return"][0],
        }

    def score(self) -> float:
        return self.m.score(self.spec, self.current_norm())

    def make_loss(self) -> tuple[Any, dict[str, Tensor]]:
        from skillbank.continual.rollouts import sample_states

        m = self.m
        states = sample_states(
            m.forward,
            self.spec,
            self.current_norm(),
            m.kind,
            m.opts.loss_states,
            m.opts.seed * 7 + self.index,
        )  # [n, obs_dim]
        with torch.no_grad():
            ref = m.policy_out(m.params, states)  # [n, n_out]

        def loss(params: Mapping[str, Tensor]) -> Tensor:
            return kl_loss(m.kind, ref, m.policy_out(params, states))

        return loss, {"states": states, "reference_policy_out": ref}

    def get_state(self) -> object:
        return self.norm.copy() if self.norm is not None else None

    def set_state(self, state: object) -> None:
        self.norm = state  # type: ignore[assignment]


def control_setting(opts: ControlOptions) -> Setting:
    """A ``Setting`` for ``opts.specs`` on one actor-critic."""
    model = ControlModel(opts)
    domains = []
    for i, spec in enumerate(opts.specs):
        cd = ControlDomain(model, spec, i)
        domains.append(
            SharedTask(spec.name, cd.train, cd.score, cd.make_loss, cd.get_state, cd.set_state)
        )
    eff_names = set(model.effective(model.params))
    prefix = "" if opts.mode == "full" else "base."
    layers = linear_neurons(model.net, prefix, eff_names)
    return Setting(
        kind="control",
        mode=opts.mode,
        domains=domains,
        params=model.params,
        neuron_layers=layers,
        effective=model.effective,
        active=model.active(),
        loss_text=(
            "KL(pi_theta_A(.|s) || pi_theta(.|s)), mean over "
            f"{opts.loss_states} states s visited by the policy at theta_A on A "
            "(sampled actions; A's observation statistics); 0 with zero gradient at theta_A"
        ),
        score_text=(
            f"greedy return as % of the best return ({model.max_return}), "
            f"{opts.eval_episodes} episodes (fixed seeds)"
            if model.max_return
            else f"greedy return (no known best return), {opts.eval_episodes} episodes"
        ),
        steps_unit="env steps",
        info={
            "tasks": [s.to_dict() for s in opts.specs],
            "hidden": opts.hidden,
            "rank": opts.rank if opts.mode != "full" else None,
            "base_steps": opts.base_steps if opts.mode != "full" else None,
            "ppo": vars(model.ppo),
            "eval_every_updates": opts.eval_every,
            "loss_states": opts.loss_states,
            "seed": opts.seed,
        },
    )
