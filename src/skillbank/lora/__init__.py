"""Multi-slot LoRA: slot routing, the multi-slot layer, model injection, PEFT adapter files."""

from skillbank.lora.layer import MultiLoraLinear
from skillbank.lora.model import MultiLoraModel, inject, strip

__all__ = ["MultiLoraLinear", "MultiLoraModel", "inject", "strip"]
