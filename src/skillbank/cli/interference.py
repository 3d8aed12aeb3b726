"""The ``interference`` and ``interference-report`` verbs. Only argparse and pathlib at
import time: torch and the rest load inside the handlers."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from skillbank.cli.argtypes import float_list, int_list, name_list

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
    p = subparsers.add_parser(
        "interference",
        help="cross-domain interference on shared parameters: measure, predict, repair",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
    tr = p.add_argument_group("training")
    tr.add_argument(
        "--steps",
        type=int,
        help="steps per domain (control: env steps, default 40960; text: GRPO steps)",
    )
    tr.add_argument(
        "--refresh-steps", type=int, help="refresh steps on the damaged domain (default steps/8)"
    )
    tr.add_argument("--lr", type=float, help="learning rate (default: the project's default)")
    tr.add_argument(
        "--rank", type=int, default=8, help="LoRA rank in shared-adapter mode (default 8)"
    )
    tr.add_argument("--hidden", default="64,64", help="control: hidden widths (default 64,64)")
    tr.add_argument(
        "--base-steps",
        type=int,
        default=50_000,
        help="control shared-adapter: env steps for the base (default 50000)",
    )
    tr.add_argument(
        "--eval-episodes",
        type=int,
        default=10,
        help="control: greedy episodes per score (default 10)",
    )
    tr.add_argument(
        "--loss-samples",
        type=int,
        help="states (control, default 1024) / reference answers (text, default 64) per loss",
    )
    tr.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    tr.add_argument(
        "--base", type=Path, help="text: LM base folder (default: the packaged tiny LM)"
    )
    tr.add_argument(
        "--warmup-sft",
        type=int,
        default=400,
        help="text: joint SFT steps on all domains before the sequence (default 400)",
    )
    tr.add_argument("--eval-n", type=int, default=100, help="text: test prompts per score")
    ms = p.add_argument_group("measures and repairs")
    ms.add_argument(
        "--repair-domain", help="domain to repair (default: the one whose score dropped most)"
    )
    ms.add_argument(
        "--rollback-fractions", type=float_list, help="fractions p to sweep (default 0.001,...,0.2)"
    )
    ms.add_argument(
        "--rollback-scores",
        type=name_list,
        help="damage scores to sweep: curvature, taylor, conflict, magnitude "
        "(default curvature,conflict)",
    )
    ms.add_argument("--random-seeds", type=int, help="random rollbacks per fraction (default 3)")
    ms.add_argument(
        "--krylov-steps", type=int, help="Lanczos steps from B's update, k max (default 16)"
    )
    ms.add_argument("--eigen-k", type=int, help="top eigenpairs of H_A (default 8)")
    p.add_argument(
        "--overwrite", action="store_true", help="replace an earlier run in --out (else refused)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.set_defaults(handler=cmd_interference)

    p = subparsers.add_parser(
        "interference-report",
        help="rebuild DIR/report.html from DIR/results.json (of 'skillbank interference')",
        description="Rebuild DIR/report.html from DIR/results.json ('skillbank interference').",
    )
    p.add_argument("dir", type=Path, help="output folder of an interference run")
    p.add_argument(
        "--markdown", action="store_true", help="also print the tables as Markdown (for docs)"
    )
    p.set_defaults(handler=cmd_report)


def config_from_args(args: argparse.Namespace, default_steps: int) -> Any:
    from skillbank.interference.config import InterferenceConfig

    steps = args.steps or default_steps
    flags = {
        "repair_domain": args.repair_domain,
        "rollback_fractions": args.rollback_fractions,
        "rollback_scores": args.rollback_scores,
        "random_seeds": args.random_seeds,
        "krylov_steps": args.krylov_steps,
        "eigen_k": args.eigen_k,
    }
    refresh = args.refresh_steps if args.refresh_steps is not None else max(1, steps // 8)
    cfg = InterferenceConfig(steps=steps, refresh_steps=refresh, seed=args.seed)
    for k, v in flags.items():
        if v is not None:
            setattr(cfg, k, v)
    cfg.__post_init__()  # validate the flags too
    return cfg


def control_from_args(args: argparse.Namespace) -> Any:
    from skillbank.interference.control import ControlOptions, control_setting
    from skillbank.tasks import get_suite

    suite = list(get_suite(args.suite))
    idx = args.tasks if args.tasks else list(range(len(suite)))
    bad = [i for i in idx if not 0 <= i < len(suite)]
    if bad:
        raise ValueError(
            f"--tasks: indices {bad} out of range for suite {args.suite!r} ({len(suite)} tasks)"
        )
    opts = ControlOptions(
        specs=[suite[i] for i in idx],
        mode=args.mode,
        hidden=[int(h) for h in args.hidden.split(",") if h],
        rank=args.rank,
        base_steps=args.base_steps,
        learning_rate=args.lr,
        loss_states=args.loss_samples or 1024,
        eval_episodes=args.eval_episodes,
        seed=args.seed,
    )
    return control_setting(opts)


def text_from_args(args: argparse.Namespace) -> Any:
    from skillbank.interference.text import TextOptions, text_setting

    opts = TextOptions(
        domains=args.domains,
        mode=args.mode,
        rank=args.rank,
        learning_rate=args.lr,
        base=args.base,
        warmup_sft=args.warmup_sft,
        loss_samples=args.loss_samples or 64,
        eval_n=args.eval_n,
        seed=args.seed,
    )
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
    from skillbank.tasks import get_suite

    suite = list(get_suite(args.suite))
    return [suite[i].name for i in (args.tasks or range(len(suite))) if 0 <= i < len(suite)]


def cmd_interference(args: argparse.Namespace) -> None:
    if (args.suite is None) == (args.domains is None):
        raise ValueError("give either --domains (text) or --suite (control), not both")
    kind = "control" if args.suite else "text"
    if args.mode is None:
        args.mode = "full" if kind == "control" else "shared-adapter"
    if (args.out / "results.json").exists() and not args.overwrite:
        raise ValueError(f"{args.out / 'results.json'} exists: give --overwrite or another --out")
    if args.repair_domain is not None:  # checked before any training
        names = domain_names(args)
        if args.repair_domain not in names[:-1]:
            raise ValueError(f"--repair-domain {args.repair_domain!r} is not one of {names[:-1]}")
    import torch

    torch.set_num_threads(args.threads)
    build, default_steps = SETTINGS[kind]
    cfg = config_from_args(args, default_steps)
    setting = build(args)
    if len(setting.domains) < 2:
        raise ValueError("interference needs at least two domains")
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
