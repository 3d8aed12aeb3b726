"""The ``interference`` and ``interference-report`` verbs. Only argparse and pathlib at
import time: torch and the rest load inside the handlers."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from skillbank.cli.argtypes import (
    add_report_parser,
    add_threads_arg,
    int_list,
    name_list,
    text_verb,
)
from skillbank.config import add_config_args
from skillbank.errors import ConfigError

HELP = """\
Train domains one after another on SHARED parameters (one LoRA adapter for all, or the full
weights) with the project's RL code, keep theta after each domain, and measure how each
later domain B damages each earlier domain A: update sparsity, Jaccard overlap of the top
10% most-changed neurons, gradient cosine per module, measured damage on A's smooth loss
and score, its first- and second-order predictions (Hessian-vector products), and the share
of the second-order term held by k = 1..16 curvature directions (Lanczos). Then repair the
most damaged domain: refresh (n steps on it) and sparse rollback (reset the top p% of
coordinates by a damage score to theta_A, swept over p, next to random rollbacks).
Writes OUT/results.json, OUT/report.html and OUT/theta/*.safetensors.

text domains (LM, GRPO on a tiny causal LM):
  skillbank interference --domains reverse,sort,caesar,add --mode shared-adapter --out int-text
control suite (PPO on an actor-critic):
  skillbank interference --suite cartpole-physics --tasks 0,1,5,3 --mode full --out int-cartpole
rebuild the report:
  skillbank interference-report int-cartpole
"""


def add_parsers(
    subparsers: argparse._SubParsersAction,
    commands: dict[str, Callable[[argparse.Namespace], None]] | None = None,
) -> None:
    """Add ``interference`` and ``interference-report``; handlers are set as the parsers'
    ``handler`` default and, when ``commands`` is given, added to it."""
    if commands is not None:
        commands.update({"interference": cmd_interference, "interference-report": cmd_report})
    p = text_verb(
        subparsers,
        "interference",
        "cross-domain interference on shared parameters: measure, predict, repair",
        HELP,
    )
    what = p.add_argument_group("what to train (text domains or a control suite)")
    what.add_argument(
        "--domains", type=name_list, help="text domains in order, e.g. reverse,sort,caesar,add"
    )
    what.add_argument(
        "--suite", help="control suite (see 'skillbank suites'), e.g. cartpole-physics"
    )
    what.add_argument(
        "--tasks", type=int_list, help="indices of the suite's tasks, in order (default all)"
    )
    what.add_argument(
        "--mode",
        choices=["shared-adapter", "full"],
        help="shared-adapter: one LoRA adapter for every domain; full: every weight "
        "(default: shared-adapter for text, full for control)",
    )
    what.add_argument("--out", type=Path, required=True, help="output folder")
    control, text, measures = _models()
    tr = p.add_argument_group("training (both)")
    tr.add_argument(
        "--steps",
        type=int,
        help=f"steps per domain (control: env steps, default {SETTINGS['control'][1]}; "
        f"text: GRPO steps, default {SETTINGS['text'][1]})",
    )
    tr.add_argument(
        "--refresh-steps", type=int, help="refresh steps on the damaged domain (default steps/8)"
    )
    tr.add_argument("--lr", type=float, help="learning rate (default: the project's default)")
    tr.add_argument(
        "--rank",
        type=int,
        help=f"LoRA rank in shared-adapter mode (default {_default(text, 'rank')})",
    )
    tr.add_argument(
        "--loss-samples",
        type=int,
        help=f"states (control, default {_default(control, 'loss_states')}) / reference answers "
        f"(text, default {_default(text, 'loss_samples')}) per loss",
    )
    tr.add_argument("--seed", type=int, help=f"seed (default {_default(measures, 'seed')})")
    add_config_args(
        p.add_argument_group("control (ControlOptions fields)"),
        control,
        only=("hidden", "base_steps", "eval_episodes", "eval_every"),
    )
    add_config_args(
        p.add_argument_group("text (TextOptions fields)"),
        text,
        only=("base", "warmup_sft", "prompts_per_step", "group_size", "eval_n"),
    )
    ms = p.add_argument_group("measures and repairs (InterferenceConfig fields)")
    add_config_args(ms, measures, skip=("steps", "refresh_steps", "seed"))
    p.add_argument(
        "--overwrite", action="store_true", help="replace an earlier run in --out (else refused)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_threads_arg(p)
    p.set_defaults(handler=cmd_interference)

    p = add_report_parser(subparsers, "interference-report", "interference", cmd_report)
    p.add_argument(
        "--markdown", action="store_true", help="also print the tables as Markdown (for docs)"
    )


def _models() -> tuple[Any, Any, Any]:
    """ControlOptions, TextOptions, InterferenceConfig (pydantic only, no torch)."""
    from skillbank.interference.config import ControlOptions, InterferenceConfig, TextOptions

    return ControlOptions, TextOptions, InterferenceConfig


def _default(model: Any, name: str) -> Any:
    return model.model_fields[name].get_default(call_default_factory=True)


def _options(args: argparse.Namespace, model: Any, **given: Any) -> Any:
    """``model`` from its fields given as flags (same names) and ``given`` (flags of
    other names); the model's defaults fill the rest. Errors name the field."""
    from skillbank.config import validate

    flags = vars(args)
    data = {k: flags[k] for k in model.model_fields if flags.get(k) is not None}
    data.update({k: v for k, v in given.items() if v is not None})
    return validate(model, data, "command line")


def config_from_args(args: argparse.Namespace, default_steps: int) -> Any:
    """The InterferenceConfig: steps and refresh steps from the kind's defaults and the
    flags, then every other flag the user gave."""
    from skillbank.config import config_from_args as apply_flags
    from skillbank.config import validate
    from skillbank.interference.config import InterferenceConfig

    steps = args.steps or default_steps
    refresh = args.refresh_steps if args.refresh_steps is not None else max(1, steps // 8)
    given = {"steps": steps, "refresh_steps": refresh, "seed": args.seed}
    base = validate(
        InterferenceConfig, {k: v for k, v in given.items() if v is not None}, "command line"
    )
    rest = {k: v for k, v in vars(args).items() if k not in ("steps", "refresh_steps", "seed")}
    return apply_flags(argparse.Namespace(**rest), base)


def control_from_args(args: argparse.Namespace) -> Any:
    from skillbank.interference.config import ControlOptions
    from skillbank.interference.control import control_setting
    from skillbank.recipes.compat import user_tasks

    suite = user_tasks(args.suite)
    idx = args.tasks if args.tasks else list(range(len(suite)))
    bad = [i for i in idx if not 0 <= i < len(suite)]
    if bad:
        raise ConfigError(
            f"command line: field tasks: indices {bad} out of range for suite {args.suite!r} "
            f"({len(suite)} tasks)"
        )
    specs = [suite[i] for i in idx]
    opts = _options(
        args, ControlOptions, specs=specs, learning_rate=args.lr, loss_states=args.loss_samples
    )
    return control_setting(opts)


def text_from_args(args: argparse.Namespace) -> Any:
    from skillbank.interference.config import TextOptions
    from skillbank.interference.text import text_setting

    opts = _options(args, TextOptions, learning_rate=args.lr)
    return text_setting(opts)


SETTINGS: dict[str, tuple[Callable[[argparse.Namespace], Any], int]] = {
    "control": (control_from_args, 40_960),
    "text": (text_from_args, 60),
}
"""kind -> (build the Setting from the flags, default steps per domain)."""


def domain_names(args: argparse.Namespace) -> list[str]:
    """The domains' names in training order, from the flags alone."""
    if args.domains:
        return list(args.domains)
    from skillbank.recipes.compat import user_tasks

    suite = user_tasks(args.suite)
    return [suite[i].name for i in (args.tasks or range(len(suite))) if 0 <= i < len(suite)]


def cmd_interference(args: argparse.Namespace) -> None:
    if (args.suite is None) == (args.domains is None):
        raise ConfigError("command line: give either --domains (text) or --suite (control)")
    kind = "control" if args.suite else "text"
    if args.mode is None:
        args.mode = "full" if kind == "control" else "shared-adapter"
    if (args.out / "results.json").exists() and not args.overwrite:
        raise ConfigError(f"{args.out / 'results.json'}: exists: give --overwrite or another --out")
    repair = getattr(args, "repair_domain", None)
    if repair is not None:  # checked before any training
        names = domain_names(args)
        if repair not in names[:-1]:
            raise ConfigError(
                f"command line: field repair_domain: {repair!r} is not one of {names[:-1]}"
            )
    build, default_steps = SETTINGS[kind]
    cfg = config_from_args(args, default_steps)
    setting = build(args)
    if len(setting.domains) < 2:
        raise ConfigError("command line: interference needs at least two domains")
    from skillbank.interference.experiment import run_experiment

    res = run_experiment(setting, cfg, args.out, quiet=args.quiet)
    print_summary(res)
    print(f"results: {args.out / 'results.json'}  report: {args.out / 'report.html'}")


def print_summary(res: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    from skillbank.interference.summary import rollback_text, score_table, targets

    header, rows = score_table(res)
    table = Table(title=f"interference ({res['mode']}): score per domain after each stage")
    for h in header:
        table.add_column(h.split("/", 1)[-1], justify="right")
    for row in rows:
        table.add_row(*row)
    console = Console()
    console.print(table)
    t = targets(res)
    c, r, rb = t["correlation"], t["refresh"], t["rollback"]
    if int(c["n"]) >= 3:
        corr = (
            f"damage: Pearson(predicted, measured) {c['pearson_predicted']:.3f}, second-order "
            f"alone {c['pearson_second_order']:.3f} over {int(c['n'])} pairs"
        )
    else:
        corr = f"damage: correlation undefined over {int(c['n'])} pair(s) (3 or more needed)"
    console.print(
        corr + "\n"
        f"refresh {r['domain']}: {100 * r['recovered_fraction']:.0f}% of a "
        f"{r['drop']:.1f}-point drop recovered, others lost <= "
        f"{max(0.0, r['others_max_drop']):.1f} ({'met' if r['met'] else 'not met'})\n"
        + rollback_text(rb)
    )


def cmd_report(args: argparse.Namespace) -> None:
    from skillbank.interference.report import rebuild

    print(f"report written to {rebuild(args.dir)}")
    if args.markdown:
        from skillbank.interference.report import load_results
        from skillbank.interference.summary import markdown

        print(markdown(load_results(args.dir)))
