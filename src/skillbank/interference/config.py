"""Typed settings of an interference experiment and the paths of its run folder."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

FORMAT = "skillbank-interference/1"
"""The ``format`` field of results.json."""


@dataclass
class InterferenceConfig:
    """What is measured and repaired (the model and its training live in the Setting)."""

    steps: int
    """Training steps per domain (env steps for control, GRPO steps for text)."""
    refresh_steps: int
    """Steps of the refresh on the damaged domain (same unit as ``steps``)."""
    repair_domain: str | None = None
    """The domain to repair; default: the one whose score dropped most from the end of
    its own training to the end of the sequence (never the last domain)."""
    rollback_fractions: list[float] = field(
        default_factory=lambda: [0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2]
    )
    """Fractions p of the shared coordinates reset to theta_A."""
    rollback_scores: list[str] = field(default_factory=lambda: ["curvature", "conflict"])
    """Damage scores ranking the coordinates, each swept (see ``repair.DAMAGE_SCORES``)."""
    random_seeds: int = 3
    """Random rollbacks of the same size per fraction."""
    neuron_fraction: float = 0.1
    """Top fraction of most-changed neurons per layer compared by Jaccard overlap."""
    krylov_steps: int = 16
    """Lanczos steps from B's update (k = 1..krylov_steps Ritz directions)."""
    eigen_k: int = 8
    """Top eigenpairs of H_A (at theta_A) computed by Lanczos from a random start."""
    eigen_steps: int = 24
    """Lanczos steps for those eigenpairs (>= eigen_k)."""
    seed: int = 0
    """Seed of the training runs and the random rollbacks."""

    def __post_init__(self) -> None:
        checks = [
            ("steps", self.steps >= 1),
            ("refresh_steps", self.refresh_steps >= 0),
            ("rollback_fractions", all(0 < p <= 1 for p in self.rollback_fractions)),
            ("rollback_scores", bool(self.rollback_scores)),
            ("random_seeds", self.random_seeds >= 1),
            ("neuron_fraction", 0 < self.neuron_fraction <= 1),
            ("krylov_steps", 1 <= self.krylov_steps <= 64),
            ("eigen_k", 1 <= self.eigen_k <= 32),
            ("eigen_steps", self.eigen_steps >= self.eigen_k),
        ]
        from skillbank.interference.repair import DAMAGE_SCORES

        checks.append(("rollback_scores", all(k in DAMAGE_SCORES for k in self.rollback_scores)))
        bad = [name for name, ok in checks if not ok]
        if bad:
            raise ValueError(f"interference config: invalid field(s) {', '.join(bad)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RunPaths:
    """Every path of an interference run folder."""

    root: Path

    @property
    def results(self) -> Path:
        return self.root / "results.json"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

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
