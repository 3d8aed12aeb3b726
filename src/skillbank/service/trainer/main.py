"""The trainer's command line: ``skillbank trainer`` and ``python -m
skillbank.service.trainer`` (the torchrun target) both parse with ``add_trainer_args`` and
run ``run_trainer``. Only argparse and pathlib are imported at module level: arguments are
parsed before torch is loaded.

``--nproc N`` (N > 1) on one machine runs torchrun in this process, so a stop by SIGTERM
or Ctrl-C looks clean: every rank stops, then one line and exit code 0 (torchrun alone
ends a signalled run with a traceback and a non-zero code).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from skillbank.config import add_config_args, config_from_args
from skillbank.service.guard import guard
from skillbank.service.trainer.config import TrainerConfig

MODULE = "skillbank.service.trainer"


def add_trainer_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, required=True, help="trainer.toml")
    p.add_argument("--out", type=Path, help="outputs folder (overrides output_dir)")
    add_config_args(p, TrainerConfig, only=["threads"])  # overrides trainer.toml's
    p.add_argument(
        "--nproc",
        type=int,
        default=1,
        help=f"data-parallel trainer ranks on this machine (default 1): runs torchrun "
        f"--standalone --nproc-per-node N -m {MODULE} with these arguments "
        "(several machines: run torchrun yourself, docs/scale.md)",
    )


def trainer_args(args: argparse.Namespace) -> list[str]:
    """The arguments a rank gets (``--nproc`` left out)."""
    out = ["--config", str(args.config)]
    out += [] if args.out is None else ["--out", str(args.out)]
    threads = getattr(args, "threads", None)  # only when given (see add_config_args)
    return out + ([] if threads is None else ["--threads", str(threads)])


def torchrun_command(args: argparse.Namespace) -> list[str]:
    """``skillbank trainer --nproc N ...`` -> the torchrun command line it stands for."""
    return [sys.executable, "-m", "torch.distributed.run", *torchrun_args(args)]


def torchrun_args(args: argparse.Namespace) -> list[str]:
    return [
        "--standalone",
        f"--nproc-per-node={args.nproc}",
        "-m",
        MODULE,
        *trainer_args(args),
    ]


def launch_ranks(args: argparse.Namespace) -> None:
    """Run ``args.nproc`` ranks with torchrun in this process; a stop by a signal is a
    clean stop (one line, no traceback, exit 0). A rank that fails has printed why (a
    user's error: one line); this adds one line and exits with that rank's code."""
    import logging

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    logging.getLogger("torch.distributed.elastic").setLevel(logging.ERROR)
    try:
        run(get_args_parser().parse_args(torchrun_args(args)))
    except SignalException as e:
        name = signal.Signals(e.sigval).name
        print(f"[trainer] stopped by {name}: every rank has stopped", file=sys.stderr)
    except KeyboardInterrupt:
        print("[trainer] stopped by SIGINT: every rank has stopped", file=sys.stderr)
    except ChildFailedError as e:
        rank, failure = e.get_first_failure()
        print(f"error: trainer rank {rank} exited with code {failure.exitcode}", file=sys.stderr)
        raise SystemExit(failure.exitcode or 1) from None


def run_trainer(args: argparse.Namespace) -> None:
    """Run the trainer (this process is one rank when torchrun started it)."""
    from skillbank.config import ConfigError
    from skillbank.service.trainer.config import load_trainer_config

    if args.nproc < 1:
        raise ConfigError(f"command line: --nproc must be >= 1, got {args.nproc}")
    cfg = load_trainer_config(args.config, None if args.out is None else str(args.out))
    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:  # the launcher of the ranks
        launch_ranks(args)
        return
    cfg = config_from_args(args, cfg)  # --threads
    import torch

    from skillbank.service.trainer.dist import init_from_env, shutdown
    from skillbank.service.trainer.loop import Trainer
    from skillbank.service.trainer.replicas import follow

    torch.set_num_threads(cfg.threads)
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
            follow(trainer.ops)
    finally:
        shutdown()


def main(argv: list[str] | None = None) -> int:
    """``python -m skillbank.service.trainer ARGS``: parse, run, return the exit code."""
    parser = argparse.ArgumentParser(
        prog=f"python -m {MODULE}", description="The multi-run trainer (docs/service.md)."
    )
    add_trainer_args(parser)
    args = parser.parse_args(argv)
    try:
        guard(run_trainer)(args)
    except SystemExit as e:
        return int(e.code or 0)
    return 0
