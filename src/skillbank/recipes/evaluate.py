"""``skillbank eval``: greedy returns of a library's base and skills, and of full copies."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from skillbank.algos.normalize import ObsNorm
from skillbank.library.core import PolicyLibrary
from skillbank.recipes.compat import check_compatible
from skillbank.tasks import TaskSpec, make_vec_env
from skillbank.training.loop import FullBank, evaluate_bank
from skillbank.training.rollout import evaluate


def evaluate_library(
    lib: PolicyLibrary,
    specs: Sequence[TaskSpec],
    episodes: int = 20,
    seed: int = 0,
    skills: Sequence[str | None] | None = None,
) -> dict:
    """Greedy returns of the base and each skill on each task, in one batched run.

    Returns {"tasks": [...], "policies": [...], "mean": [[...]], "std": [[...]]} with rows
    = policies (``"base"`` first) and columns = tasks."""
    check_compatible(lib, specs)
    policies: list[str | None] = list(skills) if skills is not None else [None, *lib.skills]
    pairs = [(p, s) for p in policies for s in specs]
    env = make_vec_env([s for _, s in pairs], episodes, seed + 20_000)
    slot_table = torch.tensor([-1 if p is None else lib.slot_of(p) for p, _ in pairs])
    norms = [
        ObsNorm.from_dict(lib.skill_meta(p)["obs_norm"])
        if p is not None and lib.skill_meta(p).get("obs_norm")
        else (lib.base_norm or ObsNorm.identity(env.obs_dim))
        for p, _ in pairs
    ]

    def forward(x: torch.Tensor, task: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return lib._forward_ids(x, slot_table[task])

    kind = lib.base_config["kwargs"]["action_kind"]
    successes = np.full(env.num_envs, np.nan)  # [P*T*episodes]; NaN: the env reports none
    try:
        returns = evaluate(env, forward, norms, kind, seed=seed + 20_000, successes=successes)
    finally:
        env.close()
    returns = returns.reshape(len(policies), len(specs), episodes)  # [P, T, episodes]
    table = {
        "tasks": [s.name for s in specs],
        "policies": ["base" if p is None else p for p in policies],
        "mean": returns.mean(-1).tolist(),
        "std": returns.std(-1).tolist(),
        "episodes": episodes,
    }
    if not np.isnan(successes).all():  # e.g. Meta-World: info["success"] beside the return
        rate = successes.reshape(len(policies), len(specs), episodes).mean(-1)  # [P, T]
        table["success"] = [[None if np.isnan(v) else float(v) for v in row] for row in rate]
    return table


def evaluate_full(
    bank: FullBank,
    norms: Sequence[ObsNorm],
    specs: Sequence[TaskSpec],
    kind: str,
    episodes: int = 20,
    seed: int = 0,
) -> np.ndarray:
    """Greedy returns [K, episodes] of full copy k on task k."""
    for m in bank.models:
        m.eval()
    with torch.no_grad():
        return evaluate_bank(bank, specs, norms, kind, episodes, seed + 20_000)
