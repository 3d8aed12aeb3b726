"""The interference verb's flags come from the config models (defaults stated once)."""

from __future__ import annotations

import pytest

from skillbank.cli.interference import _options, config_from_args
from skillbank.cli.main import build_parser
from skillbank.config import ConfigError
from skillbank.interference.config import ControlOptions, InterferenceConfig, TextOptions
from skillbank.tasks import get_suite


def parse(*argv: str):  # type: ignore[no-untyped-def]
    return build_parser().parse_args(["interference", "--out", "x", *argv])


def test_flags_fill_the_models_and_defaults_come_from_them() -> None:
    args = parse("--suite", "cartpole-physics", "--hidden", "8,8", "--eval-every", "0")
    specs = list(get_suite("cartpole-physics"))[:2]
    opts = _options(args, ControlOptions, specs=specs, loss_states=args.loss_samples)
    assert opts.hidden == [8, 8] and opts.eval_every == 0
    defaults = ControlOptions(specs=specs)
    assert opts.rank == defaults.rank and opts.base_steps == defaults.base_steps
    text = _options(parse("--domains", "reverse,sort", "--loss-samples", "5"), TextOptions)
    assert text.loss_samples == 5 and text.warmup_sft == TextOptions(domains=["a"]).warmup_sft
    cfg = config_from_args(parse("--domains", "a,b", "--eigen-k", "4", "--seed", "3"), 60)
    assert (cfg.steps, cfg.refresh_steps, cfg.eigen_k, cfg.seed) == (60, 7, 4, 3)
    assert cfg.krylov_steps == InterferenceConfig(steps=1, refresh_steps=0).krylov_steps


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        (("--domains", "a,b", "--rank", "0"), "rank"),
        (("--domains", "a,a"), "domains"),
        (("--domains", "a,b", "--group-size", "0"), "group_size"),
    ],
)
def test_bad_flags_name_the_field(argv: tuple[str, ...], field: str) -> None:
    with pytest.raises(ConfigError, match=f"command line: field '{field}'"):
        _options(parse(*argv), TextOptions)


def test_bad_measure_flag_names_the_field() -> None:
    with pytest.raises(ConfigError, match="command line: field 'eigen_steps'"):
        config_from_args(parse("--domains", "a,b", "--eigen-k", "8", "--eigen-steps", "4"), 60)
