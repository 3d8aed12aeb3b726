"""The tiny causal-LM base: built with transformers, loaded with its own ``from_pretrained``.

A base folder is transformers' ``save_pretrained`` layout (``config.json``,
``model.safetensors``) plus our ``tokenizer.json``. ``SlotLM`` wraps a base with S LoRA
slots on the attention and MLP projections (``LM_TARGETS``) and its tokenizer; it is what
every trainer, sampler and evaluator in ``skillbank.lm`` takes.

An LM base inside a library or the multi-run service is stored like any other base:
``base/config.json`` = ``{"kind": "causal_lm", "kwargs": <transformers config + alphabet>}``
and ``base/model.safetensors`` (rebuilt by ``build_causal_lm``).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from skillbank.errors import SkillbankError
from skillbank.lm.tokenizer import BOS, EOS, PAD, CharTokenizer
from skillbank.lora.layer import MultiLoraModel

LM_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
DEFAULT_BASE = Path(__file__).parent / "assets" / "tiny-lm"
FINGERPRINT_KEYS = ("model_type", "vocab_size", "hidden_size", "num_hidden_layers", "alphabet")
"""Base properties an adapter records (``skill.json`` field ``base``) and is checked against."""


class BaseMismatchError(SkillbankError, ValueError):
    """An adapter made for a different base (vocabulary, hidden size, ...)."""


def _quiet() -> None:
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()


@dataclass
class ArchConfig:
    """Shape of a fresh base (``skillbank lm pretrain``)."""

    arch: str = "llama"
    """"llama" or "qwen2"."""
    hidden_size: int = 128
    layers: int = 4
    heads: int = 4
    kv_heads: int = 4
    intermediate_size: int = 384
    max_len: int = 48
    """Context length in tokens (prompt + answer + bos/eos)."""


def new_base(arch: ArchConfig, tok: CharTokenizer, seed: int = 0) -> nn.Module:
    """A randomly initialised transformers causal LM (untied embeddings, float32)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    _quiet()
    cfg = AutoConfig.for_model(
        arch.arch,
        vocab_size=tok.vocab_size,
        hidden_size=arch.hidden_size,
        intermediate_size=arch.intermediate_size,
        num_hidden_layers=arch.layers,
        num_attention_heads=arch.heads,
        num_key_value_heads=arch.kv_heads,
        max_position_embeddings=arch.max_len,
        tie_word_embeddings=False,
        bos_token_id=BOS,
        eos_token_id=EOS,
        pad_token_id=PAD,
    )
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(cfg).float()


def load_base(folder: str | os.PathLike = DEFAULT_BASE) -> tuple[nn.Module, CharTokenizer]:
    """(model, tokenizer) from a ``save_pretrained`` folder, with transformers' own loader."""
    from transformers import AutoModelForCausalLM

    _quiet()
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder / 'config.json'}: not a model folder")
    tok = CharTokenizer.load(folder)
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    if model.config.vocab_size != tok.vocab_size:
        raise BaseMismatchError(
            f"{folder / 'config.json'}: field 'vocab_size' is {model.config.vocab_size}, "
            f"the tokenizer has {tok.vocab_size} tokens"
        )
    return model, tok


def save_base(model: nn.Module, tok: CharTokenizer, folder: str | os.PathLike) -> Path:
    """Write a base folder atomically (staged next to it, then renamed into place)."""
    _quiet()
    folder = Path(folder)
    stage = folder.parent / f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}"
    model.save_pretrained(str(stage), safe_serialization=True)  # type: ignore[operator]
    tok.save(stage)
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(stage, folder)
    return folder


def base_kwargs(model: nn.Module, tok: CharTokenizer) -> dict[str, Any]:
    """``kwargs`` of a ``causal_lm`` base config: the transformers config plus the alphabet."""
    cfg = model.config.to_dict()  # type: ignore[union-attr,operator]
    return {**json.loads(json.dumps(cfg)), "alphabet": tok.alphabet}


def build_causal_lm(kwargs: dict[str, Any]) -> nn.Module:
    """Rebuild a base from ``base_kwargs`` output (the ``causal_lm`` base kind)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    _quiet()
    kw = {k: v for k, v in kwargs.items() if k not in ("alphabet", "architectures")}
    model_type = kw.pop("model_type", None)
    if not isinstance(model_type, str):
        raise ValueError("causal_lm kwargs need a 'model_type' string")
    kw.pop("transformers_version", None)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **kw))
    return model.float().eval()


def fingerprint(model: nn.Module, tok: CharTokenizer) -> dict[str, Any]:
    """The base properties an adapter must agree with."""
    kw = base_kwargs(model, tok)
    return {k: kw.get(k) for k in FINGERPRINT_KEYS}


class SlotLM:
    """A frozen causal LM with ``num_slots`` LoRA slots (rank <= ``capacity``) + tokenizer."""

    def __init__(
        self,
        base: nn.Module,
        tok: CharTokenizer,
        num_slots: int = 1,
        capacity: int = 16,
        targets: list[str] | None = None,
    ) -> None:
        hf = base.base if isinstance(base, MultiLoraModel) else base
        vocab = int(hf.config.vocab_size)  # type: ignore[union-attr]
        if vocab != tok.vocab_size:
            raise BaseMismatchError(f"base vocab_size {vocab} != tokenizer size {tok.vocab_size}")
        self.model = base if isinstance(base, MultiLoraModel) else None
        if self.model is None:
            self.model = MultiLoraModel(base, num_slots, capacity, targets or LM_TARGETS)
        self.model.eval()
        self.tok = tok

    @property
    def base(self) -> nn.Module:
        assert self.model is not None
        return self.model.base

    @property
    def max_len(self) -> int:
        return int(self.base.config.max_position_embeddings)  # type: ignore[union-attr]

    @property
    def mm(self) -> MultiLoraModel:
        assert self.model is not None
        return self.model

    def fingerprint(self) -> dict[str, Any]:
        return fingerprint(self.base, self.tok)

    def logits(self, tokens: Tensor, slot_ids: Tensor, **kw: Any) -> Any:
        """Forward ``tokens [B, T]`` with row b through slot ``slot_ids[b]`` (-1 = base)."""
        with self.mm.slots(slot_ids):
            return self.base(input_ids=tokens, **kw)

    def slot_parameters(self) -> list[nn.Parameter]:
        return self.mm.slot_parameters()


def check_fingerprint(source: Path, recorded: dict[str, Any], expected: dict[str, Any]) -> None:
    """BaseMismatchError naming ``source`` and the first field that differs."""
    for key in FINGERPRINT_KEYS:
        if key in recorded and recorded[key] != expected.get(key):
            raise BaseMismatchError(
                f"{source}: field 'base.{key}' is {recorded[key]!r}, but the base has "
                f"{expected.get(key)!r}: the adapter was made for a different base"
            )
