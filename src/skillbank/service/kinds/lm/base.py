"""The trainer's ``lm_base``: a causal-LM base folder, copied to ``OUT/base`` in the service's
base layout (``config.json`` = ``{"kind": "causal_lm", "kwargs": ...}``, ``model.safetensors``)
so orchestrators, the converter and ``library add`` load it like any other base. Any local
Hugging Face causal-LM folder works: LoRA targets are the architecture's
(``lm.hf.resolve_targets``), the tokenizer is kept in ``OUT/base/tokenizer/`` and its eos
ids in ``config.json`` (``lm.evaluate.base_tokenizer`` reads them back)."""

from __future__ import annotations

import os
from pathlib import Path

from safetensors.torch import save_file

from skillbank.config import ConfigError
from skillbank.errors import SkillbankError
from skillbank.io import read_json, write_json
from skillbank.service.protocol.files import staging_dir
from skillbank.service.protocol.paths import BaseFiles, OutPaths

PACKAGED = "tiny-lm"
"""``lm_base = "tiny-lm"``: the base packaged with skillbank."""


def lm_base_dir(source: str, out: OutPaths, where: Path) -> Path:
    """Write (once) OUT/base from the LM folder ``source``; returns OUT/base."""
    from skillbank.lm.evaluate import TOKENIZER_DIR
    from skillbank.lm.hf import resolve_targets
    from skillbank.lm.model import DEFAULT_BASE, base_kwargs, load_base

    folder = DEFAULT_BASE if source == PACKAGED else Path(source)
    try:
        model, tok = load_base(folder)
        targets = resolve_targets(model, None, f"{where}: lm_base {folder}")
    except (OSError, ValueError, SkillbankError) as e:
        raise ConfigError(f"{where}: field 'lm_base': cannot load {folder} ({e})") from e
    config = {
        "kind": "causal_lm",
        "kwargs": base_kwargs(model, tok),
        "obs_norm": None,
        "target_modules": targets,
        "eos_ids": list(tok.eos_ids),
        "source": str(folder.absolute()),
    }
    if out.base_files.weights.is_file():
        old = read_json(out.base_files.config, ConfigError)
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
    staged = BaseFiles(stage)
    save_file(state, str(staged.weights))
    write_json(staged.config, config, indent=1, sort_keys=True)
    tok.save(stage / TOKENIZER_DIR)
    os.replace(stage, out.base)
    return out.base
