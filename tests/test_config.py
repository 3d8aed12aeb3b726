"""TOML configs: fields applied with their types, one clear error naming file and field."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from skillbank.algos.ppo import PPOConfig
from skillbank.config import ConfigError, load_toml


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ppo.toml"
    path.write_text(text)
    return path


def test_fields_are_applied(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[ppo]
learning_rate = 1e-3
anneal_lr = false
num_minibatches = 8
gamma = 1          # int for a float field
target_kl = 0.02
clip_coef = 0.1
""",
    )
    cfg = load_toml(path, PPOConfig, "ppo", PPOConfig())
    assert cfg.learning_rate == 1e-3 and cfg.anneal_lr is False
    assert cfg.num_minibatches == 8 and cfg.clip_coef == 0.1 and cfg.target_kl == 0.02
    assert cfg.gamma == 1.0 and isinstance(cfg.gamma, float)
    # untouched fields keep the base's values, and the base is not modified
    base = PPOConfig(ent_coef=0.05)
    cfg2 = load_toml(path, PPOConfig, "ppo", base)
    assert cfg2.ent_coef == 0.05 and base.learning_rate == 2.5e-4


def test_empty_file_keeps_defaults(tmp_path: Path) -> None:
    assert load_toml(write(tmp_path, ""), PPOConfig, "ppo") == PPOConfig()
    assert load_toml(write(tmp_path, "[ppo]\n"), PPOConfig, "ppo") == PPOConfig()


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("[ppo]\nlearning_rat = 1e-3\n", "learning_rat"),  # unknown field
        ("[ppo]\nnum_minibatches = 2.5\n", "num_minibatches"),  # float for int
        ("[ppo]\nnum_minibatches = true\n", "num_minibatches"),  # bool for int
        ("[ppo]\nanneal_lr = 'yes'\n", "anneal_lr"),  # str for bool
        ("[ppo]\nlearning_rate = true\n", "learning_rate"),  # bool for float
        ("[ppo]\nlearning_rate = '1e-3'\n", "learning_rate"),  # str for float
        ("[ppo]\ntarget_kl = 'off'\n", "target_kl"),  # str for float | None
    ],
)
def test_bad_field_names_file_and_field(tmp_path: Path, text: str, field: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_toml(path, PPOConfig, "ppo", PPOConfig())
    msg = str(info.value)
    assert str(path) in msg and repr(field) in msg


def test_unknown_table(tmp_path: Path) -> None:
    path = write(tmp_path, "[ppo]\ngamma = 0.9\n[trainer]\nx = 1\n")
    with pytest.raises(ConfigError, match=re.escape(str(path)) + ".*trainer"):
        load_toml(path, PPOConfig, "ppo", PPOConfig())


def test_ppo_not_a_table(tmp_path: Path) -> None:
    path = write(tmp_path, "ppo = 3\n")
    with pytest.raises(ConfigError, match=re.escape(str(path)) + ".*ppo"):
        load_toml(path, PPOConfig, "ppo", PPOConfig())


def test_invalid_toml(tmp_path: Path) -> None:
    path = write(tmp_path, "[ppo\ngamma = = 0.9\n")
    with pytest.raises(ConfigError, match=re.escape(str(path))):
        load_toml(path, PPOConfig, "ppo", PPOConfig())


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "none.toml"
    with pytest.raises(ConfigError, match=re.escape(str(path))):
        load_toml(path, PPOConfig, "ppo", PPOConfig())


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)
