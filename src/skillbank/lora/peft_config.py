"""``adapter_config.json`` of a PEFT LoRA adapter: which options skillbank understands, with
the values it supports (an allow-list), and peft's rank/alpha pattern rules.

Every option of ``peft.LoraConfig`` (0.21) is in ``PEFT_DEFAULTS`` with peft's default.
An option is accepted when

* it is in ``SUPPORTED`` and its value passes that check (the options skillbank reads or
  that do not change the adapter's maths: metadata, module selection, initialisation), or
* its value equals peft's default (``PEFT_DEFAULTS``), or
* it is unknown to this peft version and its value is off (null, false, ``{}``, ``[]``):
  how a newer peft writes an option nobody turned on.

Anything else (DoRA, LoRA bias, ``bias != "none"``, a base-rewriting init, an unknown
option turned on) is an ``AdapterFormatError`` naming the file and the field.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from skillbank.errors import FormatError

PathLike = str | os.PathLike[str]


class AdapterFormatError(FormatError):
    """A bad adapter folder or file; the message names the file and the field or key."""

    def __init__(self, path: PathLike, problem: str, field: str | None = None) -> None:
        self.path = str(path)
        self.field = field
        where = self.path if field is None else f"{self.path}: field {field!r}"
        super().__init__(f"{where}: {problem}")


# peft.LoraConfig's fields and defaults (peft 0.21; tests/lora/test_peft_config.py compares
# this table with the installed peft).
PEFT_DEFAULTS: dict[str, Any] = {
    "task_type": None,
    "peft_type": None,
    "auto_mapping": None,
    "peft_version": None,
    "base_model_name_or_path": None,
    "revision": None,
    "inference_mode": False,
    "r": 8,
    "target_modules": None,
    "exclude_modules": None,
    "lora_alpha": 8,
    "lora_dropout": 0.0,
    "fan_in_fan_out": False,
    "bias": "none",
    "use_rslora": False,
    "modules_to_save": None,
    "init_lora_weights": True,
    "layers_to_transform": None,
    "layers_pattern": None,
    "rank_pattern": {},
    "alpha_pattern": {},
    "megatron_config": None,
    "megatron_core": "megatron.core",
    "trainable_token_indices": None,
    "loftq_config": {},
    "eva_config": None,
    "corda_config": None,
    "lora_ga_config": None,
    "use_dora": False,
    "velora_config": None,
    "alora_invocation_tokens": None,
    "use_qalora": False,
    "qalora_group_size": 16,
    "monteclora_config": None,
    "layer_replication": None,
    "runtime_config": None,
    "lora_bias": False,
    "target_parameters": None,
    "use_bdlora": None,
    "arrow_config": None,
    "kasa_config": None,
    "ensure_weight_tying": False,
}

# What skillbank writes for the fields it does not derive from the weights.
WRITTEN_DEFAULTS: dict[str, Any] = {
    "peft_type": "LORA",
    "task_type": None,
    "base_model_name_or_path": None,
    "revision": None,
    "inference_mode": True,
    "lora_dropout": 0.0,
    "bias": "none",
    "fan_in_fan_out": False,
    "init_lora_weights": True,
    "use_dora": False,
    "use_rslora": False,
    "modules_to_save": None,
    "rank_pattern": {},
    "alpha_pattern": {},
}

# init_lora_weights methods that also rewrite the base weights (the adapter needs that base).
_BASE_CHANGING_INITS = ("pissa", "olora", "corda", "loftq", "lora_ga")
# init_lora_weights values that only choose the starting adapter weights.
_PLAIN_INITS = (True, False, "gaussian", "eva", "orthogonal")


def is_number(value: Any) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _optional_str(value: Any) -> bool:
    return value is None or isinstance(value, str)


def _any(value: Any) -> bool:
    return True


def _names(value: Any) -> bool:
    return value is None or (
        isinstance(value, list) and all(isinstance(n, str) and n for n in value)
    )


def _targets(value: Any) -> bool:
    return value is None or isinstance(value, str) or _names(value)


def _dropout(value: Any) -> bool:
    return is_number(value) and 0.0 <= value < 1.0


def _init(value: Any) -> bool:
    return any(value is v or (isinstance(v, str) and value == v) for v in _PLAIN_INITS)


def _rank_pattern(value: Any) -> str | None:
    return _pattern_problem(value, _positive_int, "an integer >= 1")


def _alpha_pattern(value: Any) -> str | None:
    return _pattern_problem(value, is_number, "a finite number")


Check = Callable[[Any], bool | str | None]
# field -> (check, what it accepts). A check returns True/None when the value is fine,
# False or a problem string otherwise.
SUPPORTED: dict[str, tuple[Check, str]] = {
    "peft_type": (lambda v: v == "LORA", '"LORA"'),
    "r": (_positive_int, "an integer >= 1"),
    "lora_alpha": (is_number, "a finite number"),
    "rank_pattern": (_rank_pattern, "an object of regex -> integer >= 1"),
    "alpha_pattern": (_alpha_pattern, "an object of regex -> finite number"),
    "use_rslora": (lambda v: isinstance(v, bool), "true or false"),
    "modules_to_save": (_names, "a list of module names or null"),
    "init_lora_weights": (_init, " / ".join(json.dumps(v) for v in _PLAIN_INITS)),
    # module selection: the weights file names the modules that carry an adapter
    "target_modules": (_targets, "a module name, a list of them, or null"),
    "exclude_modules": (_any, "any value (module selection)"),
    "layers_to_transform": (_any, "any value (module selection)"),
    "layers_pattern": (_any, "any value (module selection)"),
    # how the base stores its weight ([in, out] for transformers' Conv1D): the adapter
    # tensors are the same either way (peft sets it for Conv1D, resets it for Linear)
    "fan_in_fan_out": (lambda v: isinstance(v, bool), "true or false"),
    # metadata and training-only options
    "task_type": (_optional_str, "a string or null"),
    "auto_mapping": (lambda v: v is None or isinstance(v, dict), "an object or null"),
    "peft_version": (_optional_str, "a string or null"),
    "base_model_name_or_path": (_optional_str, "a string or null"),
    "revision": (_optional_str, "a string or null"),
    "inference_mode": (lambda v: isinstance(v, bool), "true or false"),
    "lora_dropout": (_dropout, "a number in [0, 1)"),
    "eva_config": (_any, "any value (initialisation only)"),
    "megatron_core": (_any, "any value (used with megatron_config only)"),
    "qalora_group_size": (_any, "any value (used with use_qalora only)"),
    "runtime_config": (_any, "any value (runtime only)"),
}
REQUIRED = ("peft_type", "r", "lora_alpha")


def _is_off(value: Any) -> bool:
    return value is None or value is False or value == {} or value == []


def check_config(path: PathLike, config: Mapping[str, Any]) -> None:
    """Raise AdapterFormatError unless ``config`` describes an adapter skillbank applies
    exactly (see the module docstring)."""
    path = Path(path)
    for field in REQUIRED:
        if field not in config:
            raise AdapterFormatError(path, "missing (required)", field)
    for field, value in config.items():
        if field in SUPPORTED:
            check, accepts = SUPPORTED[field]
            verdict = check(value)
            if verdict is True or verdict is None:
                continue
            problem = verdict if isinstance(verdict, str) else f"must be {accepts}"
            if field == "init_lora_weights" and str(value).lower().startswith(_BASE_CHANGING_INITS):
                problem = (
                    f"{value!r} also changes the base weights, so the adapter does not apply "
                    "to the original base (save it with peft's "
                    "path_initial_model_for_weight_conversion)"
                )
            raise AdapterFormatError(path, f"{problem}, got {value!r}", field)
        if field in PEFT_DEFAULTS:
            if value != PEFT_DEFAULTS[field]:
                default = json.dumps(PEFT_DEFAULTS[field])
                raise AdapterFormatError(
                    path, f"unsupported option {value!r} (skillbank supports only {default})", field
                )
        elif not _is_off(value):
            raise AdapterFormatError(path, f"unknown option {value!r}: not applied", field)


def read_config(path: Path) -> dict[str, Any]:
    """Read and check ``adapter_config.json``."""
    if not path.is_file():
        raise AdapterFormatError(path, "file not found")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AdapterFormatError(path, f"not valid JSON ({exc})") from exc
    if not isinstance(config, dict):
        raise AdapterFormatError(path, f"must hold a JSON object, got {type(config).__name__}")
    check_config(path, config)
    return config


# -------------------------------------------------------------------------------- patterns
def _pattern_problem(pattern: Any, ok: Callable[[Any], bool], kind: str) -> str | None:
    if pattern is None:
        return None
    if not isinstance(pattern, dict):
        return "must be an object"
    for key, value in pattern.items():
        try:
            re.compile(key)
        except re.error as exc:
            return f"key {key!r} is not a valid regex ({exc})"
        if not ok(value):
            return f"value of {key!r} must be {kind}"
    return None


def pattern_key(pattern: Mapping[str, Any], module_path: str) -> str | None:
    """The first key of a rank/alpha pattern that matches ``module_path`` (peft semantics)."""
    for key in pattern:
        if re.match(rf"(.*\.)?({key})$", module_path):
            return key
    return None


def resolve_pattern(pattern: Mapping[str, Any], module_path: str, default: Any) -> Any:
    """The value ``pattern`` gives ``module_path``, else ``default``."""
    key = pattern_key(pattern, module_path)
    return default if key is None else pattern[key]


def default_and_pattern(values: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The most common value, and a pattern giving every other module its value.

    Pattern keys are the plain module paths when that is unambiguous whatever the key order
    (peft re-sorts the keys when it saves a config); otherwise they are anchored exact
    regexes (``^pi\\.0``), which match one module path only.
    """
    counts = Counter(values.values())
    default = max(counts, key=lambda v: (counts[v], v))
    pattern = {p: v for p, v in sorted(values.items()) if v != default}
    for path, value in values.items():
        hits = {pattern[k] for k in pattern if pattern_key({k: 0}, path) is not None}
        if hits - {value} or (not hits and value != default):
            return default, {"^" + re.escape(p): v for p, v in pattern.items()}
    return default, pattern
