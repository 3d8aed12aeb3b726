"""Multi-run service: N CartPole runs on ONE trainer (+ ONE orchestrator) vs N separate
trainer+orchestrator pairs (same configs, same steps). Wall time is measured from the first
process start until every run's final checkpoint is STABLE (process start-up included).

    python bench/multi_run.py                       # 4 runs x 30 updates, CleanRL-sized rollouts
    python bench/multi_run.py --envs 32 --rollout-steps 32   # same batch, wider rollouts

Three arms: one trainer + ONE orchestrator process serving every run (one batched act per
env step), one trainer + one orchestrator per run, and N separate trainer+orchestrator
pairs (the peer). Prints one line per arm: wall time, CPU, the mean recent return after
the same steps (equal learning) and the wall ratio to the separate pairs (targets: ONE
orchestrator <= 0.45x at 4 runs, <= 0.3x at 8).

    python bench/multi_run.py --runs 8 --arms multi
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TASKS = ["cartpole/default", "cartpole/long-pole", "cartpole/heavy-pole", "cartpole/reversed"]


def _start(args: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    with open(log, "ab") as f:
        cmd = [sys.executable, "-m", "skillbank.cli.service", *args]
        return subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)


def _orch_toml(args: argparse.Namespace, task: str) -> str:
    return (
        f'task = "{task}"\nmax_steps = {args.steps}\nenvs_per_task = {args.envs}\n'
        f"rollout_steps = {args.rollout_steps}\nlearning_rate = 0.003\n"
    )


def _trainer_toml(lib: Path, out: Path, slots: int, args: argparse.Namespace) -> str:
    return (
        f'output_dir = "{out}"\nlibrary = "{lib}"\nmax_concurrent_runs = {slots}\n'
        f"checkpoint_interval = {args.steps}\nmax_async_level = {args.async_level}\n"
        f"batch_window_s = {args.batch_window}\n[ppo]\nupdate_epochs = {args.update_epochs}\n"
    )


def run_setup(
    root: Path, lib: Path, args: argparse.Namespace, separate: bool, one_orch: bool = False
) -> tuple[float, float, float, float]:
    """(wall seconds until every run has its final STABLE checkpoint, seconds of that after
    every run had its first broadcast: the training phase, CPU seconds of all processes,
    mean over runs of the recent return of the last rollout). ``one_orch``: ONE
    orchestrator process serves every run (``orchestrator --run A --run B ...``)."""
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    root.mkdir(parents=True)
    n = args.runs
    outs = [root / f"out{i}" for i in range(n)] if separate else [root / "out"] * n
    runs = []
    for i in range(n):
        run = outs[i] / f"run_r{i}"
        (run / "control").mkdir(parents=True)
        (run / "control" / "orch.toml").write_text(_orch_toml(args, TASKS[i % len(TASKS)]))
        runs.append(run)
    procs: list[subprocess.Popen] = []
    start = time.perf_counter()
    try:
        for i, out in enumerate(sorted(set(outs))):
            toml = root / f"trainer{i}.toml"
            toml.write_text(_trainer_toml(lib, out, 1 if separate else n, args))
            procs.append(_start(["trainer", "--config", str(toml)], root / f"trainer{i}.log"))
        if one_orch:
            many = [a for run in runs for a in ("--run", str(run))]
            procs.append(_start(["orchestrator", *many], root / "orch.log"))
        for i, run in enumerate([] if one_orch else runs):
            procs.append(_start(["orchestrator", "--run", str(run)], root / f"orch{i}.log"))
        first = [run / "broadcasts" / "step_0" / "STABLE" for run in runs]
        final = [run / "checkpoints" / f"step_{args.steps}" / "STABLE" for run in runs]
        ready = None
        while not all(f.is_file() for f in final):
            for p in procs:
                if p.poll() not in (None, 0):
                    raise RuntimeError(f"{p.args!r} failed; logs in {root}")
            if ready is None and all(f.is_file() for f in first):
                ready = time.perf_counter()
            time.sleep(0.01)
        end = time.perf_counter()
    finally:
        for p in procs:  # stopped by their own pids
            if p.poll() is None:
                os.kill(p.pid, signal.SIGTERM)
        for p in procs:
            p.wait()
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    rets = []
    for run in runs:
        lines = (run / "logs" / "orchestrator.jsonl").read_text().splitlines()
        last = json.loads(lines[-1]).get("recent_return") if lines else None
        rets.append(float("nan") if last is None else float(last))
    return end - start, end - (ready or start), cpu, sum(rets) / len(rets)


def make_library(path: Path, hidden: list[int]) -> None:
    import torch

    from skillbank.library.core import PolicyLibrary
    from skillbank.models import ActorCritic, ActorCriticConfig

    torch.manual_seed(0)
    net_cfg = ActorCriticConfig(4, "discrete", 2, hidden)
    config = {"kind": "actor_critic", "kwargs": net_cfg.to_dict(), "target_modules": None}
    PolicyLibrary.create(path, ActorCritic(net_cfg), config)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--runs", type=int, default=4, help="concurrent runs (default 4)")
    p.add_argument("--steps", type=int, default=30, help="updates per run (default 30)")
    p.add_argument("--envs", type=int, default=8, help="envs per run (default 8)")
    p.add_argument("--rollout-steps", type=int, default=128, help="steps per env (default 128)")
    p.add_argument("--hidden", default="64,64", help="base hidden widths (default 64,64)")
    p.add_argument("--async-level", type=int, default=1, help="max_async_level (default 1)")
    p.add_argument("--update-epochs", type=int, default=4, help="PPO epochs (default 4)")
    p.add_argument("--batch-window", type=float, default=0.0, help="trainer batch_window_s")
    p.add_argument("--repeats", type=int, default=1, help="ABBA repeats (default 1: A B)")
    p.add_argument(
        "--arms",
        choices=["all", "multi", "service"],
        default="all",
        help="multi: ONE orchestrator vs separate; service: N orchestrators vs separate",
    )
    p.add_argument("--keep", action="store_true", help="keep the temp folder (logs)")
    args = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="skillbank-bench-multi-run-"))
    lib = root / "lib"
    make_library(lib, [int(h) for h in args.hidden.split(",")])
    arms = {
        f"one trainer + ONE orchestrator, {args.runs} runs": (False, True),
        f"one trainer + {args.runs} orchestrators": (False, False),
        f"{args.runs} separate trainer+orchestrator pairs": (True, False),
    }
    if args.arms != "all":
        keep = {"multi": 0, "service": 1}[args.arms]
        arms = {k: v for i, (k, v) in enumerate(arms.items()) if i in (keep, 2)}
    results: dict[str, list[tuple[float, float, float, float]]] = {k: [] for k in arms}
    order = list(arms) if args.repeats == 1 else (list(arms) + list(arms)[::-1]) * args.repeats
    for i, label in enumerate(order):
        separate, one_orch = arms[label]
        results[label].append(run_setup(root / f"{i}", lib, args, separate, one_orch))
    per_run = args.steps * args.envs * args.rollout_steps
    print(
        f"setup: {args.runs} runs x {args.steps} updates x {args.envs} envs x "
        f"{args.rollout_steps} steps ({per_run} env steps per run), base {args.hidden}, "
        f"{args.update_epochs} epochs, 1 torch thread per process, load {os.getloadavg()[0]:.1f}"
    )
    mean = lambda xs, k: sum(x[k] for x in xs) / len(xs)
    peer = results[list(arms)[-1]]
    for label, xs in results.items():
        print(
            f"{label:44s} total wall {mean(xs, 0):6.2f} s  training phase {mean(xs, 1):6.2f} s"
            f"  CPU {mean(xs, 2):6.1f} s  return after {args.steps} steps {mean(xs, 3):6.1f}"
            f"  wall ratio to separate {mean(xs, 0) / mean(peer, 0):6.3f}"
            f"  (walls: {[round(x[0], 1) for x in xs]})"
        )
    print("targets (issue 15): ONE orchestrator / separate <= 0.45 at 4 runs, <= 0.3 at 8")
    if args.keep:
        print(f"logs: {root}")
    else:
        import shutil

        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
