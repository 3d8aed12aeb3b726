"""Learning tests (slow): PPO solves CartPole; LoRA skills match full fine-tuning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from skillbank.algos.ppo_defaults import default_ppo
from skillbank.library.core import PolicyLibrary
from skillbank.models import ActorCritic, ActorCriticConfig
from skillbank.recipes.evaluate import evaluate_full, evaluate_library
from skillbank.recipes.train import train_base, train_full_copies, train_lora_skills
from skillbank.tasks import get_suite, parse_task
from skillbank.training.loop import FullBank, evaluate_bank, train_ppo

pytestmark = pytest.mark.slow

CARTPOLE_BUDGET = 150_000  # env steps; evaluation every 10 updates (10,240 steps)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cartpole_solved_from_scratch(seed: int) -> None:
    """Mean greedy return of 20 episodes reaches 475 within the budget, every seed."""
    torch.set_num_threads(1)
    spec = parse_task("cartpole")
    torch.manual_seed(seed)
    bank = FullBank([ActorCritic(ActorCriticConfig(4, "discrete", 2, [256, 256]))])
    cfg = default_ppo(spec, "base")
    cfg = type(cfg)(**{**cfg.to_dict(), "total_steps": CARTPOLE_BUDGET})
    scores: list[tuple[int, float]] = []

    def stop(row: dict, norms: list) -> bool:
        if row["update"] % 10:
            return False
        score = float(evaluate_bank(bank, [spec], norms, "discrete", 20, seed).mean())
        scores.append((row["steps_per_task"], score))
        return score >= 475

    train_ppo(bank, [spec], cfg, "discrete", seed=seed, should_stop=stop)
    assert scores and scores[-1][1] >= 475, f"seed {seed}: evaluations {scores}"


def test_lora_skills_reach_90pct_of_full_finetune(tmp_path) -> None:
    """On cartpole-physics, r=8 skills reach >= 90% of full fine-tuning on every task,
    each skill <= 10% of the base's bytes."""
    torch.set_num_threads(1)
    specs = get_suite("cartpole-physics")
    lib, _ = train_base(
        parse_task("cartpole"), tmp_path / "lib", default_ppo(specs[0], "base"), quiet=True
    )
    _, lora_res, _ = train_lora_skills(
        lib, specs, default_ppo(specs[0], "lora"), [8] * len(specs), quiet=True
    )
    full_bank, full_res = train_full_copies(
        lib, specs, default_ppo(specs[0], "full"), tmp_path / "full", quiet=True
    )
    lib = PolicyLibrary.load(tmp_path / "lib")
    table = evaluate_library(lib, specs, episodes=20)
    lora = np.array([table["mean"][1 + i][i] for i in range(len(specs))])
    full = evaluate_full(full_bank, full_res.norms, specs, "discrete", 20).mean(1)
    assert (lora >= 0.9 * full).all(), f"LoRA {lora.round(1)} vs full {full.round(1)}"
    base_row = np.array(table["mean"][0])
    assert (lora > base_row).sum() >= 2  # the skills do something the base cannot
    report = lib.memory_report()
    assert max(report["skill_bytes"].values()) <= 0.10 * report["base_bytes"]
