"""Language-model skills: any local Hugging Face causal LM + tokenizer, text domains or
users' datasets and reward functions, SFT and GRPO on LoRA slots.

Public API (imported lazily: ``import skillbank.lm`` loads neither torch nor transformers)::

    from skillbank.lm import load_base, SlotLM, get_domain, init_slot, SFTConfig, train_sft
    base, tok = load_base()                      # the packaged tiny-lm (or any HF folder)
    lm = SlotLM(base, tok, num_slots=2)          # LoRA slots on the architecture's targets
    init_slot(lm, 0, rank=8)
    train_sft(lm, 0, [get_domain("reverse")], SFTConfig(steps=300))
    score(lm, 0, get_domain("reverse"))          # mean reward on the test split (greedy)

See docs/lm.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from skillbank.lm.adapters import init_slot, load_lm_adapter, save_lm_adapter
    from skillbank.lm.configs import DataConfig, ModelConfig
    from skillbank.lm.data import DatasetError, DatasetTask
    from skillbank.lm.domains import DOMAINS, Domain, Example, UnknownDomainError, get_domain
    from skillbank.lm.evaluate import create_lm_library, library_lm, score, score_mixed
    from skillbank.lm.grpo import GRPOConfig, collect, grpo_loss, grpo_step, train_grpo
    from skillbank.lm.model import DEFAULT_BASE, LM_TARGETS, BaseMismatchError, SlotLM, load_base
    from skillbank.lm.rewards import RewardError, Rewards, load_reward
    from skillbank.lm.sample import PromptTooLongError, generate, token_logprobs
    from skillbank.lm.sft import SFTConfig, answer_nll, sft_batch, sft_loss, train_sft
    from skillbank.lm.tokenizer import CharTokenizer, LMTokenizer, load_tokenizer

_LAZY = {
    "init_slot": "adapters",
    "load_lm_adapter": "adapters",
    "save_lm_adapter": "adapters",
    "DataConfig": "configs",
    "ModelConfig": "configs",
    "DatasetError": "data",
    "DatasetTask": "data",
    "RewardError": "rewards",
    "Rewards": "rewards",
    "load_reward": "rewards",
    "LMTokenizer": "tokenizer",
    "load_tokenizer": "tokenizer",
    "DOMAINS": "domains",
    "Domain": "domains",
    "Example": "domains",
    "UnknownDomainError": "domains",
    "get_domain": "domains",
    "create_lm_library": "evaluate",
    "library_lm": "evaluate",
    "score": "evaluate",
    "score_mixed": "evaluate",
    "GRPOConfig": "configs",
    "collect": "grpo",
    "grpo_loss": "grpo",
    "grpo_step": "grpo",
    "train_grpo": "grpo",
    "DEFAULT_BASE": "model",
    "LM_TARGETS": "model",
    "BaseMismatchError": "model",
    "SlotLM": "model",
    "load_base": "model",
    "PromptTooLongError": "sample",
    "generate": "sample",
    "token_logprobs": "sample",
    "SFTConfig": "configs",
    "answer_nll": "sft",
    "sft_batch": "sft",
    "sft_loss": "sft",
    "train_sft": "sft",
    "CharTokenizer": "tokenizer",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"skillbank.lm.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'skillbank.lm' has no attribute {name!r}")


__all__ = [
    "BaseMismatchError",
    "CharTokenizer",
    "DataConfig",
    "DatasetError",
    "DatasetTask",
    "LMTokenizer",
    "ModelConfig",
    "RewardError",
    "Rewards",
    "load_reward",
    "load_tokenizer",
    "DEFAULT_BASE",
    "DOMAINS",
    "Domain",
    "Example",
    "GRPOConfig",
    "LM_TARGETS",
    "PromptTooLongError",
    "SFTConfig",
    "SlotLM",
    "UnknownDomainError",
    "answer_nll",
    "collect",
    "create_lm_library",
    "generate",
    "get_domain",
    "grpo_loss",
    "grpo_step",
    "init_slot",
    "library_lm",
    "load_base",
    "load_lm_adapter",
    "save_lm_adapter",
    "score",
    "score_mixed",
    "sft_batch",
    "sft_loss",
    "token_logprobs",
    "train_grpo",
    "train_sft",
]
