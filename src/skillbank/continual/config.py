"""The typed configuration of a continual run (loadable from a TOML ``[continual]`` table)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

# Fields that may differ between an interrupted run and its ``--resume``: they only add
# runs (more strategies or seeds) and do not change the runs already on disk.
RESUMABLE_FIELDS = frozenset({"strategies", "seeds"})


@dataclass
class ContinualConfig:
    """Everything that decides the numbers of a continual run (written to config.json)."""

    suite: str = "cartpole-physics"
    """Named task suite (see ``skillbank suites``)."""
    tasks: list[int] | None = None
    """Indices of the suite's tasks to train, in training order (None = all, suite order).
    An index may appear twice: the task is then visited again later in the sequence
    (as Continual World's CW20 repeats CW10) and each visit is its own column of R."""
    strategies: list[str] = field(default_factory=lambda: ["finetune", "lora"])
    """Strategies to run (see ``skillbank.continual.strategies.STRATEGIES``)."""
    steps_per_task: int = 200_000
    """Environment steps per task (rounded down to whole PPO updates)."""
    seeds: int = 3
    """Number of seeds (``first_seed`` .. ``first_seed + seeds - 1``)."""
    first_seed: int = 0
    """The first seed."""
    eval_every: int = 10_240
    """Evaluate every task every this many steps (rounded up to whole PPO updates)."""
    eval_episodes: int = 10
    """Greedy evaluation episodes per task and evaluation (fixed seeds)."""
    keep_best: bool = True
    """End each task's window with the weights that scored best on that task in greedy
    validation episodes (seeds disjoint from the evaluation's; ties: the later weights),
    as ``train-base`` does; False = PPO's last iterate (Continual World's protocol)."""
    references: bool = True
    """Train each task alone from scratch per seed (needed for FT, and for the score
    normalisation of families without a known max return)."""
    hidden: list[int] = field(default_factory=lambda: [256, 256])
    """Hidden widths of the actor-critic (policy and value trunks)."""
    envs_per_task: int | None = None
    """Parallel environments per task (None = the PPO default)."""
    full_lr: float | None = None
    """Adam learning rate of full networks (None = ``default_ppo(spec, "base")``)."""
    lora_lr: float | None = None
    """Adam learning rate of LoRA skills (None = ``default_ppo(spec, "lora")``)."""
    lora_rank: int = 8
    """Rank of each LoRA skill."""
    lora_alpha: float = 16.0
    """LoRA alpha (the update is scaled by alpha / rank)."""
    l2_coef: float = 1.0
    """Weight of ``sum (theta - theta_prev)^2 / 2`` in the ``l2`` strategy."""
    ewc_coef: float = 100_000.0
    """Weight of ``sum F (theta - theta_prev)^2 / 2`` in the ``ewc`` strategy."""
    ewc_value_fisher: bool = True
    """Also protect the value trunk in ``ewc`` (Fisher of a unit-variance Gaussian on V)."""
    fisher_states: int = 1024
    """States sampled from a finished task to estimate its diagonal Fisher."""
    replay_buffer: int = 10_000
    """Total states kept by ``replay`` (split evenly over the finished tasks)."""
    replay_batch: int = 256
    """Buffer rows per behaviour-cloning term (one term per PPO minibatch)."""
    replay_loss: str = "kl"
    """Policy cloning loss: "kl" (KL(old || new)) or "mse" (on the raw policy outputs)."""
    replay_policy_coef: float = 1.0
    """Weight of the policy cloning term."""
    replay_value_coef: float = 0.5
    """Weight of the value regression term (MSE to the stored values)."""

    def __post_init__(self) -> None:
        positive = ["steps_per_task", "seeds", "eval_every", "eval_episodes", "lora_rank"]
        positive += ["fisher_states", "replay_buffer", "replay_batch"]
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"continual config: {name} must be an integer >= 1, got {value!r}")
        if self.envs_per_task is not None and self.envs_per_task < 1:
            raise ValueError(
                f"continual config: envs_per_task must be >= 1, got {self.envs_per_task}"
            )
        if not self.strategies:
            raise ValueError("continual config: strategies is empty")
        if len(set(self.strategies)) != len(self.strategies):
            raise ValueError(f"continual config: strategies repeat: {self.strategies}")
        if self.tasks is not None and not self.tasks:
            raise ValueError("continual config: tasks is empty (None = every task of the suite)")
        if not self.hidden or any(h < 1 for h in self.hidden):
            raise ValueError(f"continual config: hidden must be positive widths, got {self.hidden}")
        if self.replay_loss not in ("kl", "mse"):
            raise ValueError(
                f"continual config: replay_loss must be 'kl' or 'mse', got {self.replay_loss!r}"
            )
        for name in (
            "l2_coef",
            "ewc_coef",
            "replay_policy_coef",
            "replay_value_coef",
            "lora_alpha",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"continual config: {name} must be >= 0")
        for name in ("full_lr", "lora_lr"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"continual config: {name} must be > 0, got {value}")

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.first_seed, self.first_seed + self.seeds))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ContinualConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(
                f"continual config: unknown field(s) {unknown}; valid: {sorted(known)}"
            )
        return cls(**d)

    def mismatch(self, other: ContinualConfig) -> list[str]:
        """Fields (other than ``RESUMABLE_FIELDS``) whose values differ from ``other``."""
        a, b = self.to_dict(), other.to_dict()
        return [k for k in a if k not in RESUMABLE_FIELDS and a[k] != b[k]]


def load_toml(path: Path, base: ContinualConfig) -> ContinualConfig:
    """``base`` updated with the ``[continual]`` table of a TOML file (fields type-checked)."""
    from skillbank._legacy_config import load_table

    return load_table(path, "continual", base)
