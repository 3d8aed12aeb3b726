"""``lora`` and ``lora-transfer``: a frozen base and one LoRA skill per later task.

The base is the full network trained on task 0 (then frozen). Task i > 0 gets LoRA slot
i - 1 of a ``MultiLoraModel`` (rank ``lora_rank`` on every Linear of both trunks) and its
own observation statistics; task 0 is the base itself (slot -1). The task identity is
known at test time (Continual World's multi-head setting): task i is always evaluated
with its own skill. A skill is never trained again after its task, so its score cannot
change: forgetting is zero by construction, up to evaluation noise (the evaluation seeds
are fixed, so it is exactly zero).

``lora`` starts every skill fresh (A random, B = 0: the skill acts as the base) with the
base's statistics. ``lora-transfer`` first scores the base and every existing skill
zero-shot on the new task and starts from the best skill (a copy of its adapter and
statistics) when it beats the base; otherwise fresh, as ``lora``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from skillbank.algos.normalize import ObsNorm
from skillbank.continual.strategies.base import (
    Context,
    Forward,
    Strategy,
    TaskSetup,
    module_bytes,
    register,
)
from skillbank.lora import MultiLoraModel
from skillbank.models import ActorCritic, ActorCriticConfig
from skillbank.training.loop import LoraBank, evaluate_bank


@register
class Lora(Strategy):
    name = "lora"
    description = "frozen base (task 0's network) + one new LoRA skill per later task"

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        cfg = ctx.config
        net_cfg = ActorCriticConfig(
            obs_dim=ctx.obs_dim,
            action_kind=ctx.action_kind,
            action_dim=ctx.action_dim,
            hidden=list(cfg.hidden),
        )
        self.model = MultiLoraModel(ActorCritic(net_cfg), max(ctx.num_tasks - 1, 1), cfg.lora_rank)
        self.slot_table = torch.arange(-1, ctx.num_tasks - 1)  # task i -> slot i - 1
        self.extras["start_from"] = ["scratch"]

    def adopt_first(self, net: nn.Module, norm: ObsNorm) -> None:
        target = self.model.base
        for name, p in net.named_parameters():
            owner, _, leaf = name.rpartition(".")
            layer = target.get_submodule(owner)
            dest = getattr(layer, "base_layer", layer)
            getattr(dest, leaf).data.copy_(p.detach())

    def start_norm(self, i: int, norms: list[ObsNorm]) -> ObsNorm:
        return norms[0]

    def fresh_slot(self, j: int) -> None:
        gen = torch.Generator().manual_seed(self.ctx.seed * 1000 + j)
        rank, alpha = self.ctx.config.lora_rank, self.ctx.config.lora_alpha
        self.model.reset_slot(j - 1, rank, alpha, generator=gen)

    def choose_start(self, j: int, norms: list[ObsNorm]) -> ObsNorm:
        """Initialise task j's slot; returns the statistics the skill starts from."""
        self.fresh_slot(j)
        self.extras["start_from"].append("base")
        return norms[0].copy()

    def setup_task(self, j: int, norms: list[ObsNorm]) -> TaskSetup:
        init_norm = self.choose_start(j, norms)
        bank = LoraBank(self.model, [j - 1])
        return TaskSetup(bank, self.ctx.lora_ppo, init_norm, None)

    def policy(self) -> Forward:
        table = self.slot_table

        def forward(x: Tensor, task: Tensor) -> tuple[Tensor, Tensor]:
            with self.model.slots(table[task]):
                return self.model.base(x)

        return forward

    def memory_bytes(self) -> dict[str, int]:
        """The plain base plus each skill's unpadded adapter (rank r, not the capacity)."""
        base = sum(module_bytes(layer.base_layer) for layer in self.model.lora_layers().values())
        others = sum(
            p.numel() * p.element_size()
            for name, p in self.model.base.named_parameters()
            if "base_layer" not in name and "lora_" not in name
        )
        skills = 0
        trained = len(self.extras["start_from"]) - 1
        for k in range(trained):
            for a, b, _ in self.model.slot_state(k).values():
                skills += a.numel() * a.element_size() + b.numel() * b.element_size()
        return {"base": base + others, "skills": skills}

    def state_tensors(self) -> dict[str, Tensor]:
        return {f"model.{k}": v.contiguous() for k, v in self.model.state_dict().items()}

    def load_state_tensors(self, tensors: dict[str, Tensor]) -> None:
        self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})


@register
class LoraTransfer(Lora):
    name = "lora-transfer"
    description = "as lora, but a new skill starts from the best existing skill zero-shot"

    def choose_start(self, j: int, norms: list[ObsNorm]) -> ObsNorm:
        """Score the base (candidate 0) and skills 1..j-1 on task j; copy the best skill
        if it beats the base, else start fresh."""
        cfg = self.ctx.config
        candidates = list(range(j))  # task index whose parameters act: 0 = the base
        table = self.slot_table[candidates]

        def forward(x: Tensor, task: Tensor) -> tuple[Tensor, Tensor]:
            with self.model.slots(table[task]):
                return self.model.base(x)

        with torch.no_grad():
            scores = evaluate_bank(
                forward,
                [self.ctx.specs[j]] * len(candidates),
                [norms[k] for k in candidates],
                self.ctx.action_kind,
                cfg.eval_episodes,
                seed=self.ctx.seed * 1000 + 900 + j,
            ).mean(1)
        best = int(scores.argmax())
        self.extras.setdefault("zero_shot", []).append([float(s) for s in scores])
        if best > 0 and scores[best] > scores[0]:
            self.model.copy_slot(best - 1, j - 1)
            self.extras["start_from"].append(f"task {best}")
            return norms[best].copy()
        self.fresh_slot(j)
        self.extras["start_from"].append("base")
        return norms[0].copy()
