"""Configs of the LM verbs (pydantic ``Config`` models; no torch, so the CLI builds its flags
from them before importing torch). Fields keep TRL's names where TRL has one."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt

from skillbank.config import Config

LossType = Literal["grpo", "bnpo", "dapo", "dr_grpo"]
ScaleRewards = Literal["group", "batch", "none"]
DOMAIN_NAMES = ["add", "caesar", "reverse", "sort"]
"""The built-in domains (``lm.domains.DOMAINS``) the packaged base was pretrained on."""


class ArchConfig(Config):
    """Shape of a fresh base (``skillbank lm pretrain``)."""

    arch: Literal["llama", "qwen2", "mistral"] = "llama"
    """Architecture (transformers ``model_type``)."""
    hidden_size: PositiveInt = 128
    """Width of the residual stream."""
    layers: PositiveInt = 4
    """Transformer layers."""
    heads: PositiveInt = 4
    """Attention heads."""
    kv_heads: PositiveInt = 4
    """Key/value heads (grouped-query attention when < heads)."""
    intermediate_size: PositiveInt = 384
    """Width of the MLP."""
    max_len: PositiveInt = 48
    """Context length in tokens (prompt + answer + bos/eos)."""
    tie_embeddings: bool = False
    """Share the input embedding and the output layer."""


class PretrainConfig(Config):
    """Settings of ``skillbank lm pretrain``."""

    domains: list[str] = DOMAIN_NAMES
    """Domains whose formats the base learns."""
    arch: ArchConfig = ArchConfig()
    """Shape of the fresh model."""
    steps: PositiveInt = 1000
    """Optimiser steps."""
    batch_size: PositiveInt = 64
    """Sequences per step."""
    learning_rate: PositiveFloat = 1e-3
    """Peak AdamW learning rate (torch's one-cycle schedule, 5% warm-up)."""
    copy_share: float = Field(0.6, ge=0.0, le=1.0)
    """Share of ``copy:<s>=<s>`` sequences."""
    seed: int = 0
    """Seed of the weights and the data."""


class SFTConfig(Config):
    """Settings of ``skillbank lm sft``."""

    steps: PositiveInt = 300
    """Optimiser steps."""
    batch_size: PositiveInt = 32
    """Examples per step."""
    learning_rate: PositiveFloat = 3e-3
    """Adam learning rate."""
    max_grad_norm: PositiveFloat = 1.0
    """Per-slot gradient-norm clip."""
    seed: int = 0
    """Seed of the training examples."""

    def __init__(self, steps: int | None = None, /, **data: object) -> None:
        if steps is not None:  # SFTConfig(300), as when this was a dataclass
            data["steps"] = steps
        super().__init__(**data)


class GRPOConfig(Config):
    """Settings of GRPO (in-process ``skillbank lm rl`` and service runs of kind "lm")."""

    steps: PositiveInt = 60
    """Policy updates."""
    prompts_per_step: PositiveInt = 16
    """P: prompts per update."""
    group_size: int = Field(8, ge=2)
    """G: completions sampled per prompt."""
    learning_rate: PositiveFloat = 2e-3
    """Adam learning rate of the adapter."""
    clip_eps: PositiveFloat = 0.2
    """eps of the clipped importance ratio (lower bound 1 - eps)."""
    clip_eps_high: float | None = Field(None, gt=0.0)
    """Upper bound 1 + eps_high (DAPO's clip-higher; default: clip_eps)."""
    kl_coef: NonNegativeFloat = 0.0
    """beta: weight of the KL penalty to the base (0 = none, no reference forward)."""
    scale_std: bool = False
    """Divide the group-relative advantage by the group's std (= scale_rewards "group")."""
    scale_rewards: ScaleRewards = "none"
    """Advantage scaling as TRL names it: "group" std, "batch" std or "none"."""
    loss_type: LossType = "dapo"
    """Loss normalisation as TRL names it: "grpo", "bnpo", "dapo" or "dr_grpo"."""
    ratio_mask_low: float | None = Field(None, ge=0.0)
    """prime-rl's ratio masking: drop tokens whose ratio is below this (None = off)."""
    ratio_mask_high: float | None = Field(None, gt=0.0)
    """... or above this (None = off)."""
    update_epochs: PositiveInt = 2
    """Gradient steps per rollout (the ratio moves away from 1 after the first: clipped)."""
    max_grad_norm: PositiveFloat = 1.0
    """Per-slot gradient-norm clip."""
    max_new_tokens: PositiveInt = 16
    """Longest completion sampled (also dr_grpo's max_completion_length)."""
    temperature: PositiveFloat = 1.0
    """Sampling temperature; tokens are scored at the same temperature."""
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    """Nucleus sampling (1 = off)."""
    top_k: NonNegativeInt = 0
    """Top-k sampling (0 = off)."""
    stop: list[str] = []
    """Stop strings (a completion ends where one appears; the text is cut before it)."""
    seed: int = 0
    """Seed of prompts and sampling."""


class ModelConfig(Config):
    """Which base and how LoRA attaches to it (CLI flags and TOML fields)."""

    base: str | None = None
    """A local Hugging Face causal-LM folder (default: the packaged tiny-lm)."""
    target_modules: list[str] | None = None
    """LoRA targets: module names or suffixes, or ["all-linear"] (default: the
    architecture's: Llama/Qwen2/Mistral projections, GPT-2 c_attn/c_proj/c_fc)."""
    chat_template: bool | None = None
    """Apply the tokenizer's chat template to prompts (default: when it has one)."""


class DataConfig(Config):
    """A user's dataset and reward functions (instead of a built-in domain)."""

    dataset: str | None = None
    """JSONL / JSON / Parquet file or a datasets.save_to_disk folder, in TRL's formats."""
    eval_dataset: str | None = None
    """Rows scored at the end (default: the training rows)."""
    prompt_column: str = "prompt"
    """Column holding the prompt (text or chat messages)."""
    completion_column: str = "completion"
    """Column holding the reference completion (SFT target)."""
    reward: list[str] = []
    """Reward functions as MODULE:FUNCTION or FILE.py:FUNCTION (TRL's reward_funcs)."""
    reward_weights: list[float] | None = None
    """Weight of each reward function (default: 1 each)."""
