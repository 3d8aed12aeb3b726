"""What any Hugging Face causal LM needs before it takes LoRA slots.

- ``DEFAULT_TARGETS``: per-architecture LoRA targets (a registry keyed by ``model_type``);
  ``resolve_targets`` also takes PEFT's ``"all-linear"`` (every Linear / Conv1D except the
  output layer) and rejects a target module that does not exist.
- ``conv1d_as_linear``: transformers' ``Conv1D`` (GPT-2's ``c_attn``, ``c_proj``, ``c_fc``:
  ``y = x W + b`` with ``W [in, out]``) becomes the ``nn.Linear`` with weight ``W^T``, which
  computes the same function, so the multi-LoRA layer wraps it as any Linear. The adapter
  tensors are PEFT's (``lora_A [r, in]``, ``lora_B [out, r]``: PEFT's ``fan_in_fan_out``
  only changes how it merges them into a Conv1D weight).
- ``untie_state_dict``: a tied model (``lm_head.weight`` is ``embed_tokens.weight``) returns
  each shared tensor once from ``state_dict()`` (safetensors refuses shared tensors) and
  loads without the dropped name; the weights stay tied.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from skillbank.errors import SkillbankError

if TYPE_CHECKING:
    from transformers import PretrainedConfig

PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
DEFAULT_TARGETS: dict[str, list[str]] = {
    **{
        t: PROJECTIONS
        for t in ("llama", "qwen2", "qwen3", "mistral", "mixtral", "gemma", "gemma2", "phi3")
    },
    "gpt2": ["c_attn", "c_proj", "c_fc"],
    "gpt_neox": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
    "opt": ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"],
}
"""LoRA targets by ``model_type``; other architectures default to ``"all-linear"``."""
ALL_LINEAR = "all-linear"


class TargetModuleError(SkillbankError, ValueError):
    """A LoRA target module that the model does not have."""


def default_targets(model_type: str) -> list[str] | str:
    return list(DEFAULT_TARGETS.get(model_type, [])) or ALL_LINEAR


def conv1d_as_linear(model: nn.Module) -> bool:
    """Replace every transformers ``Conv1D`` of ``model`` by the equal ``nn.Linear``, in
    place; True if there was one."""
    from transformers.pytorch_utils import Conv1D

    found = [(n, m) for n, m in model.named_modules() if isinstance(m, Conv1D)]
    for name, conv in found:
        w = conv.weight  # [in, out]
        lin = nn.Linear(w.shape[0], w.shape[1], bias=conv.bias is not None)
        lin = lin.to(device=w.device, dtype=w.dtype)
        with torch.no_grad():
            lin.weight.copy_(w.t())
            if conv.bias is not None:
                lin.bias.copy_(conv.bias)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, lin)
    return bool(found)


def _output_layer_names(model: nn.Module) -> set[str]:
    get = getattr(model, "get_output_embeddings", None)
    out = get() if callable(get) else None
    return {n for n, m in model.named_modules() if out is not None and m is out}


def resolve_targets(model: nn.Module, targets: str | Sequence[str] | None, where: str) -> list[str]:
    """Full module paths of the Linear layers to wrap. ``targets``: None (the
    architecture's default), ``"all-linear"``, or module names / suffixes (PEFT style)."""
    if targets is None:
        targets = default_targets(str(getattr(model.config, "model_type", "")))
    linear = [n for n, m in model.named_modules() if n and isinstance(m, nn.Linear)]
    if targets == ALL_LINEAR or targets == [ALL_LINEAR]:
        skip = _output_layer_names(model)
        return [n for n in linear if n not in skip]
    names = [targets] if isinstance(targets, str) else list(targets)
    out: list[str] = []
    for t in names:
        hits = [n for n in linear if n == t or n.endswith("." + t)]
        if not hits:
            leaves = sorted({n.rpartition(".")[2] for n in linear})
            raise TargetModuleError(
                f"{where}: field 'target_modules': no Linear module named {t!r} in this "
                f"{getattr(model.config, 'model_type', '?')} model (Linear modules: {leaves}, "
                f"or {ALL_LINEAR!r})"
            )
        out.extend(h for h in hits if h not in out)
    return out


def untie_state_dict(model: nn.Module) -> dict[str, str]:
    """Make ``state_dict()`` list each shared tensor once and ``load_state_dict`` accept
    its absence; returns {dropped name: kept name}."""
    seen: dict[int, str] = {}
    dropped: dict[str, str] = {}
    for name, t in model.state_dict(keep_vars=True).items():
        key = t.data_ptr()
        if key in seen and t.numel() > 0:
            dropped[name] = seen[key]
        else:
            seen.setdefault(key, name)
    if not dropped or getattr(model, "_skillbank_tied", None) is not None:
        return dropped
    model._skillbank_tied = dict(dropped)  # type: ignore[assignment]

    def drop(module: nn.Module, state: dict[str, Any], prefix: str, local: Any) -> None:
        for name in dropped:
            state.pop(prefix + name, None)

    def allow_missing(module: nn.Module, incompatible: Any) -> None:
        for name in dropped:
            while name in incompatible.missing_keys:
                incompatible.missing_keys.remove(name)

    model._register_state_dict_hook(drop)
    model.register_load_state_dict_post_hook(allow_missing)
    return dropped


def hf_config(model: nn.Module) -> PretrainedConfig:
    """``model.config`` of a transformers model. Typed here because an ``nn.Module``
    attribute reads as ``Tensor | Module`` to mypy (transformers is imported lazily, so
    this is a cast, not an isinstance check)."""
    return cast("PretrainedConfig", model.config)


def prepare(model: nn.Module) -> nn.Module:
    """Conv1D -> Linear and tied-weight state dicts (what every loaded base goes through)."""
    conv1d_as_linear(model)
    untie_state_dict(model)
    return model
