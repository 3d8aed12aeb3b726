"""``replay``: a shared network plus behaviour cloning on earlier tasks (CLEAR-style).

After each task the buffer receives states visited by the finished policy on that task
(normalised with the task's own statistics, as the network saw them) together with the
policy's outputs and values there. The buffer holds at most ``replay_buffer`` rows, split
evenly over the finished tasks (older tasks are subsampled to make room). While a later
task trains, every PPO minibatch adds ``policy_coef * clone + value_coef * MSE(V, V_old)``
on ``replay_batch`` random buffer rows, where ``clone`` is KL(pi_old || pi_new) or the MSE
between raw policy outputs.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.distributions import kl_divergence

from skillbank.algos.distributions import make_distribution
from skillbank.algos.normalize import ObsNorm
from skillbank.continual.rollouts import sample_states
from skillbank.continual.strategies.base import Context, ExtraLoss, register, tensors_bytes
from skillbank.continual.strategies.shared import SharedNetwork

BUFFER_KEYS = ("obs", "policy_out", "value", "task")


def cloning_loss(
    policy_out: Tensor,
    value: Tensor,
    old_out: Tensor,
    old_value: Tensor,
    action_kind: str,
    kind: str,
    policy_coef: float,
    value_coef: float,
) -> tuple[Tensor, dict[str, float]]:
    """Behaviour cloning of stored outputs: ``policy_coef * (KL(old || new) or MSE on the
    outputs) + value_coef * MSE(value, old_value)``, each a mean over rows."""
    if kind == "kl":
        old = make_distribution(action_kind, old_out)
        new = make_distribution(action_kind, policy_out)
        pol = kl_divergence(old, new).mean()
    else:
        pol = ((policy_out - old_out) ** 2).sum(-1).mean()
    val = ((value - old_value) ** 2).mean()
    loss = policy_coef * pol + value_coef * val
    return loss, {"replay_policy": float(pol.detach()), "replay_value": float(val.detach())}


def merge_buffer(
    buffer: dict[str, Tensor], new: dict[str, Tensor], capacity: int, generator: torch.Generator
) -> dict[str, Tensor]:
    """Add ``new`` rows (one task) and keep at most ``capacity // tasks`` rows per task
    (a uniform random subset of each task's rows, in their original order)."""
    merged = {k: torch.cat([buffer[k], new[k]]) if buffer else new[k] for k in BUFFER_KEYS}
    tasks = torch.unique(merged["task"])
    quota = capacity // len(tasks)
    keep: list[Tensor] = []
    for t in tasks.tolist():
        rows = torch.nonzero(merged["task"] == t).squeeze(1)
        if rows.numel() > quota:
            pick = torch.randperm(rows.numel(), generator=generator)[:quota]
            rows = rows[pick.sort().values]
        keep.append(rows)
    idx = torch.cat(keep)
    return {k: v[idx] for k, v in merged.items()}


@register
class Replay(SharedNetwork):
    name = "replay"
    description = "shared network + behaviour cloning on a bounded buffer of earlier tasks"

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.buffer: dict[str, Tensor] = {}
        self.gen = torch.Generator().manual_seed(ctx.seed + 77)

    def adopt_first(self, net: nn.Module, norm: ObsNorm) -> None:
        super().adopt_first(net, norm)
        self.finish_task(0, norm)

    def finish_task(self, j: int, norm: ObsNorm) -> None:
        cfg = self.ctx.config
        per_task = cfg.replay_buffer // (j + 1)
        seed = self.ctx.seed * 1000 + 500 + j
        states = sample_states(
            self.policy(), self.ctx.specs[j], norm, self.ctx.action_kind, per_task, seed
        )
        with torch.no_grad():
            out, value = self.net(states)
        new = {
            "obs": states,
            "policy_out": out,
            "value": value,
            "task": torch.full((states.shape[0],), j, dtype=torch.long),
        }
        self.buffer = merge_buffer(self.buffer, new, cfg.replay_buffer, self.gen)

    def extra_loss(self) -> ExtraLoss | None:
        if not self.buffer:
            return None
        cfg, kind = self.ctx.config, self.ctx.action_kind

        def clone() -> tuple[Tensor, dict[str, float]]:
            n = self.buffer["obs"].shape[0]
            idx = torch.randint(0, n, (min(cfg.replay_batch, n),), generator=self.gen)
            out, value = self.net(self.buffer["obs"][idx])
            return cloning_loss(
                out,
                value,
                self.buffer["policy_out"][idx],
                self.buffer["value"][idx],
                kind,
                cfg.replay_loss,
                cfg.replay_policy_coef,
                cfg.replay_value_coef,
            )

        return clone

    def memory_bytes(self) -> dict[str, int]:
        return {**super().memory_bytes(), "buffer": tensors_bytes(self.buffer)}

    def state_tensors(self) -> dict[str, Tensor]:
        out = super().state_tensors()
        out.update({f"buffer.{k}": v.contiguous() for k, v in self.buffer.items()})
        out["rng.replay"] = self.gen.get_state()
        return out

    def load_state_tensors(self, tensors: dict[str, Tensor]) -> None:
        super().load_state_tensors(tensors)
        self.buffer = {k[7:]: v for k, v in tensors.items() if k.startswith("buffer.")}
        if "rng.replay" in tensors:
            self.gen.set_state(tensors["rng.replay"])
