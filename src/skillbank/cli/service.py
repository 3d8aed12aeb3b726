"""Command-line verbs of the multi-run service: trainer, orchestrator, convert-adapter,
runs, library add. Only argparse and pathlib are imported here; each handler imports what
it needs (torch included) after the arguments are parsed.

``add_parsers(subparsers)`` adds the verbs to a ``skillbank`` parser; each sets
``args.handler``, wrapped by ``skillbank.service.guard.guard`` (a ``SkillbankError`` or a
user's file error prints one line, exit code 2). The trainer's own arguments and runner
are ``skillbank.service.trainer.main`` (also its ``python -m`` entry).
``python -m skillbank.cli.service VERB ...`` runs them on their own.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from skillbank.service.guard import guard as _guard
from skillbank.service.trainer.main import add_trainer_args, run_trainer

VERBS_HELP = """\
  trainer          the multi-run trainer: watches an outputs folder, one adapter slot per run
  orchestrator     collects rollouts for runs of an outputs folder (--run R ... or --all OUT)
  convert-adapter  write a PEFT LoRA adapter as a run's step-0 checkpoint (warm start)
  consolidate      merge a multi-rank checkpoint's rank files (resume on another world size)
  runs             table of the runs of an outputs folder (--watch: live)
  library add      add a run's newest stable adapter to a library as a skill
"""

TRAINER_EPILOG = """\
trainer.toml (top-level fields; see docs/service.md for all):
  output_dir = "out"            # or --out
  library = "lib"               # share this library's base ... or:
  base_task = "cartpole"        # ... a fresh base for this task (base_hidden, base_seed)
  max_concurrent_runs = 4       # slots
  rank_capacity = 16
  max_async_level = 1
  checkpoint_interval = 10
  [ppo]                         # update_epochs, num_minibatches, clip_coef, ent_coef, ...
"""

ORCH_EPILOG = """\
OUT/run_<name>/control/orch.toml (flat fields):
  task = "cartpole/long-pole"   # or suite = "cartpole-physics"
  max_steps = 100               # policy updates
  envs_per_task = 8
  rollout_steps = 128
  learning_rate = 0.002
  rank = 8                      # alpha = 2 * rank unless given
  env_workers = 0               # >0: step the environments in that many processes
"""


def cmd_trainer(args: argparse.Namespace) -> None:
    run_trainer(args)


def cmd_consolidate(args: argparse.Namespace) -> None:
    from skillbank.service.tools.consolidate import consolidate

    world, step = consolidate(args.checkpoint)
    if world == 1:
        print(f"{args.checkpoint}: already one rank file (trainer/rank_0.pt); nothing to merge")
    else:
        print(f"{args.checkpoint}: merged {world} rank files into trainer/rank_0.pt (step {step})")


def cmd_orchestrator(args: argparse.Namespace) -> None:
    if bool(args.run) == (args.all is not None):
        from skillbank.errors import ConfigError

        raise ConfigError("orchestrator: give --run RUN (one or more) or --all OUT, not both")
    import torch

    torch.set_num_threads(args.threads)
    if args.all is None and len(args.run) == 1:
        from skillbank.service.orchestrator.main import run_orchestrator

        code = run_orchestrator(args.run[0], args.wait_trainer)
    else:
        from skillbank.service.orchestrator.multi import run_multi

        code = run_multi(args.run or [], args.all, args.wait_trainer)
    if code:
        raise SystemExit(code)


def cmd_convert(args: argparse.Namespace) -> None:
    from skillbank.service.tools.convert import convert_adapter

    folder = convert_adapter(
        args.adapter,
        args.run,
        step=args.step,
        obs_norm=args.obs_norm,
        library=args.library,
        capacity=args.capacity,
        overwrite=args.overwrite,
    )
    print(f"wrote {folder} (STABLE); write control/orch.toml to start the run from it")


def cmd_runs(args: argparse.Namespace) -> None:
    from skillbank.service.tools.status import show_runs

    if not Path(args.out).is_dir():
        raise FileNotFoundError(f"{args.out}: outputs folder not found")
    show_runs(args.out, watch=args.watch, interval=args.interval)


def cmd_library_add(args: argparse.Namespace) -> None:
    from skillbank.service.tools.library_add import add_run_to_library

    name, step = add_run_to_library(args.library, args.run, args.name, args.overwrite)
    print(f"skill {name!r} added to {args.library} (checkpoint step {step})")


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Add the service verbs to ``subparsers``; each sets ``args.handler``."""
    raw = argparse.RawDescriptionHelpFormatter
    p = subparsers.add_parser(
        "trainer",
        help="multi-run trainer over an outputs folder (one adapter slot per run)",
        description="Watch OUT for run_* folders, give each a slot, and train every run "
        "that has a rollout ready in one batched PPO update. Stops on SIGTERM/SIGINT.",
        epilog=TRAINER_EPILOG,
        formatter_class=raw,
    )
    add_trainer_args(p)
    p.set_defaults(handler=_guard(cmd_trainer))

    p = subparsers.add_parser(
        "consolidate",
        help="merge a multi-rank checkpoint's rank files (resume on another world size)",
        description="A trainer on N ranks writes one rank file per rank "
        "(CHECKPOINT/trainer/rank_<k>.pt) and resumes only on N ranks. This merges them "
        "into CHECKPOINT/trainer/rank_0.pt (atomic replace; STABLE and weight/ untouched), "
        "which a trainer of any world size resumes from.",
    )
    p.add_argument("checkpoint", type=Path, help="OUT/run_<name>/checkpoints/step_<N>")
    p.set_defaults(handler=_guard(cmd_consolidate))

    p = subparsers.add_parser(
        "orchestrator",
        help="collect rollouts for runs (--run R [--run R2 ...] or --all OUT)",
        description="Read RUN/control/orch.toml, wait for the trainer's broadcasts, collect "
        "PPO rollouts and write them to RUN/rollouts/. A run ends when it is done, evicted, "
        "rejected or deleted. Several --run, or --all OUT (every run folder of OUT, joining "
        "and leaving as folders come and go; runs until SIGTERM/Ctrl-C): ONE process serves "
        "them all with one batched act per env step; one run's error ends that run only. "
        "Runs of kind lm are served one process each (a single --run).",
        epilog=ORCH_EPILOG,
        formatter_class=raw,
    )
    p.add_argument(
        "--run",
        type=Path,
        action="append",
        default=[],
        help="a run folder OUT/run_<name> (repeat to serve several runs of one OUT)",
    )
    p.add_argument("--all", type=Path, metavar="OUT", help="serve every run of outputs folder OUT")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument(
        "--wait-trainer",
        type=float,
        default=600.0,
        help="seconds to wait for OUT/trainer.json and orch.toml (default 600)",
    )
    p.set_defaults(handler=_guard(cmd_orchestrator))

    p = subparsers.add_parser(
        "convert-adapter",
        help="write a PEFT LoRA adapter as a run's step-0 checkpoint (warm start)",
        description="Check ADAPTER_DIR against the trainer's base and write "
        "RUN/checkpoints/step_<N>/ (trainer/rank_0.pt, weight/, STABLE). Then write "
        "RUN/control/orch.toml: the trainer resumes the run from this checkpoint.",
    )
    p.add_argument("adapter", type=Path, help="PEFT adapter folder (adapter_config.json, ...)")
    p.add_argument("run", type=Path, help="the run folder OUT/run_<name> (created if missing)")
    p.add_argument("--step", type=int, default=0, help="checkpoint step (default 0)")
    p.add_argument("--obs-norm", type=Path, help="JSON {mean, var, count} of the adapter's task")
    p.add_argument("--library", type=Path, help="base library, if OUT/trainer.json is missing")
    p.add_argument("--capacity", type=int, default=16, help="rank capacity with --library")
    p.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint")
    p.set_defaults(handler=_guard(cmd_convert))

    p = subparsers.add_parser(
        "runs",
        help="table of the runs of an outputs folder",
        description="One row per run: slot, step (newest stable broadcast), latest return, "
        "state (waiting, training, done, evicted, error).",
    )
    p.add_argument("out", type=Path, help="outputs folder")
    p.add_argument("--watch", action="store_true", help="refresh until Ctrl-C")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    p.set_defaults(handler=_guard(cmd_runs))

    p = subparsers.add_parser("library", help="library tools: add a service run as a skill")
    lib_sub = p.add_subparsers(dest="library_verb", metavar="ACTION", required=True)
    q = lib_sub.add_parser(
        "add",
        help="add a run's newest stable adapter to a library",
        description="Add the adapter of RUN's newest STABLE checkpoint, with its observation "
        "statistics and task, to LIB as a skill (LIB is created from the run's base if "
        "missing).",
    )
    q.add_argument("library", type=Path, help="library folder")
    q.add_argument("run", type=Path, help="the run folder OUT/run_<name>")
    q.add_argument("--name", help="skill name (default: the run's name)")
    q.add_argument("--overwrite", action="store_true", help="replace a skill of that name")
    q.set_defaults(handler=_guard(cmd_library_add))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m skillbank.cli.service",
        description="skillbank multi-run service verbs:\n" + VERBS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return 0
    try:
        args.handler(args)
    except SystemExit as e:
        return int(e.code or 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
