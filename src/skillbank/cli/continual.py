"""The ``continual`` and ``report`` verbs. Only argparse and pathlib at import time:
torch and the rest load inside the handlers."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from skillbank.cli.argtypes import int_list, name_list

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
    p = subparsers.add_parser(
        "continual",
        help="learn a suite's tasks in sequence; forgetting and transfer metrics + report",
        description=CONTINUAL_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--suite", help="named task suite (see 'skillbank suites'; default cartpole-physics)"
    )
    p.add_argument(
        "--strategy",
        type=name_list,
        help=f"comma-separated strategies: {','.join(STRATEGY_NAMES)} (default finetune,lora)",
    )
    p.add_argument("--steps-per-task", type=int, help="env steps per task (default 200000)")
    p.add_argument("--seeds", type=int, help="number of seeds (default 3)")
    p.add_argument("--first-seed", type=int, help="first seed (default 0)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--eval-every", type=int, help="evaluate every N env steps (default 10240)")
    p.add_argument(
        "--eval-episodes", type=int, help="greedy episodes per task and evaluation (default 10)"
    )
    p.add_argument(
        "--tasks",
        type=int_list,
        help="indices of the suite's tasks to train, in order (e.g. 0,3,2,6; default all)",
    )
    p.add_argument(
        "--config",
        type=Path,
        help="TOML file with a [continual] table of ContinualConfig fields "
        "(rank, penalty weights, buffer size, ...); flags override it",
    )
    p.add_argument(
        "--no-references",
        action="store_true",
        help="skip the single-task references (no FT; only for families with a max return)",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its last completed task",
    )
    mode.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.set_defaults(handler=cmd_continual)

    p = subparsers.add_parser(
        "report",
        help="rebuild DIR/report.html from DIR/results.json (of 'skillbank continual')",
        description="Rebuild DIR/report.html from DIR/results.json ('skillbank continual').",
    )
    p.add_argument("dir", type=Path, help="output folder of a continual run")
    p.set_defaults(handler=cmd_report)


def config_from_args(args: argparse.Namespace) -> object:
    """The ContinualConfig from defaults, --config, then the flags."""
    from dataclasses import replace

    from skillbank.continual.config import ContinualConfig, load_toml

    cfg = ContinualConfig()
    if args.config is not None:
        cfg = load_toml(args.config, cfg)
    flags = {
        "suite": args.suite,
        "strategies": args.strategy,
        "steps_per_task": args.steps_per_task,
        "seeds": args.seeds,
        "first_seed": args.first_seed,
        "eval_every": args.eval_every,
        "eval_episodes": args.eval_episodes,
        "tasks": args.tasks,
    }
    if args.no_references:
        flags["references"] = False
    return replace(cfg, **{k: v for k, v in flags.items() if v is not None})


def cmd_continual(args: argparse.Namespace) -> None:
    import torch

    from skillbank.continual.experiment import run_continual
    from skillbank.continual.summary import METRICS_HEADER, metrics_rows

    torch.set_num_threads(args.threads)
    cfg = config_from_args(args)
    results = run_continual(cfg, args.out, args.resume, args.overwrite, args.quiet)  # type: ignore[arg-type]
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
