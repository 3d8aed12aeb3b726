"""The adapter_config.json allow-list: options skillbank understands, peft's defaults,
unknown options."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from skillbank.errors import SkillbankError
from skillbank.lora.peft_config import (
    PEFT_DEFAULTS,
    SUPPORTED,
    AdapterFormatError,
    check_config,
)

BASE: dict[str, Any] = {"peft_type": "LORA", "r": 4, "lora_alpha": 8}
CFG = Path("lib/skills/a/adapter_config.json")


def test_table_matches_installed_peft() -> None:
    peft = pytest.importorskip("peft")
    fields = {f.name: f for f in dataclasses.fields(peft.LoraConfig)}
    assert set(fields) == set(PEFT_DEFAULTS)
    for name, f in fields.items():
        if name == "runtime_config":
            continue  # an object, never written to adapter_config.json
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        assert PEFT_DEFAULTS[name] == default, name


def test_peft_written_default_config_passes() -> None:
    peft = pytest.importorskip("peft")
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["pi.0"]).to_dict()
    config["target_modules"] = sorted(config["target_modules"])  # JSON writes a list
    config.pop("runtime_config", None)
    check_config(CFG, config)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("lora_dropout", 0.1),
        ("init_lora_weights", "gaussian"),
        ("init_lora_weights", False),
        ("target_modules", "pi\\..*"),
        ("layers_to_transform", [0, 1]),
        ("task_type", "CAUSAL_LM"),
        ("inference_mode", False),
        ("use_rslora", True),
        ("rank_pattern", {"pi.0": 2}),
        ("megatron_core", "megatron.core"),
        ("fan_in_fan_out", True),  # GPT-2 Conv1D adapters: same tensors
        ("some_future_option", None),
        ("some_future_flag", False),
    ],
)
def test_supported_values_pass(field: str, value: Any) -> None:
    check_config(CFG, {**BASE, field: value})


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("use_dora", True, "supports only false"),
        ("ensure_weight_tying", True, "supports only false"),
        ("loftq_config", {"loftq_bits": 4}, "supports only {}"),
        ("layer_replication", [[0, 2]], "supports only null"),
        ("bias", "lora_only", 'supports only "none"'),
        ("some_future_option", 3, "unknown option"),
        ("init_lora_weights", "olora", "changes the base"),
        ("init_lora_weights", "magic", "must be"),
        ("lora_dropout", 1.5, "[0, 1)"),
    ],
)
def test_other_values_name_the_file_and_field(field: str, value: Any, words: str) -> None:
    with pytest.raises(AdapterFormatError) as err:
        check_config(CFG, {**BASE, field: value})
    msg = str(err.value)
    assert msg.startswith(f"{CFG}: field {field!r}: ") and words in msg, msg
    assert isinstance(err.value, SkillbankError) and isinstance(err.value, ValueError)


@pytest.mark.parametrize("field", ["peft_type", "r", "lora_alpha"])
def test_required_fields(field: str) -> None:
    config = dict(BASE)
    config.pop(field)
    with pytest.raises(AdapterFormatError, match=f"field '{field}': missing"):
        check_config(CFG, config)


def test_every_supported_field_is_a_peft_field() -> None:
    assert set(SUPPORTED) <= set(PEFT_DEFAULTS)
