"""The typed configuration of a continual run (loadable from a TOML ``[continual]`` table
with ``skillbank.config.load_toml(path, ContinualConfig, "continual", base)``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from skillbank.config import Config, unique_items, validate

# Fields that may differ between an interrupted run and its ``--resume``: they only add
# runs (more strategies or seeds) and do not change the runs already on disk.
RESUMABLE_FIELDS = frozenset({"strategies", "seeds"})


class ContinualConfig(Config):
    """Everything that decides the numbers of a continual run (written to config.json)."""

    suite: str = "cartpole-physics"
    """Named task suite (see ``skillbank suites``)."""
    tasks: list[int] | None = Field(default=None, min_length=1)
    """Indices of the suite's tasks to train, in training order (None = all, suite order).
    An index may appear twice: the task is then visited again later in the sequence
    (as Continual World's CW20 repeats CW10) and each visit is its own column of R."""
    strategies: list[str] = Field(default_factory=lambda: ["finetune", "lora"], min_length=1)
    """Strategies to run (see ``skillbank.continual.strategies.STRATEGIES``)."""
    steps_per_task: int = Field(default=200_000, ge=1)
    """Environment steps per task (rounded down to whole PPO updates)."""
    seeds: int = Field(default=3, ge=1)
    """Number of seeds (``first_seed`` .. ``first_seed + seeds - 1``)."""
    first_seed: int = Field(default=0, ge=0)
    """The first seed."""
    eval_every: int = Field(default=10_240, ge=1)
    """Evaluate every task every this many steps (rounded up to whole PPO updates)."""
    eval_episodes: int = Field(default=10, ge=1)
    """Greedy evaluation episodes per task and evaluation (fixed seeds)."""
    keep_best: bool = True
    """End each task's window with the weights that scored best on that task in greedy
    validation episodes (seeds disjoint from the evaluation's; ties: the later weights),
    as ``train-base`` does; False = PPO's last iterate (Continual World's protocol)."""
    references: bool = True
    """Train each task alone from scratch per seed (needed for FT, and for the score
    normalisation of families without a known max return)."""
    hidden: list[int] = Field(default_factory=lambda: [256, 256], min_length=1)
    """Hidden widths of the actor-critic (policy and value trunks)."""
    envs_per_task: int | None = Field(default=None, ge=1)
    """Parallel environments per task (None = the PPO default)."""
    full_lr: float | None = Field(default=None, gt=0)
    """Adam learning rate of full networks (None = ``default_ppo(spec, "base")``)."""
    lora_lr: float | None = Field(default=None, gt=0)
    """Adam learning rate of LoRA skills (None = ``default_ppo(spec, "lora")``)."""
    lora_rank: int = Field(default=8, ge=1)
    """Rank of each LoRA skill."""
    lora_alpha: float = Field(default=16.0, ge=0)
    """LoRA alpha (the update is scaled by alpha / rank)."""
    l2_coef: float = Field(default=1.0, ge=0)
    """Weight of ``sum (theta - theta_prev)^2 / 2`` in the ``l2`` strategy."""
    ewc_coef: float = Field(default=100_000.0, ge=0)
    """Weight of ``sum F (theta - theta_prev)^2 / 2`` in the ``ewc`` strategy."""
    ewc_value_fisher: bool = True
    """Also protect the value trunk in ``ewc`` (Fisher of a unit-variance Gaussian on V)."""
    fisher_states: int = Field(default=1024, ge=1)
    """States sampled from a finished task to estimate its diagonal Fisher."""
    replay_buffer: int = Field(default=10_000, ge=1)
    """Total states kept by ``replay`` (split evenly over the finished tasks)."""
    replay_batch: int = Field(default=256, ge=1)
    """Buffer rows per behaviour-cloning term (one term per PPO minibatch)."""
    replay_loss: Literal["kl", "mse"] = "kl"
    """Policy cloning loss: "kl" (KL(old || new)) or "mse" (on the raw policy outputs)."""
    replay_policy_coef: float = Field(default=1.0, ge=0)
    """Weight of the policy cloning term."""
    replay_value_coef: float = Field(default=0.5, ge=0)
    """Weight of the value regression term (MSE to the stored values)."""

    _unique = unique_items("strategies", "strategies repeat: {}")

    @field_validator("tasks")
    @classmethod
    def _indices(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and any(i < 0 for i in value):
            raise ValueError(f"task indices must be >= 0, got {value}")
        return value

    @field_validator("hidden")
    @classmethod
    def _widths(cls, value: list[int]) -> list[int]:
        if any(h < 1 for h in value):
            raise ValueError(f"hidden widths must be >= 1, got {value}")
        return value

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.first_seed, self.first_seed + self.seeds))

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "continual config") -> ContinualConfig:
        """A config from plain data (e.g. a run's config.json); errors name ``where``."""
        return validate(cls, d, where)

    def mismatch(self, other: ContinualConfig) -> list[str]:
        """Fields (other than ``RESUMABLE_FIELDS``) whose values differ from ``other``."""
        a, b = self.to_dict(), other.to_dict()
        return [k for k in a if k not in RESUMABLE_FIELDS and a[k] != b[k]]
