"""PEFT LoRA adapter folders: read and write them, and move them in and out of skillbank slots.

An adapter folder holds two files, exactly as ``peft`` (0.21) writes them with ``save_pretrained``:

* ``adapter_config.json``: ``peft_type: "LORA"``, ``r``, ``lora_alpha``, ``target_modules``,
  ``rank_pattern`` / ``alpha_pattern`` (per-module exceptions, see below), ``use_rslora``,
  ``modules_to_save``; every other option must be one skillbank supports or keep peft's
  default (the allow-list in ``peft_config``).
* ``adapter_model.safetensors``: ``base_model.model.<module path>.lora_A.weight`` ``[r, in]``
  and ``...lora_B.weight`` ``[out, r]`` (peft drops the adapter name when saving; keys that
  still carry it, ``...lora_A.<adapter>.weight``, are accepted on reading). Full tensors of
  ``modules_to_save`` are stored under the base's own key, ``base_model.model.<module
  path>.<param>``: peft strips its ``modules_to_save.<adapter>.`` wrapper prefix when saving
  (the unstripped form is accepted on reading).

Scaling is ``lora_alpha / r`` (``lora_alpha / sqrt(r)`` with ``use_rslora``). The in-memory
state used here is always ``{module path: (A [r, in], B [out, r], alpha)}`` with scaling
``alpha / r``: rsLoRA adapters are converted on reading (``alpha * sqrt(r)``).

``rank_pattern`` / ``alpha_pattern`` follow peft: a module takes the value of the first key
``k`` (in dict order) for which ``re.match(rf"(.*\\.)?({k})$", module_path)`` succeeds, else
``r`` / ``lora_alpha``.

Only safetensors are read; nothing is ever unpickled.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import safetensors.torch
import torch
from safetensors import SafetensorError
from torch import Tensor

from skillbank.io import publish_files
from skillbank.lora import MultiLoraModel
from skillbank.lora.peft_config import (
    WRITTEN_DEFAULTS,
    AdapterFormatError,
    PathLike,
    check_config,
    default_and_pattern,
    is_number,
    pattern_key,
    read_config,
    resolve_pattern,
)

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
KEY_PREFIX = "base_model.model."
LORA_PARTS = ("lora_A", "lora_B")

LoraState = dict[str, tuple[Tensor, Tensor, float]]

_LORA_KEY = re.compile(
    re.escape(KEY_PREFIX)
    + r"(?P<path>.+)\.(?P<part>lora_A|lora_B)(?:\.(?P<adapter>[^.]+))?\.weight"
)
_WRAPPER_INFIX = re.compile(r"\.modules_to_save\.[^.]+\.")


class Adapter(NamedTuple):
    """Contents of an adapter folder, independent of any model."""

    config: dict[str, Any]  # adapter_config.json as read
    state: LoraState  # {module path: (A [r, in], B [out, r], alpha)}, scaling alpha / r
    modules_to_save: dict[str, Tensor]  # {parameter path relative to the base: tensor}


# ------------------------------------------------------------------------------------ keys
def peft_key(module_path: str, part: str) -> str:
    """Safetensors key of ``part`` ("lora_A" or "lora_B") of the module at ``module_path``."""
    if part not in LORA_PARTS:
        raise ValueError(f"part must be one of {LORA_PARTS}, got {part!r}")
    return f"{KEY_PREFIX}{module_path}.{part}.weight"


def parse_peft_key(key: str) -> tuple[str, str]:
    """Inverse of :func:`peft_key`: ``(module path, part)``; also accepts an adapter name
    between the part and ``weight`` (``...lora_A.default.weight``)."""
    match = _LORA_KEY.fullmatch(key)
    if match is None:
        raise ValueError(f"not a PEFT LoRA weight key: {key!r}")
    return match["path"], match["part"]


def modules_to_save_key(param_path: str) -> str:
    """Safetensors key of a full ``modules_to_save`` tensor (e.g. ``v.2.weight``)."""
    return KEY_PREFIX + param_path


# --------------------------------------------------------------------------------- tensors
def _read_tensors(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        hint = ""
        if (path.parent / "adapter_model.bin").exists():
            hint = " (adapter_model.bin is never read: pickle files are not loaded)"
        raise AdapterFormatError(path, "file not found" + hint)
    try:
        tensors = safetensors.torch.load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise AdapterFormatError(path, f"corrupt or truncated safetensors file ({exc})") from exc
    for key, t in tensors.items():
        if not t.is_floating_point():
            raise AdapterFormatError(path, f"dtype {t.dtype} is not floating point", key)
        if not bool(torch.isfinite(t).all()):
            raise AdapterFormatError(path, "holds NaN or infinite values", key)
    return tensors


def _is_saved_module_param(param_path: str, names: list[str]) -> bool:
    """Whether a parameter belongs to a module listed in modules_to_save (peft: the module
    name ends with the listed name)."""
    parts = param_path.split(".")
    modules = [".".join(parts[:i]) for i in range(1, len(parts))]
    return any(m.endswith(n) for m in modules for n in names)


def read_adapter(adapter_dir: PathLike) -> Adapter:
    """Read and validate an adapter folder (no model needed)."""
    folder = Path(adapter_dir)
    if not folder.is_dir():
        raise AdapterFormatError(folder, "adapter folder not found")
    cfg_path, w_path = folder / ADAPTER_CONFIG, folder / ADAPTER_WEIGHTS
    config = read_config(cfg_path)
    tensors = _read_tensors(w_path)

    saved_names = config.get("modules_to_save") or []
    lora: dict[str, dict[str, tuple[str, Tensor]]] = {}
    extra: dict[str, Tensor] = {}
    for key, t in tensors.items():
        try:
            module, part = parse_peft_key(key)
        except ValueError:
            pass  # not a LoRA weight: maybe a modules_to_save tensor
        else:
            parts = lora.setdefault(module, {})
            if part in parts:
                raise AdapterFormatError(w_path, f"duplicate of {parts[part][0]!r}", key)
            parts[part] = (key, t)
            continue
        param = _WRAPPER_INFIX.sub(".", key.removeprefix(KEY_PREFIX))
        if key.startswith(KEY_PREFIX) and _is_saved_module_param(param, saved_names):
            if param in extra:
                raise AdapterFormatError(w_path, f"duplicate tensor for {param!r}", key)
            extra[param] = t
            continue
        raise AdapterFormatError(
            w_path,
            "unexpected key: neither a LoRA A/B weight nor a tensor of a module listed in "
            f"{ADAPTER_CONFIG} field 'modules_to_save' ({saved_names})",
            key,
        )
    if not lora:
        raise AdapterFormatError(w_path, "no LoRA weights (keys ...lora_A.weight / lora_B.weight)")

    r, alpha = config["r"], config["lora_alpha"]
    rank_pattern = config.get("rank_pattern") or {}
    alpha_pattern = config.get("alpha_pattern") or {}
    rslora = config.get("use_rslora", False)
    state: LoraState = {}
    for path in sorted(lora):
        parts = lora[path]
        for part in LORA_PARTS:
            if part not in parts:
                raise AdapterFormatError(
                    w_path, f"missing (module {path!r} has no {part})", peft_key(path, part)
                )
        (a_key, a), (b_key, b) = parts["lora_A"], parts["lora_B"]
        rank = resolve_pattern(rank_pattern, path, r)
        rank_field = "r" if pattern_key(rank_pattern, path) is None else "rank_pattern"
        expected = (
            (a_key, a, 0, f"({rank}, in_features)"),
            (b_key, b, 1, f"(out_features, {rank})"),
        )
        for key, t, dim, shape in expected:
            if t.dim() != 2 or t.shape[dim] != rank:
                raise AdapterFormatError(
                    w_path,
                    f"shape {tuple(t.shape)}, expected {shape} from {ADAPTER_CONFIG} "
                    f"field {rank_field!r}",
                    key,
                )
        module_alpha = float(resolve_pattern(alpha_pattern, path, alpha))
        if rslora:  # scaling alpha / sqrt(r) == (alpha * sqrt(r)) / r
            module_alpha *= math.sqrt(rank)
        state[path] = (a, b, module_alpha)
    return Adapter(config, state, extra)


# --------------------------------------------------------------------------------- writing
def _tidy(alpha: float) -> int | float:
    alpha = float(alpha)
    return int(alpha) if alpha.is_integer() else alpha


def write_adapter(
    out_dir: PathLike,
    config: Mapping[str, Any],
    state: Mapping[str, tuple[Tensor, Tensor, float]],
    modules_to_save: Mapping[str, Tensor] | None = None,
) -> None:
    """Write an adapter folder (inverse of :func:`read_adapter`).

    ``state`` alphas mean scaling ``alpha / r``. The fields ``r``, ``lora_alpha``,
    ``rank_pattern``, ``alpha_pattern``, ``target_modules``, ``use_rslora`` and
    ``modules_to_save`` are derived from ``state`` and ``modules_to_save`` (parameter path
    relative to the base -> full tensor) and override those of ``config``; its other fields
    are kept.
    """
    if not state:
        raise ValueError("cannot write an adapter without LoRA modules (state is empty)")
    tensors: dict[str, Tensor] = {}
    ranks: dict[str, int] = {}
    alphas: dict[str, int | float] = {}
    for path in sorted(state):
        a, b, alpha = state[path]
        if a.dim() != 2 or b.dim() != 2 or a.shape[0] != b.shape[1] or a.shape[0] < 1:
            raise ValueError(
                f"module {path!r}: need A [r, in] and B [out, r] with r >= 1, "
                f"got {tuple(a.shape)} and {tuple(b.shape)}"
            )
        if not is_number(alpha):
            raise ValueError(f"module {path!r}: alpha must be a finite number, got {alpha!r}")
        ranks[path], alphas[path] = a.shape[0], _tidy(alpha)
        tensors[peft_key(path, "lora_A")] = a.detach().cpu().contiguous().clone()
        tensors[peft_key(path, "lora_B")] = b.detach().cpu().contiguous().clone()
    saved_modules: set[str] = set()
    for name in sorted(modules_to_save or {}):
        module = name.rpartition(".")[0]
        if not module or module in state:
            raise ValueError(
                f"modules_to_save entry {name!r} must be a parameter of a submodule that "
                "carries no LoRA (e.g. 'v.2.weight')"
            )
        saved_modules.add(module)
        tensors[modules_to_save_key(name)] = (
            modules_to_save[name].detach().cpu().contiguous().clone()  # type: ignore[index]
        )

    r, rank_pattern = default_and_pattern(ranks)
    alpha, alpha_pattern = default_and_pattern(alphas)
    full = {
        **WRITTEN_DEFAULTS,
        **config,
        "r": r,
        "lora_alpha": alpha,
        "rank_pattern": rank_pattern,
        "alpha_pattern": alpha_pattern,
        "target_modules": sorted(state),
        "use_rslora": False,
        "modules_to_save": sorted(saved_modules) or None,
        "exclude_modules": None,
        "layers_to_transform": None,
        "layers_pattern": None,
    }
    out = Path(out_dir)
    check_config(out / ADAPTER_CONFIG, full)
    text = json.dumps(full, indent=2, sort_keys=True) + "\n"  # fails before touching the disk
    blob = safetensors.torch.save(tensors, metadata={"format": "pt"})
    publish_files(out, {ADAPTER_WEIGHTS: blob, ADAPTER_CONFIG: text.encode("utf-8")})


# ----------------------------------------------------------------------------- model side
def apply_adapter(
    model: MultiLoraModel, slot: int, adapter: Adapter, source: PathLike | None = None
) -> None:
    """Check that ``adapter`` fits ``model`` and load it into ``slot``.

    Layers of the model the adapter does not cover are zeroed in the slot. Everything is
    checked first: on error the slot is unchanged. ``modules_to_save`` tensors are not
    applied (a slot holds LoRA weights only); callers take them from the adapter.
    """
    if not 0 <= slot < model.num_slots:
        raise IndexError(f"slot {slot} out of range [0, {model.num_slots})")
    folder = Path(source) if source is not None else Path(".")
    w_path, cfg_path = folder / ADAPTER_WEIGHTS, folder / ADAPTER_CONFIG
    for path, (a, b, _) in adapter.state.items():
        layer = model.layers.get(path)
        if layer is None:
            raise AdapterFormatError(
                w_path,
                f"target module {path!r} is not a LoRA layer of the model "
                f"(layers: {sorted(model.layers)})",
                peft_key(path, "lora_A"),
            )
        rank = a.shape[0]
        if tuple(a.shape) != (rank, layer.in_features):
            raise AdapterFormatError(
                w_path,
                f"shape {tuple(a.shape)}, expected {(rank, layer.in_features)}",
                peft_key(path, "lora_A"),
            )
        if tuple(b.shape) != (layer.out_features, rank):
            raise AdapterFormatError(
                w_path,
                f"shape {tuple(b.shape)}, expected {(layer.out_features, rank)}",
                peft_key(path, "lora_B"),
            )
        if rank > layer.capacity:
            pattern = adapter.config.get("rank_pattern") or {}
            key = pattern_key(pattern, path)
            field = "r" if key is None else f"rank_pattern[{key!r}]"
            raise AdapterFormatError(
                cfg_path,
                f"module {path!r} has rank {rank}, above the slot capacity {layer.capacity}",
                field,
            )
    model.load_slot_state(slot, dict(adapter.state))


def load_adapter(model: MultiLoraModel, slot: int, adapter_dir: PathLike) -> dict[str, Any]:
    """Load the adapter folder into ``slot`` of ``model``; returns its config.

    On any error (AdapterFormatError) the slot is left unchanged.
    """
    adapter = read_adapter(adapter_dir)
    apply_adapter(model, slot, adapter, source=adapter_dir)
    return adapter.config


def save_adapter(
    model: MultiLoraModel,
    slot: int,
    out_dir: PathLike,
    base_model_name_or_path: str = "skillbank-base",
    extra_config: Mapping[str, Any] | None = None,
    modules_to_save: Mapping[str, Tensor] | None = None,
) -> None:
    """Save ``slot`` of ``model`` as a PEFT LoRA adapter folder (layers of rank 0 are left
    out). ``extra_config`` adds fields to adapter_config.json (e.g. ``task_type``)."""
    state = {p: s for p, s in model.slot_state(slot).items() if s[0].shape[0] > 0}
    if not state:
        raise ValueError(f"slot {slot} is empty: nothing to save")
    config = {**(extra_config or {}), "base_model_name_or_path": base_model_name_or_path}
    write_adapter(out_dir, config, state, modules_to_save)
