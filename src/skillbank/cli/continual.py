"""The ``continual`` and ``report`` verbs. Only argparse and pathlib at import time:
torch and the rest load inside the handlers."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from skillbank.cli.argtypes import add_report_parser, add_threads_arg, name_list, text_verb
from skillbank.config import add_config_args

STRATEGY_NAMES = ("finetune", "l2", "ewc", "replay", "lora", "lora-transfer", "multitask")
"""The registered strategies, for --help (a test checks this against the registry)."""

CONTINUAL_HELP = """\
Learn the tasks of a suite one after another with one or more strategies, evaluate every
task every --eval-every steps, and write OUT/results.json and OUT/report.html with the
Continual World metrics: average performance P, forgetting F, forward transfer FT (against
each task trained alone from scratch), the result matrix R[j, i], memory and wall time;
mean and a 90% bootstrap interval over seeds.

strategies:
  finetune       one shared network trained on each task in turn (forgetting baseline)
  l2             shared network + L2 penalty towards the previous task's weights
  ewc            shared network + diagonal-Fisher-weighted penalty (EWC)
  replay         shared network + behaviour cloning on a bounded buffer of earlier tasks
  lora           frozen base (the network after task 1) + one LoRA skill per later task
  lora-transfer  as lora, each skill starting from the best existing skill zero-shot
  multitask      all tasks trained together in one shared network (reference; P only)

example (the documented cartpole run, docs/continual.md):
  skillbank continual --suite cartpole-physics --tasks 0,3,2,6 \\
      --strategy finetune,l2,ewc,replay,lora,lora-transfer,multitask \\
      --steps-per-task 200000 --seeds 3 --eval-every 20000 --out cl-cartpole
"""


def add_parsers(
    subparsers: argparse._SubParsersAction,
    commands: dict[str, Callable[[argparse.Namespace], None]] | None = None,
) -> None:
    """Add the ``continual`` and ``report`` verbs; their handlers are set as the parsers'
    ``handler`` default and, when ``commands`` (verb -> handler) is given, added to it."""
    if commands is not None:
        commands.update({"continual": cmd_continual, "report": cmd_report})
    p = text_verb(
        subparsers,
        "continual",
        "learn a suite's tasks in sequence; forgetting and transfer metrics + report",
        CONTINUAL_HELP,
    )
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument(
        "--config",
        type=Path,
        help="TOML file with a [continual] table of ContinualConfig fields "
        "(rank, penalty weights, buffer size, ...); flags override it",
    )
    g = p.add_argument_group("continual settings (ContinualConfig fields; default: --config)")
    p.add_argument(
        "--strategy",
        dest="strategies",
        type=name_list,
        default=argparse.SUPPRESS,
        help=f"comma-separated strategies: {','.join(STRATEGY_NAMES)} (default finetune,lora)",
    )
    p.add_argument(
        "--no-references",
        dest="references",
        action="store_const",
        const=False,
        default=argparse.SUPPRESS,
        help="skip the single-task references (no FT; only for families with a max return)",
    )
    add_config_args(g, _config_model(), skip=("strategies", "references"))
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its last completed task",
    )
    mode.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_threads_arg(p)
    p.set_defaults(handler=cmd_continual)

    p = add_report_parser(subparsers, "report", "continual", cmd_report)


def _config_model() -> Any:
    """ContinualConfig (pydantic only, no torch)."""
    from skillbank.continual.config import ContinualConfig

    return ContinualConfig


def config_from_args(args: argparse.Namespace) -> Any:
    """The ContinualConfig from defaults, --config, then the flags."""
    from skillbank.config import config_from_args as apply_flags
    from skillbank.config import load_toml
    from skillbank.continual.config import ContinualConfig

    cfg = ContinualConfig()
    if args.config is not None:
        cfg = load_toml(args.config, ContinualConfig, "continual", cfg)
    return apply_flags(args, cfg)


def cmd_continual(args: argparse.Namespace) -> None:
    cfg = config_from_args(args)
    from skillbank.continual.experiment import run_continual
    from skillbank.continual.summary import METRICS_HEADER, metrics_rows

    results = run_continual(cfg, args.out, args.resume, args.overwrite, args.quiet)
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"continual {results['config']['suite']} (mean [90% bootstrap])")
    for h in METRICS_HEADER:
        table.add_column(h, justify="right")
    for row in metrics_rows(results["summary"]):
        table.add_row(*row)
    Console().print(table)
    print(f"results: {args.out / 'results.json'}  report: {args.out / 'report.html'}")


def cmd_report(args: argparse.Namespace) -> None:
    from skillbank.continual.report import rebuild

    print(f"report written to {rebuild(args.dir)}")
