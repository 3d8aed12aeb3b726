"""``skillbank`` command line. Arguments are parsed before torch is imported."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from skillbank.cli.argtypes import add_threads_arg, set_threads
from skillbank.errors import ConfigError, SkillbankError

if TYPE_CHECKING:
    from skillbank.algos.ppo import PPOConfig
    from skillbank.tasks import TaskSpec

DESCRIPTION = """\
skillbank: policy libraries for reinforcement learning.
One frozen base network, one small LoRA adapter ("skill") per task, trained with PPO
(control) or SFT and GRPO (small language models); many skills run in one batched forward.

verbs:
  demo           train a CartPole base, LoRA skills and full fine-tunes for the
                 cartpole-physics suite, evaluate, write report.html (about 3-4 min)
  train-base     train a base policy on one task with PPO and create a library
  train-skills   train one LoRA skill per task of a suite, all concurrently
                 (--full-finetune: full copies instead, for comparison)
  eval           table of returns: the base and every skill on every task
  suites         list the named task suites and task families
  bench          micro-benchmarks (bench lora: multi-LoRA forward vs peers)
  continual      learn a suite's tasks in sequence with strategies (finetune, ewc, lora,
                 ...); Continual World metrics, results.json and report.html
  report         rebuild a continual run's report.html from its results.json

multi-run service (docs/service.md):
  trainer          multi-run trainer: watches an outputs folder, one adapter slot per run
  orchestrator     collects rollouts for one run of an outputs folder
  convert-adapter  write a PEFT adapter as a run's step-0 checkpoint (warm start)
  consolidate      merge a multi-rank (--nproc N) checkpoint's rank files into one
  runs             table of the runs of an outputs folder (--watch: live)
  library add      add a run's newest stable adapter to a library as a skill

language models (docs/lm.md):
  lm               any local Hugging Face causal LM (or the packaged tiny-lm), your JSONL /
                   Parquet data and reward functions, LoRA skills by SFT and GRPO
                   (lm pretrain | new-library | sft | rl | eval); runs of kind "lm" in the service
  serve            Tinker-compatible training API: tenants = LoRA slots, one fused
                   forward/backward for all tenants (docs/serve.md)

interference between tasks on shared parameters (docs/interference.md):
  interference         train domains (text) or tasks (control) in order on shared weights;
                       damage, its Taylor predictions, refresh and sparse rollback
  interference-report  rebuild an interference run's report.html from its results.json
"""


def _add_ppo_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("PPO (defaults per action kind; see --config)")
    g.add_argument("--steps", type=int, help="environment steps per task")
    g.add_argument("--envs-per-task", type=int, help="parallel environments per task")
    g.add_argument("--lr", type=float, help="Adam learning rate")
    g.add_argument("--config", type=Path, help="TOML file with a [ppo] table of PPOConfig fields")
    g.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    add_threads_arg(g)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="skillbank", description=DESCRIPTION, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = parser.add_subparsers(dest="verb", metavar="VERB")

    p = sub.add_parser("demo", help="the end-to-end CartPole demo (about 3-4 minutes on 2 cores)")
    p.add_argument("--out", type=Path, default=Path("skillbank-demo"), help="output folder")
    p.add_argument("--steps", type=int, help="steps per task for skills (default 120000)")
    p.add_argument("--base-steps", type=int, help="steps for the base (default 100000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    p = sub.add_parser("train-base", help="train a base policy on one task; creates a library")
    p.add_argument("--task", required=True, help="task: 'cartpole', 'cartpole:force_mag=5', ...")
    p.add_argument("--out", type=Path, required=True, help="library folder to create")
    p.add_argument("--hidden", default="256,256", help="hidden widths (default 256,256)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing library")
    p.add_argument(
        "--eval-every",
        type=int,
        help="evaluate every N updates and keep the best weights (default: 20 evaluations "
        "per run; 0 = keep the last weights)",
    )
    _add_ppo_args(p)

    p = sub.add_parser("train-skills", help="one LoRA skill per task of a suite, concurrently")
    p.add_argument("library", type=Path, help="library folder (from train-base)")
    p.add_argument("--suite", help="named suite (see 'skillbank suites')")
    p.add_argument("--task", action="append", default=[], help="a task (repeatable)")
    p.add_argument("--rank", type=int, default=8, help="LoRA rank (default 8)")
    p.add_argument("--alpha", type=float, help="LoRA alpha (default 2 x rank)")
    p.add_argument("--full-finetune", action="store_true", help="train full copies instead")
    p.add_argument("--out", type=Path, help="folder for --full-finetune (default LIB/full)")
    _add_ppo_args(p)

    p = sub.add_parser("eval", help="returns of the base and each skill on each task")
    p.add_argument("library", type=Path)
    p.add_argument("--suite", help="named suite")
    p.add_argument("--task", action="append", default=[], help="a task (repeatable)")
    p.add_argument("--episodes", type=int, default=20, help="episodes per pair (default 20)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    sub.add_parser("suites", help="list suites and task families")

    p = sub.add_parser("bench", help="benchmarks that print ratios against peers")
    p.add_argument("which", choices=["lora"], help="lora: multi-LoRA forward benchmark")
    add_threads_arg(p, default=2, why="the setting the benchmark's figures are measured with")
    p.add_argument("--quick", action="store_true", help="fewer repeats")

    from skillbank.cli.continual import add_parsers as add_continual_parsers
    from skillbank.cli.service import add_parsers as add_service_parsers

    add_continual_parsers(sub)
    add_service_parsers(sub)
    from skillbank.cli.lm import add_parsers as add_lm_parsers

    add_lm_parsers(sub)
    from skillbank.cli.interference import add_parsers as add_interference_parsers

    add_interference_parsers(sub)
    from skillbank.cli.serve import add_parser as add_serve_parser

    add_serve_parser(sub)
    return parser


def _specs(args: argparse.Namespace) -> list:
    from skillbank.recipes.compat import user_tasks

    specs = user_tasks(args.suite, args.task)
    if not specs:
        raise ConfigError("command line: give --suite NAME or at least one --task")
    return specs


def _ppo(args: argparse.Namespace, spec: TaskSpec, what: str) -> PPOConfig:
    from skillbank.algos.ppo import PPOConfig
    from skillbank.algos.ppo_defaults import config_with, default_ppo
    from skillbank.config import load_toml

    cfg = default_ppo(spec, what)
    if args.config is not None:
        cfg = load_toml(args.config, PPOConfig, "ppo", cfg)
    return config_with(
        cfg, total_steps=args.steps, envs_per_task=args.envs_per_task, learning_rate=args.lr
    )


def cmd_demo(args: argparse.Namespace) -> None:
    from skillbank.recipes.demo import run_demo

    run_demo(
        args.out, steps=args.steps, base_steps=args.base_steps, seed=args.seed, quiet=args.quiet
    )


def cmd_train_base(args: argparse.Namespace) -> None:
    from skillbank.recipes.compat import user_tasks
    from skillbank.recipes.train import train_base

    (spec,) = user_tasks(None, [args.task])
    hidden = [int(h) for h in args.hidden.split(",") if h]
    lib, result = train_base(
        spec,
        args.out,
        _ppo(args, spec, "base"),
        hidden,
        args.seed,
        args.quiet,
        args.overwrite,
        eval_every=args.eval_every,
    )
    ret = result.curves[-1]["episodic_return"][0]
    print(f"base trained on {spec.name}: recent return {ret:.1f}; library at {lib.path}")


def cmd_train_skills(args: argparse.Namespace) -> None:
    from skillbank.library.core import PolicyLibrary
    from skillbank.recipes.train import train_full_copies, train_lora_skills

    lib = PolicyLibrary.load(args.library)
    specs = _specs(args)
    cfg = _ppo(args, specs[0], "full" if args.full_finetune else "lora")
    if args.full_finetune:
        out = args.out or (args.library / "full")
        _, result = train_full_copies(lib, specs, cfg, out, args.seed, args.quiet)
        for spec, ret in zip(specs, result.curves[-1]["episodic_return"]):
            print(f"{spec.name:40s} full fine-tune  recent return {ret:8.1f}")
        print(f"full copies written to {out}")
        return
    alpha = (args.alpha / args.rank) if args.alpha else 2.0
    summaries, _, _ = train_lora_skills(
        lib, specs, cfg, [args.rank] * len(specs), alpha, args.seed, quiet=args.quiet
    )
    for name, meta in summaries.items():
        print(f"{name:40s} rank {args.rank}  recent return {meta['train']['final_return']:8.1f}")
    print(f"{len(summaries)} skills added to {lib.path}")


def cmd_eval(args: argparse.Namespace) -> None:
    import json

    from skillbank.library.core import PolicyLibrary
    from skillbank.recipes.evaluate import evaluate_library
    from skillbank.reporting.html import eval_table

    lib = PolicyLibrary.load(args.library, strict=False)
    for name, why in lib.load_errors.items():
        print(f"warning: skill {name!r} skipped: {why}", file=sys.stderr)
    table = evaluate_library(lib, _specs(args), args.episodes, args.seed)
    if args.json:
        print(json.dumps(table, indent=2))
    else:
        from rich.console import Console

        Console().print(eval_table(table))


def cmd_suites(args: argparse.Namespace) -> None:
    from skillbank.tasks import get_suite, list_families, list_suites

    for name in list_suites():
        print(f"{name}:")
        for spec in get_suite(name):
            params = getattr(spec, "kwargs", None) or spec.params
            print(f"  {spec.name:32s} {spec.family} {params}")
    print("families:", ", ".join(list_families()))


def cmd_bench(args: argparse.Namespace) -> None:
    from skillbank.recipes.bench_lora import main as bench_main

    bench_main(threads=args.threads, quick=args.quick)


COMMANDS: dict[str, Callable[[argparse.Namespace], None]] = {
    "demo": cmd_demo,
    "train-base": cmd_train_base,
    "train-skills": cmd_train_skills,
    "eval": cmd_eval,
    "suites": cmd_suites,
    "bench": cmd_bench,
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verb is None:
        parser.print_help()
        return 0
    if getattr(args, "threads", None) and args.verb != "bench":
        set_threads(args)
    handler = getattr(args, "handler", None) or COMMANDS[args.verb]
    try:
        handler(args)
    except SystemExit as e:
        return int(e.code or 0)
    except SkillbankError as e:  # a user's mistake: one line; anything else is a bug
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
