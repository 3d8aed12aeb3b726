"""Causal-LM bases: any local Hugging Face model folder, loaded with ``AutoModelForCausalLM``
and ``AutoTokenizer`` (``local_files_only``), and ``SlotLM``, the base with S LoRA slots.

A base folder is transformers' ``save_pretrained`` layout (``config.json``,
``model.safetensors``, tokenizer files, optionally ``generation_config.json``). Loaded bases
go through ``hf.prepare`` (Conv1D as Linear, tied weights saved once). ``SlotLM`` wraps a
base with LoRA slots on ``target_modules`` (default: the architecture's, ``hf.DEFAULT_TARGETS``)
and its tokenizer; it is what every trainer, sampler and evaluator in ``skillbank.lm`` takes.

An LM base inside a library or the multi-run service is stored like any other base:
``base/config.json`` = ``{"kind": "causal_lm", "kwargs": <transformers config (+ alphabet
for char tokenizers)>}`` and ``base/model.safetensors`` (rebuilt by ``build_causal_lm``).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from skillbank.errors import SkillbankError
from skillbank.io import stage_dir
from skillbank.lm.configs import ArchConfig
from skillbank.lm.hf import PROJECTIONS, default_targets, hf_config, prepare, resolve_targets
from skillbank.lm.tokenizer import CharTokenizer, LMTokenizer, _quiet, load_tokenizer
from skillbank.lora import MultiLoraModel
from skillbank.models import register_base_kind

LM_TARGETS = PROJECTIONS
"""The Llama/Qwen2 projections (the packaged tiny-lm's default targets)."""
DEFAULT_BASE = Path(__file__).parent / "assets" / "tiny-lm"
FINGERPRINT_KEYS = ("model_type", "vocab_size", "hidden_size", "num_hidden_layers", "alphabet")
"""Base properties an adapter records (``skill.json`` field ``base``) and is checked against."""


class BaseMismatchError(SkillbankError, ValueError):
    """An adapter made for a different base (vocabulary, hidden size, ...)."""


class NotAModelError(SkillbankError, FileNotFoundError):
    """A base folder that is not a Hugging Face causal-LM folder."""


def new_base(arch: ArchConfig, tok: LMTokenizer, seed: int = 0) -> nn.Module:
    """A randomly initialised transformers causal LM (float32) for ``tok``."""
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
        tie_word_embeddings=arch.tie_embeddings,
        bos_token_id=tok.bos_id,
        eos_token_id=tok.eos_id,
        pad_token_id=tok.pad_id,
    )
    torch.manual_seed(seed)
    return prepare(AutoModelForCausalLM.from_config(cfg).float())


def default_dtype(device: str | torch.device = "cpu") -> torch.dtype:
    """fp32 on CPU; bf16 on a GPU that has it, else fp16."""
    dev = torch.device(device)
    if dev.type != "cuda":
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def load_base(
    folder: str | os.PathLike = DEFAULT_BASE,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    use_chat_template: bool | None = None,
) -> tuple[nn.Module, LMTokenizer]:
    """(model, tokenizer) of a local causal-LM folder (no network). The tokenizer's eos
    ids include the generation config's."""
    from transformers import AutoModelForCausalLM

    _quiet()
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise NotAModelError(f"{folder / 'config.json'}: not a model folder")
    try:
        # typed as nn.Module: transformers wraps PreTrainedModel.to in
        # functools.wraps(nn.Module.to), which mypy reads as an unbound method
        model: nn.Module = AutoModelForCausalLM.from_pretrained(
            str(folder), dtype=dtype or default_dtype(device), local_files_only=True
        )
    except (OSError, ValueError, KeyError) as e:
        raise NotAModelError(f"{folder}: not a causal-LM folder transformers can load ({e})") from e
    model = prepare(model.to(device)).eval()
    gen = getattr(model, "generation_config", None)
    extra = getattr(gen, "eos_token_id", None) if gen is not None else None
    extra_ids = [extra] if isinstance(extra, int) else list(extra or [])
    tok = load_tokenizer(folder, extra_ids, use_chat_template)
    vocab = int(hf_config(model).vocab_size)
    if vocab < tok.vocab_size:
        raise BaseMismatchError(
            f"{folder / 'config.json'}: field 'vocab_size' is {vocab}, "
            f"the tokenizer has {tok.vocab_size} tokens"
        )
    hf_config(model)._name_or_path = str(folder.absolute())
    return model, tok


def base_source(model: nn.Module) -> str | None:
    """The folder a base was loaded from (what adapters record as base_model_name_or_path)."""
    hf = model.base if isinstance(model, MultiLoraModel) else model
    path = getattr(getattr(hf, "config", None), "_name_or_path", None)
    return str(path) if path and Path(str(path)).is_dir() else None


def save_base(model: nn.Module, tok: LMTokenizer, folder: str | os.PathLike) -> Path:
    """Write a base folder atomically (staged next to it, then renamed into place)."""
    _quiet()
    folder = Path(folder)
    stage = stage_dir(folder)
    model.save_pretrained(str(stage), safe_serialization=True)  # type: ignore[operator]
    tok.save(stage)
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(stage, folder)
    model.config._name_or_path = str(folder.absolute())  # type: ignore[union-attr]
    return folder


def base_kwargs(model: nn.Module, tok: LMTokenizer) -> dict[str, Any]:
    """``kwargs`` of a ``causal_lm`` base config: the transformers config (plus the alphabet
    of a char tokenizer)."""
    cfg = model.config.to_dict()  # type: ignore[union-attr,operator]
    cfg.pop("_name_or_path", None)
    kw = json.loads(json.dumps(cfg, default=str))
    if tok.alphabet is not None:
        kw["alphabet"] = tok.alphabet
    return kw


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
    return prepare(model.float()).eval()


def fingerprint(model: nn.Module, tok: LMTokenizer) -> dict[str, Any]:
    """The base properties an adapter must agree with."""
    kw = base_kwargs(model, tok)
    return {k: kw.get(k) for k in FINGERPRINT_KEYS}


def adapter_extra_config(model: nn.Module) -> dict[str, Any]:
    """Fields of adapter_config.json that depend on the base (PEFT's conventions).

    GPT-2's Conv1D layers: the adapter tensors are the same as for Linear layers and
    ``fan_in_fan_out`` only changes how PEFT merges them; it is written ``false`` (PEFT
    sets it itself for Conv1D targets, with a warning) because skillbank's adapter reader
    accepts only ``false`` for now."""
    return {"task_type": "CAUSAL_LM"}


class SlotLM:
    """A frozen causal LM with ``num_slots`` LoRA slots (rank <= ``capacity``) + tokenizer.

    ``targets``: module names / suffixes, ``"all-linear"`` or None (the architecture's
    default, ``hf.DEFAULT_TARGETS``)."""

    def __init__(
        self,
        base: nn.Module,
        tok: LMTokenizer,
        num_slots: int = 1,
        capacity: int = 16,
        targets: str | Sequence[str] | None = None,
    ) -> None:
        hf = base.base if isinstance(base, MultiLoraModel) else base
        vocab = int(hf_config(hf).vocab_size)
        if vocab < tok.vocab_size:
            raise BaseMismatchError(f"base vocab_size {vocab} < tokenizer size {tok.vocab_size}")
        self.model = base if isinstance(base, MultiLoraModel) else None
        if self.model is None:
            prepare(base)
            paths = resolve_targets(base, targets, "SlotLM")
            self.model = MultiLoraModel(base, num_slots, capacity, paths)
        self.model.eval()
        self.tok = tok

    @property
    def base(self) -> nn.Module:
        assert self.model is not None
        return self.model.base

    @property
    def max_len(self) -> int:
        cfg = self.base.config
        n = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
        return int(n or 2048)

    @property
    def device(self) -> torch.device:
        return next(self.base.parameters()).device

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


register_base_kind("causal_lm", build_causal_lm)  # libraries rebuild LM bases by kind

__all__ = [
    "ArchConfig",
    "BaseMismatchError",
    "CharTokenizer",
    "DEFAULT_BASE",
    "LM_TARGETS",
    "NotAModelError",
    "SlotLM",
    "base_kwargs",
    "build_causal_lm",
    "default_targets",
    "load_base",
    "new_base",
    "save_base",
]
