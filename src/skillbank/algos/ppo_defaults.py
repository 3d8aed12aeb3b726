"""Proven PPO settings per profile of task ("discrete", "box", "mujoco") and per what is
trained ("base", "lora", "full"), and the base-network settings per profile."""

from __future__ import annotations

from skillbank.algos.ppo import PPOConfig
from skillbank.errors import ConfigError
from skillbank.tasks import TaskSpec
from skillbank.tasks.spaces import spaces_of

# PPO settings per profile of task, then per what is trained ("base", "lora", "full").
# discrete: CleanRL's settings, except the base at lr 1e-3 with 10 epochs: it reaches a
#   greedy 475 on CartPole within 1-4k steps on 6 of 6 seeds (lr 2.5e-4 with 4 epochs took
#   2-30k, and one seed of three never got there in 150k); train_base keeps the best
#   evaluated weights, so later instability of the larger step does no harm. LoRA adapters
#   want a larger step than full networks: on cartpole-physics, r=8 skills at 2e-3 reach
#   500 where 2.5e-4 stays near 300-400; 120k steps per skill (80k left one reversed task
#   at ~230 on some bases).
# box: CleanRL's continuous-control settings with reward scaling.
# mujoco: rl-zoo's tuned HalfCheetah PPO settings (small steps, many epochs, low initial
#   exploration noise): ~3400 return at 150k steps on HalfCheetah-v5 vs ~1100 at 300k
#   with the plain box settings.
PROFILES: dict[str, dict[str, dict[str, float | int | bool]]] = {
    "discrete": {
        "common": {},
        "base": {"learning_rate": 1e-3, "update_epochs": 10, "total_steps": 100_000},
        "lora": {"learning_rate": 2e-3, "total_steps": 120_000},
        "full": {"learning_rate": 1e-3, "total_steps": 120_000},
    },
    "box": {
        "common": {
            "rollout_steps": 256,
            "num_minibatches": 8,
            "update_epochs": 10,
            "ent_coef": 0.0,
            "normalize_reward": True,
        },
        "base": {"learning_rate": 3e-4, "total_steps": 300_000},
        "lora": {"learning_rate": 1e-3, "total_steps": 200_000},
        "full": {"learning_rate": 3e-4, "total_steps": 200_000},
    },
    "mujoco": {
        "common": {
            "envs_per_task": 1,
            "rollout_steps": 512,
            "num_minibatches": 8,
            "update_epochs": 20,
            "gamma": 0.98,
            "gae_lambda": 0.92,
            "clip_coef": 0.1,
            "ent_coef": 0.0004,
            "vf_coef": 0.58,
            "max_grad_norm": 0.8,
            "anneal_lr": False,
            "normalize_reward": True,
        },
        "base": {"learning_rate": 2e-5, "total_steps": 1_000_000},
        "lora": {"learning_rate": 2e-4, "total_steps": 300_000},
        "full": {"learning_rate": 2e-5, "total_steps": 300_000},
    },
    "pendulum": {
        "common": {
            "envs_per_task": 4,
            "rollout_steps": 1024,
            "num_minibatches": 64,
            "update_epochs": 10,
            "gamma": 0.9,
            "gae_lambda": 0.95,
            "ent_coef": 0.0,
            "clip_vloss": False,
            "normalize_reward": False,
        },
        "base": {"learning_rate": 1e-3, "total_steps": 150_000},
        "lora": {"learning_rate": 1e-3, "total_steps": 150_000},
        "full": {"learning_rate": 1e-3, "total_steps": 150_000},
    },
    "metaworld": {
        "common": {
            "envs_per_task": 4,
            "rollout_steps": 500,
            "num_minibatches": 10,
            "update_epochs": 10,
            "gamma": 0.99,
            "gae_lambda": 0.95,
            "ent_coef": 0.0,
            "normalize_reward": True,
        },
        "base": {"learning_rate": 3e-4, "total_steps": 1_000_000},
        "lora": {"learning_rate": 1e-3, "total_steps": 500_000},
        "full": {"learning_rate": 3e-4, "total_steps": 500_000},
    },
}
# pendulum: rl-zoo's Pendulum-v1 settings (4 envs x 1024 steps, 64-row minibatches, gamma
#   0.9, lr 1e-3) without gSDE, raw rewards and an unclipped value loss: greedy -205 over 20
#   episodes at 150k steps with a 64x64 base (seed 0), where the box profile (reward scaling,
#   clipped value loss) stayed near -550 to -650 at 100k-150k steps.
# metaworld: one 500-step episode per sub-env per rollout (4 per task), CleanRL-style
#   continuous settings; the budget of the MT10 experiment is in docs/results/metaworld.md.
# Profiles chosen by task family before the action space (gym tasks: by their spaces).
FAMILY_PROFILES: dict[str, str] = {"metaworld": "metaworld", "pendulum": "pendulum"}
# Base-network settings per profile (ActorCriticConfig fields).
NET_DEFAULTS: dict[str, dict[str, float]] = {
    "discrete": {},
    "box": {},
    "mujoco": {"init_log_std": -2.0},
    "pendulum": {},
    "metaworld": {"init_log_std": -0.5},
}


def profile_of(spec: TaskSpec) -> str:
    """ "discrete", "box" or "mujoco" (a Box task of a MuJoCo family), or the profile of
    the task's family in ``FAMILY_PROFILES``."""
    if spec.family in FAMILY_PROFILES:
        return FAMILY_PROFILES[spec.family]
    if spaces_of(spec)[1] == "discrete":
        return "discrete"
    return "mujoco" if spec.info.mujoco else "box"


def default_ppo(spec: TaskSpec, what: str = "base") -> PPOConfig:
    """Proven defaults for training ``what`` ("base", "lora" or "full") on ``spec`` (see
    ``PROFILES``)."""
    if what not in ("base", "lora", "full"):
        raise ConfigError(f"what must be 'base', 'lora' or 'full', got {what!r}")
    prof = PROFILES[profile_of(spec)]
    return PPOConfig().replace(**{**prof["common"], **prof[what]})


def config_with(cfg: PPOConfig, **overrides: object) -> PPOConfig:
    """``cfg`` with the non-None overrides applied."""
    return cfg.replace(**{k: v for k, v in overrides.items() if v is not None})
