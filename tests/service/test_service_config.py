"""Configs: trainer.toml and orch.toml load into typed configs; errors name file and field."""

from __future__ import annotations

from pathlib import Path

import pytest
from svc_helpers import fake_trainer, toml_text

from skillbank.config import ConfigError
from skillbank.service.kinds import load_run_config
from skillbank.service.kinds.ppo.config import PPORunConfig
from skillbank.service.trainer.config import TrainerConfig, load_trainer_config
from skillbank.tasks import get_suite


def _trainer(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "trainer.toml"
    path.write_text(text)
    return path


def test_trainer_config_loads_with_ppo_table(tmp_path: Path) -> None:
    text = toml_text(
        {
            "output_dir": "o",
            "base_task": "cartpole",
            "max_concurrent_runs": 3,
            "ppo": {"update_epochs": 2, "clip_coef": 0.1},
        }
    )
    cfg = load_trainer_config(_trainer(tmp_path, text), out=str(tmp_path / "x"))
    assert cfg.max_concurrent_runs == 3 and cfg.ppo == {"update_epochs": 2, "clip_coef": 0.1}
    assert cfg.output_dir == str(tmp_path / "x")


@pytest.mark.parametrize(
    "text, field",
    [
        ('output_dir = "o"\nbase_task = "cartpole"\nslots = 2\n', "slots"),
        (
            'output_dir = "o"\nbase_task = "cartpole"\nmax_concurrent_runs = "2"\n',
            "max_concurrent_runs",
        ),
        (
            'output_dir = "o"\nbase_task = "cartpole"\nmax_concurrent_runs = 0\n',
            "max_concurrent_runs",
        ),
        ('output_dir = "o"\n', "library"),
        (
            'output_dir = "o"\nbase_task = "cartpole"\n[ppo]\nlearning_rate = 0.1\n',
            "ppo.learning_rate",
        ),
        ('output_dir = "o"\nbase_task = "cartpole"\n[ppo]\nclip_coef = "x"\n', "clip_coef"),
        ('output_dir = "o"\nbase_task = "cartpole"\nmax_async_level = 4\n', "keep_broadcasts"),
    ],
)
def test_trainer_config_errors_name_file_and_field(tmp_path: Path, text: str, field: str) -> None:
    path = _trainer(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_trainer_config(path)
    assert str(path) in str(err.value) and field in str(err.value)


def test_trainer_config_syntax_error_names_the_file(tmp_path: Path) -> None:
    path = _trainer(tmp_path, 'output_dir = "o\n')
    with pytest.raises(ConfigError, match="not valid TOML") as err:
        load_trainer_config(path)
    assert str(path) in str(err.value)


@pytest.fixture(scope="module")
def info(tmp_path_factory: pytest.TempPathFactory):
    return fake_trainer(tmp_path_factory.mktemp("out"))[0]


def _orch(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "orch.toml"
    path.write_text(text)
    return path


def test_run_config_defaults_and_specs(tmp_path: Path, info) -> None:
    cfg, specs = load_run_config(_orch(tmp_path, 'task = "cartpole/long-pole"\nrank = 4\n'), info)
    assert isinstance(cfg, PPORunConfig) and cfg.rank == 4 and cfg.kind == "ppo"
    assert [s.name for s in specs] == ["cartpole/long-pole"]
    _, specs = load_run_config(_orch(tmp_path, 'suite = "cartpole-physics"\n'), info)
    assert [s.name for s in specs] == [s.name for s in get_suite("cartpole-physics")]


@pytest.mark.parametrize(
    "text, needle",
    [
        ('task = "cartpole\n', "not valid TOML"),
        ('task = "cartpole"\nbogus = 1\n', "field 'bogus': unknown field"),
        ('task = "cartpole"\nrank = "eight"\n', "field 'rank'"),
        (
            'task = "cartpole"\nrank = 64\n',
            "field 'rank': 64 is above the trainer's rank capacity 16",
        ),
        ('task = "cartpole/nope"\n', "field 'task'"),
        ('task = "pendulum"\n', "field 'task'"),
        ('suite = "nope"\n', "field 'suite'"),
        ("rank = 4\n", "field 'task'"),
        ('task = "cartpole"\nkind = "nope"\n', "field 'kind'"),
        ('task = "cartpole"\nlearning_rate = -1.0\n', "field 'learning_rate'"),
        ('task = "cartpole"\nlearning_rate = inf\n', "field 'learning_rate'"),
        ('task = "cartpole"\nalpha = nan\n', "field 'alpha'"),
        ('task = "cartpole"\nseed = -1\n', "field 'seed'"),
        ('task = "cartpole"\n[ppo]\nx = 1\n', "field 'ppo'"),
    ],
)
def test_run_config_errors_name_file_and_field(
    tmp_path: Path, info, text: str, needle: str
) -> None:
    path = _orch(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_run_config(path, info)
    assert str(path) in str(err.value) and needle in str(err.value)


def test_service_config_fields_are_documented() -> None:
    from skillbank.service.kinds.lm.config import LMRunConfig
    from skillbank.service.protocol.info import TrainerInfo

    for cls in (TrainerConfig, PPORunConfig, LMRunConfig, TrainerInfo):
        for name, field in cls.model_fields.items():
            assert (field.description or "").strip(), f"{cls.__name__}.{name} has no docstring"
