"""Command-line verbs of the multi-run service: trainer, orchestrator, convert-adapter,
runs, library add. Only argparse and pathlib are imported here; each handler imports what
it needs (torch included) after the arguments are parsed.

``add_parsers(subparsers)`` adds the verbs to a ``skillbank`` parser; each sets
``args.handler``. ``python -m skillbank.cli.service VERB ...`` runs them on their own.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

VERBS_HELP = """\
  trainer          the multi-run trainer: watches an outputs folder, one adapter slot per run
  orchestrator     collects rollouts for one run of an outputs folder (one process per run)
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


def _threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


def torchrun_command(args: argparse.Namespace) -> list[str]:
    """``skillbank trainer --nproc N ...`` -> the torchrun command it becomes (one machine)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd += [f"--nproc-per-node={args.nproc}", "-m", "skillbank.service.trainer"]
    cmd += ["--config", str(args.config)]
    cmd += [] if args.out is None else ["--out", str(args.out)]
    return cmd + ([] if args.threads is None else ["--threads", str(args.threads)])


def cmd_trainer(args: argparse.Namespace) -> None:
    import os
    import signal

    from skillbank.service.config import load_trainer_config

    if args.nproc < 1:
        raise ValueError(f"--nproc must be >= 1, got {args.nproc}")
    cfg = load_trainer_config(args.config, None if args.out is None else str(args.out))
    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:  # a thin launcher: become torchrun
        cmd = torchrun_command(args)
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(cmd[0], cmd)
    from skillbank.service.dist import init_from_env, shutdown
    from skillbank.service.replicas import follow
    from skillbank.service.trainer import Trainer

    if args.threads is not None:
        cfg.threads = args.threads
    _threads(cfg.threads)
    stop = {"now": False}

    def on_signal(signum: int, frame: object) -> None:
        stop["now"] = True  # rank 0 stops, then tells the other ranks

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    dist = init_from_env()
    try:
        trainer = Trainer(cfg, args.config, dist)
        if dist is None or dist.is_driver:
            trainer.serve(lambda: stop["now"])
        else:
            follow(trainer)
    finally:
        shutdown()


def cmd_consolidate(args: argparse.Namespace) -> None:
    from skillbank.service.consolidate import consolidate

    world, step = consolidate(args.checkpoint)
    if world == 1:
        print(f"{args.checkpoint}: already one rank file (trainer/rank_0.pt); nothing to merge")
    else:
        print(f"{args.checkpoint}: merged {world} rank files into trainer/rank_0.pt (step {step})")


def cmd_orchestrator(args: argparse.Namespace) -> None:
    import time

    from skillbank.service.config import load_run_config, read_trainer_info
    from skillbank.service.kinds import get_kind
    from skillbank.service.paths import OutPaths, run_from_dir

    _threads(args.threads)
    run = run_from_dir(args.run)
    info_path = OutPaths(run.out).trainer_json
    deadline = time.monotonic() + args.wait_trainer
    while not info_path.is_file():
        if time.monotonic() > deadline:
            raise FileNotFoundError(f"{info_path}: no trainer on {run.out} (waited)")
        time.sleep(0.2)
    while not run.orch_toml.is_file():
        if time.monotonic() > deadline:
            raise FileNotFoundError(f"{run.orch_toml}: file not found")
        time.sleep(0.2)
    info = read_trainer_info(info_path)
    cfg, specs = load_run_config(run.orch_toml, info)
    code = get_kind(cfg.kind).load_entry()(run, cfg, specs, info)
    if code:
        raise SystemExit(code)


def cmd_convert(args: argparse.Namespace) -> None:
    from skillbank.service.convert import convert_adapter

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
    from skillbank.service.status import show_runs

    if not Path(args.out).is_dir():
        raise FileNotFoundError(f"{args.out}: outputs folder not found")
    show_runs(args.out, watch=args.watch, interval=args.interval)


def cmd_library_add(args: argparse.Namespace) -> None:
    from skillbank.service.status import add_run_to_library

    name, step = add_run_to_library(args.library, args.run, args.name, args.overwrite)
    print(f"skill {name!r} added to {args.library} (checkpoint step {step})")


def _guard(handler: Callable[[argparse.Namespace], None]) -> Callable[[argparse.Namespace], None]:
    """Run ``handler``; a bad input (config, path, adapter, rollout, checkpoint: all
    ``ValueError``) or a missing or existing file prints one line and exits with code 2."""

    def run(args: argparse.Namespace) -> None:
        try:
            handler(args)
        except (ValueError, KeyError, FileNotFoundError, FileExistsError) as e:
            msg = e.args[0] if isinstance(e, KeyError) and e.args else e
            print(f"error: {msg}", file=sys.stderr)
            raise SystemExit(2) from None
        except RuntimeError as e:
            if type(e).__name__ != "TrainerLockedError":
                raise
            print(f"error: {e}", file=sys.stderr)
            raise SystemExit(2) from None

    return run


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
    p.add_argument("--config", type=Path, required=True, help="trainer.toml")
    p.add_argument("--out", type=Path, help="outputs folder (overrides output_dir)")
    p.add_argument("--threads", type=int, help="torch threads (default: the config's, 1)")
    p.add_argument(
        "--nproc",
        type=int,
        default=1,
        help="data-parallel trainer ranks on this machine (default 1): runs torchrun "
        "--standalone --nproc-per-node N -m skillbank.service.trainer with these arguments "
        "(several machines: run torchrun yourself, docs/scale.md)",
    )
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
        help="collect rollouts for one run (start one per run folder)",
        description="Read RUN/control/orch.toml, wait for the trainer's broadcasts, collect "
        "PPO rollouts and write them to RUN/rollouts/. Exits when the run is done, evicted, "
        "rejected or deleted.",
        epilog=ORCH_EPILOG,
        formatter_class=raw,
    )
    p.add_argument("--run", type=Path, required=True, help="the run folder OUT/run_<name>")
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
