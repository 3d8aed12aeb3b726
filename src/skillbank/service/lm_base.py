"""The trainer's ``lm_base``: a causal-LM base folder, copied to ``OUT/base`` in the service's
base layout (``config.json`` = ``{"kind": "causal_lm", "kwargs": ...}``, ``model.safetensors``)
so orchestrators, the converter and ``library add`` load it like any other base."""

from __future__ import annotations

import os
from pathlib import Path

from safetensors.torch import save_file

from skillbank.config import ConfigError
from skillbank.service.files import read_json_object, staging_dir, write_json_atomic
from skillbank.service.paths import OutPaths

PACKAGED = "tiny-lm"
"""``lm_base = "tiny-lm"``: the base packaged with skillbank."""


def lm_base_dir(source: str, out: OutPaths, where: Path) -> Path:
    """Write (once) OUT/base from the LM folder ``source``; returns OUT/base."""
    from skillbank.lm.model import DEFAULT_BASE, LM_TARGETS, base_kwargs, load_base

    folder = DEFAULT_BASE if source == PACKAGED else Path(source)
    try:
        model, tok = load_base(folder)
    except (OSError, ValueError) as e:
        raise ConfigError(f"{where}: field 'lm_base': cannot load {folder} ({e})") from e
    config = {
        "kind": "causal_lm",
        "kwargs": base_kwargs(model, tok),
        "obs_norm": None,
        "target_modules": LM_TARGETS,
        "source": str(folder.absolute()),
    }
    if (out.base / "model.safetensors").is_file():
        old = read_json_object(out.base / "config.json")
        if {k: v for k, v in old.items() if k != "source"} != {
            k: v for k, v in config.items() if k != "source"
        }:
            raise ConfigError(
                f"{where}: field 'lm_base': {out.base} holds a different base; "
                "use a new outputs folder or the same base"
            )
        return out.base
    stage = staging_dir(out.staging)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(stage / "model.safetensors"))
    write_json_atomic(stage / "config.json", config)
    os.replace(stage, out.base)
    return out.base
