"""``control/orch.toml`` of a language-model run (kind "lm"): GRPO on one built-in text
domain, or on a user's dataset scored by the user's reward functions (``dataset`` +
``reward``). Light imports at module level (no torch): the trainer and the CLI validate
with it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt

from skillbank.config import Config, ConfigError
from skillbank.lm.configs import LossType, ScaleRewards
from skillbank.service.kinds.fields import PositiveFinite, Seed, check_rank, need
from skillbank.service.protocol.info import TrainerInfo


class LMRunConfig(Config):
    """A run of kind "lm": flat fields, no tables."""

    kind: Literal["lm"] = "lm"
    """Run kind ("lm": text domains with GRPO)."""
    domain: str = "reverse"
    """Text domain (``skillbank.lm.domains``): reverse, sort, add, caesar (unused when
    ``dataset`` is set)."""
    dataset: str | None = None
    """A user's dataset instead of a domain: JSONL / JSON / Parquet file or a
    datasets.save_to_disk folder, in TRL's formats (absolute, or relative to the
    processes' working directory)."""
    prompt_column: str = "prompt"
    """Dataset column holding the prompt (text or chat messages)."""
    completion_column: str = "completion"
    """Dataset column holding the reference completion (optional for GRPO)."""
    reward: list[str] = []
    """Reward functions of ``dataset`` as MODULE:FUNCTION or FILE.py:FUNCTION (TRL's
    reward_funcs signature); required with ``dataset``."""
    reward_weights: list[float] | None = None
    """Weight of each reward function (default: 1 each)."""
    chat_template: bool | None = None
    """Apply the tokenizer's chat template to prompts (default: when it has one)."""
    max_steps: PositiveInt = 40
    """Policy updates of the run."""
    learning_rate: PositiveFinite = 2e-3
    """Adam learning rate of this run's adapter."""
    anneal_lr: bool = False
    """Decay the learning rate linearly to 0 over max_steps."""
    rank: PositiveInt = 8
    """LoRA rank of a fresh adapter (a converted checkpoint keeps its own)."""
    alpha: PositiveFinite | None = None
    """LoRA alpha (scaling alpha / rank); None = 2 * rank."""
    prompts_per_step: PositiveInt = 16
    """P: prompts per rollout."""
    group_size: Annotated[int, Field(ge=2)] = 8
    """G: completions per prompt (>= 2: the advantages are relative to the group)."""
    clip_eps: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.2
    """eps of the clipped importance ratio against the sampling policy."""
    clip_eps_high: Annotated[float, Field(gt=0.0)] | None = None
    """Upper clip bound 1 + clip_eps_high (DAPO's clip-higher; None = clip_eps)."""
    ratio_mask_low: Annotated[float, Field(ge=0.0)] | None = None
    """prime-rl's ratio masking: drop tokens whose ratio is below this (None = off)."""
    ratio_mask_high: Annotated[float, Field(gt=0.0)] | None = None
    """... or above this (None = off)."""
    loss_type: LossType = "dapo"
    """Loss normalisation as TRL names it: "grpo", "bnpo", "dapo" or "dr_grpo"."""
    scale_rewards: ScaleRewards = "none"
    """Advantage scaling as TRL names it: "group" std, "batch" std or "none"."""
    kl_coef: NonNegativeFloat = 0.0
    """Weight of the KL penalty to the base (0 = none)."""
    scale_std: bool = False
    """Divide advantages by the group's reward std."""
    max_new_tokens: PositiveInt = 16
    """Longest completion sampled."""
    temperature: PositiveFloat = 1.0
    """Sampling temperature (tokens are scored at the same temperature)."""
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0
    """Nucleus sampling (1 = off)."""
    top_k: NonNegativeInt = 0
    """Top-k sampling (0 = off)."""
    stop: list[str] = []
    """Stop strings (a completion ends where one appears)."""
    seed: Seed = 0
    """Seed of the prompts, the sampling and a fresh adapter."""


def check_lm_run(cfg: LMRunConfig, path: Path, info: TrainerInfo) -> list[Any]:
    """Check an LM run config against the trainer; returns ``[domain name or dataset]``.
    A dataset and its reward functions are loaded and the rewards tried on the
    reference completions of a few rows, so a bad file, column or function rejects
    this run's config (``config_error.txt``) and no other."""
    need(
        info.base_kind == "causal_lm",
        path,
        "kind",
        f"runs of kind 'lm' need a causal-LM base (trainer.toml lm_base); this trainer's "
        f"base is {info.base_kind!r}",
    )
    lo, hi = cfg.ratio_mask_low, cfg.ratio_mask_high
    need(lo is None or hi is None or lo < hi, path, "ratio_mask_low", "must be < ratio_mask_high")
    check_rank(cfg.rank, path, info.rank_capacity)
    if cfg.dataset is not None:
        try_dataset(cfg, path)
        return [cfg.dataset]
    need(not cfg.reward, path, "reward", "reward functions need a 'dataset'")
    return [check_domain(cfg, path, info)]


def run_task(cfg: LMRunConfig, rewards: Any = None) -> Any:
    """The run's task: ``DatasetTask`` with its rewards (``rewards``, else loaded from
    ``cfg.reward``) when ``dataset`` is set, else the built-in domain. Raises DatasetError,
    RewardError or UnknownDomainError."""
    if cfg.dataset is None:
        from skillbank.lm.domains import get_domain

        return get_domain(cfg.domain)
    from skillbank.lm.data import DatasetTask
    from skillbank.lm.rewards import Rewards

    if rewards is None:
        rewards = Rewards.from_specs(cfg.reward, cfg.reward_weights)
    return DatasetTask.load(cfg.dataset, rewards, cfg.prompt_column, cfg.completion_column)


def try_dataset(cfg: LMRunConfig, path: Path) -> None:
    """Load the run's reward functions and dataset, and score a few rows' reference
    completions; ConfigError naming the field (``reward`` or ``dataset``)."""
    from skillbank.lm.data import DatasetError
    from skillbank.lm.rewards import RewardError, Rewards

    need(bool(cfg.reward), path, "reward", "a 'dataset' needs reward functions (MODULE:FUNCTION)")
    try:
        rewards = Rewards.from_specs(cfg.reward, cfg.reward_weights)
    except RewardError as e:
        raise ConfigError(f"{path}: field 'reward': {e}") from None
    try:
        task = run_task(cfg, rewards)
    except (DatasetError, OSError) as e:
        raise ConfigError(f"{path}: field 'dataset': {e}") from None
    rows = task.train[:2]
    try:
        task.rewards([e.answer for e in rows], rows)
    except RewardError as e:
        raise ConfigError(f"{path}: field 'reward': {e}") from None


def context_length(kwargs: dict[str, Any]) -> int:
    """The base's context in tokens, from its transformers config (``base_kwargs``), as
    ``SlotLM.max_len`` reads it (GPT-2 names it ``n_positions``)."""
    n = kwargs.get("max_position_embeddings") or kwargs.get("n_positions")
    return int(n or 2048)


def check_domain(cfg: LMRunConfig, path: Path, info: TrainerInfo) -> str:
    """The built-in domain must exist and its prompts fit the base's context."""
    from skillbank.lm.domains import UnknownDomainError, get_domain

    try:
        domain = get_domain(cfg.domain)
    except UnknownDomainError as e:
        raise ConfigError(f"{path}: field 'domain': {e}") from None
    context = context_length(info.base_kwargs)
    longest = max(len(e.prompt) + 2 for e in domain.examples(200))  # + bos + 1 answer token
    need(
        longest <= context,
        path,
        "domain",
        f"prompts of {cfg.domain!r} take up to {longest} tokens with an answer; the base's "
        f"context is {context} tokens",
    )
    return cfg.domain


def lm_skill_task(cfg: LMRunConfig) -> dict[str, Any]:
    """The ``task`` record of a library skill made from an LM run."""
    if cfg.dataset is not None:
        return {"dataset": cfg.dataset, "reward": list(cfg.reward)}
    return {"domain": cfg.domain}
