"""Export a skill as a standalone policy (merged weights), load one back, memory report."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from safetensors.torch import load_file, save_file
from torch import nn

from skillbank.io import read_json, stage_dir, withdraw_dir, write_json
from skillbank.library.errors import LibraryError
from skillbank.models import build_base

if TYPE_CHECKING:
    from skillbank.library.core import PolicyLibrary


def export_skill(lib: PolicyLibrary, name: str, out_dir: str | os.PathLike) -> Path:
    """Write skill ``name`` merged into a plain copy of the base: ``model.safetensors``
    + ``config.json`` (kind, kwargs, obs_norm, task), and for actor-critics ``policy.py``,
    a runner that needs only torch and safetensors. ``load_policy`` loads it too."""
    slot = lib.slot_of(name)
    merged = lib.model.merged_copy(slot)
    out = Path(out_dir)
    tmp = stage_dir(out)
    state = {k: v.detach().contiguous() for k, v in merged.state_dict().items()}
    save_file(state, str(tmp / "model.safetensors"))
    meta = lib.skill_meta(name)
    config = {
        "kind": lib.base_config["kind"],
        "kwargs": lib.base_config["kwargs"],
        "obs_norm": meta.get("obs_norm"),
        "task": meta.get("task"),
        "skill": name,
    }
    write_json(tmp / "config.json", config)
    if lib.base_config["kind"] == "actor_critic":  # a runner that needs no skillbank
        shutil.copyfile(Path(__file__).with_name("standalone.py"), tmp / "policy.py")
    withdraw_dir(out)
    os.replace(tmp, out)
    return out


def memory_report(lib: PolicyLibrary) -> dict:
    """Bytes of the base, of each stored skill (unpadded A and B), the total, and the
    total of one full copy of the base per skill."""
    base_bytes = sum(p.numel() * p.element_size() for p in lib.merged(None).parameters())
    skill_bytes = {}
    for name in lib.skills:
        skill_bytes[name] = sum(
            (a.numel() + b.numel()) * a.element_size()
            for a, b, _ in lib.model.slot_state(lib.slot_of(name)).values()
        )
    n = len(skill_bytes)
    total = base_bytes + sum(skill_bytes.values())
    full = base_bytes * max(n, 1)
    return {
        "base_bytes": base_bytes,
        "skill_bytes": skill_bytes,
        "total_bytes": total,
        "full_copies_bytes": full,
        "saving": 1.0 - total / full if n else 0.0,
    }


def load_policy(folder: str | os.PathLike) -> tuple[nn.Module, dict]:
    """Load a policy written by ``export_skill`` (or a library's base folder)."""
    folder = Path(folder)
    config = read_json(folder / "config.json", LibraryError)
    for key in ("kind", "kwargs"):
        if key not in config:
            raise LibraryError(f"{folder / 'config.json'}: missing field {key!r}")
    try:
        module = build_base(config["kind"], config["kwargs"])
    except (TypeError, ValueError) as e:
        raise LibraryError(f"{folder / 'config.json'}: field 'kwargs': {e}") from e
    weights = folder / "model.safetensors"
    try:
        module.load_state_dict(load_file(str(weights)))
    except Exception as e:  # safetensors raises several types on corrupt files
        raise LibraryError(f"{weights}: cannot load weights ({e})") from e
    return module, config
