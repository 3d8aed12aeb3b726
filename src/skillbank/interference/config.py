"""Typed settings of an interference experiment and the paths of its run folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from skillbank.config import Config, unique_items
from skillbank.reporting.paths import ReportPaths

FORMAT = "skillbank-interference/1"
"""The ``format`` field of results.json."""


class InterferenceConfig(Config):
    """What is measured and repaired (the model and its training live in the Setting)."""

    steps: int = Field(ge=1)
    """Training steps per domain (env steps for control, GRPO steps for text)."""
    refresh_steps: int = Field(ge=0)
    """Steps of the refresh on the damaged domain (same unit as ``steps``)."""
    repair_domain: str | None = None
    """The domain to repair; default: the one whose score dropped most from the end of
    its own training to the end of the sequence (never the last domain)."""
    rollback_fractions: list[float] = Field(
        default_factory=lambda: [0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2], min_length=1
    )
    """Fractions p (0 < p <= 1) of the shared coordinates reset to theta_A."""
    rollback_scores: list[str] = Field(
        default_factory=lambda: ["curvature", "conflict"], min_length=1
    )
    """Damage scores ranking the coordinates, each swept: curvature, taylor, conflict,
    magnitude (see ``repair.DAMAGE_SCORES``)."""
    random_seeds: int = Field(default=3, ge=1)
    """Random rollbacks of the same size per fraction."""
    neuron_fraction: float = Field(default=0.1, gt=0, le=1)
    """Top fraction of most-changed neurons per layer compared by Jaccard overlap."""
    krylov_steps: int = Field(default=16, ge=1, le=64)
    """Lanczos steps from B's update (k = 1..krylov_steps Ritz directions)."""
    eigen_k: int = Field(default=8, ge=1, le=32)
    """Top eigenpairs of H_A (at theta_A) computed by Lanczos from a random start."""
    eigen_steps: int = Field(default=24, ge=1)
    """Lanczos steps for those eigenpairs (>= eigen_k)."""
    seed: int = Field(default=0, ge=0)
    """Seed of the training runs and the random rollbacks."""

    @field_validator("rollback_fractions")
    @classmethod
    def _fractions(cls, value: list[float]) -> list[float]:
        if not all(0 < p <= 1 for p in value):
            raise ValueError(f"every fraction must be in (0, 1], got {value}")
        return value

    @field_validator("rollback_scores")
    @classmethod
    def _scores(cls, value: list[str]) -> list[str]:
        from skillbank.interference.repair import DAMAGE_SCORES

        unknown = [k for k in value if k not in DAMAGE_SCORES]
        if unknown:
            raise ValueError(f"unknown damage score(s) {unknown}; known: {sorted(DAMAGE_SCORES)}")
        return value

    @field_validator("eigen_steps")
    @classmethod
    def _eigen_steps(cls, value: int, info: ValidationInfo) -> int:
        k = info.data.get("eigen_k")
        if k is not None and value < k:
            raise ValueError(f"must be >= eigen_k ({k}), got {value}")
        return value


class ControlOptions(Config):
    """The model and PPO settings of the control case."""

    specs: list[Any] = Field(min_length=1)
    """The tasks in training order (``TaskSpec`` objects)."""
    mode: Literal["full", "shared-adapter"] = "full"
    """"full" (every weight) or "shared-adapter" (one LoRA adapter on a trained base)."""
    hidden: list[int] = Field(default_factory=lambda: [64, 64], min_length=1)
    """Hidden widths of each trunk."""
    rank: int = Field(default=8, ge=1)
    """LoRA rank of the shared adapter (alpha = 2 x rank)."""
    base_steps: int = Field(default=50_000, ge=1)
    """shared-adapter: env steps of full PPO on the first task to make the frozen base."""
    learning_rate: float | None = Field(default=None, gt=0)
    """Adam step (default: the project's PPO default for full networks / LoRA)."""
    loss_states: int = Field(default=1024, ge=1)
    """States sampled per task for its smooth loss."""
    eval_episodes: int = Field(default=10, ge=1)
    """Greedy episodes per score."""
    eval_every: int = Field(default=5, ge=0)
    """keep-best: validate every this many PPO updates (0: keep the last weights)."""
    seed: int = Field(default=0, ge=0)
    """Seed of the network, the PPO runs and the sampled states."""

    @field_validator("specs")
    @classmethod
    def _task_specs(cls, value: list[Any]) -> list[Any]:
        from skillbank.tasks import TaskSpec  # not at import: the CLI reads this module

        bad = [type(s).__name__ for s in value if not isinstance(s, TaskSpec)]
        if bad:
            raise ValueError(f"must be TaskSpec objects, got {bad}")
        return value


class TextOptions(Config):
    """The LM and its training settings for the text case."""

    domains: list[str] = Field(min_length=1)
    """Text domains in training order (``skillbank.lm.get_domain`` names)."""
    mode: Literal["shared-adapter", "full"] = "shared-adapter"
    """"shared-adapter" (one LoRA adapter, slot 0) or "full" (every base weight)."""
    base: Path | None = None
    """Base folder (default: the packaged tiny LM)."""
    rank: int = Field(default=8, ge=1)
    """LoRA rank of the shared adapter (alpha = 2 x rank)."""
    learning_rate: float | None = Field(default=None, gt=0)
    """Adam step of GRPO (default 5e-4 for the adapter: GRPOConfig's 2e-3 degrades the
    SFT-warmed adapter on this LM; 1e-4 for full weights)."""
    warmup_sft: int = Field(default=400, ge=0)
    """Joint SFT steps on all domains before the sequence (so that every domain starts
    competent, as a pretrained LLM does before its RL stages); in full mode the SFT adapter
    is then merged into the base weights. 0: none."""
    prompts_per_step: int = Field(default=8, ge=1)
    """GRPO prompts per step."""
    group_size: int = Field(default=8, ge=1)
    """GRPO completions per prompt."""
    loss_samples: int = Field(default=64, ge=1)
    """Reference answers per smooth loss."""
    eval_n: int = Field(default=100, ge=1)
    """Test prompts per score."""
    seed: int = Field(default=0, ge=0)
    """Seed of the base, the SFT warm-up and the GRPO runs."""

    _unique = unique_items("domains", "a domain appears twice in {}")


class InterferencePaths(ReportPaths):
    """Every path of an interference run folder."""

    def theta(self, stage: int, name: str) -> Path:
        """Shared parameters after stage ``stage`` (0 = initial) named ``name``."""
        return self.root / "theta" / f"{stage:02d}_{safe(name)}.safetensors"

    def loss_data(self, name: str) -> Path:
        """Tensors that define domain ``name``'s smooth loss (e.g. sampled states)."""
        return self.root / "loss_data" / f"{safe(name)}.safetensors"

    def repaired(self, what: str) -> Path:
        return self.root / "theta" / f"repair_{safe(what)}.safetensors"


def safe(name: str) -> str:
    """A file-name-safe form of a domain name ("cartpole/long-pole" -> "cartpole_long-pole")."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
