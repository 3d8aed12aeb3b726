"""skillbank: policy libraries for RL — one frozen base, one LoRA skill per task.

``from skillbank import PolicyLibrary`` (imported lazily so that the command line parses
its arguments before torch is loaded).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from skillbank.library.core import PolicyLibrary
    from skillbank.lora import MultiLoraLinear, MultiLoraModel

_LAZY = {
    "PolicyLibrary": "skillbank.library.core",
    "MultiLoraModel": "skillbank.lora",
    "MultiLoraLinear": "skillbank.lora",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'skillbank' has no attribute {name!r}")


__all__ = ["MultiLoraLinear", "MultiLoraModel", "PolicyLibrary", "__version__"]
