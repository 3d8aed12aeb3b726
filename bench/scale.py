"""Scaling: the trainer on 1 and 2 data-parallel ranks, rollouts with 1 and 2 env workers.

    python bench/scale.py                      # both sections, about 30 s
    python bench/scale.py --only trainer --runs 4 --rows 4096 --hidden 256,256
    python bench/scale.py --only rollout --task hopper

trainer: the same R runs, each fed K identical hand-written rollouts of ``--rows`` rows, on
a trainer of 1 process (``skillbank trainer``) and of 2 gloo ranks (``--nproc 2``);
updates/s = batched updates between the first and the last logged step / their time.
rollout: ``collect_rollout`` (8 envs x 128 steps, a small actor-critic) with the environments
in-process, in 1 worker process and in 2 (``ProcVecEnv``); env steps/s (``--envs``).
Every figure is printed with its ratio to its peer of the same run; torch threads are set
explicitly (``--threads``, per process / rank) and printed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _toml(out: Path, hidden: list[int], slots: int) -> str:
    return (
        f'output_dir = "{out}"\nbase_task = "cartpole"\nbase_hidden = {hidden}\n'
        f"max_concurrent_runs = {slots}\ncheckpoint_interval = 100000\n"
    )


def trainer_updates_per_s(
    nproc: int, runs: int, rollouts: int, rows: int, hidden: list[int], threads: int
) -> float:
    import torch

    from skillbank.service.protocol.paths import RunPaths
    from skillbank.service.protocol.rollout_io import write_rollout

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        out.mkdir()
        cfg = Path(tmp) / "trainer.toml"
        cfg.write_text(_toml(out, hidden, runs))
        names = [f"r{i}" for i in range(runs)]
        for i, name in enumerate(names):
            run = RunPaths(out, name)
            run.control.mkdir(parents=True)
            for step in range(rollouts):
                g = torch.Generator().manual_seed(1000 * i + step)
                batch = {
                    "obs": torch.randn(rows, 4, generator=g).clamp(-5, 5),
                    "actions": torch.randint(0, 2, (rows,), generator=g),
                    "logp": torch.full((rows,), -0.6931),
                    "values": torch.randn(rows, generator=g),
                    "advantages": torch.randn(rows, generator=g),
                    "returns": torch.randn(rows, generator=g),
                }
                meta = {"policy_step": step, "episode_returns": [], "recent_return": None}
                write_rollout(run, step, batch, meta)
            run.orch_toml.write_text(
                f"task = 'cartpole'\nmax_steps = {rollouts + 10}\nseed = {i}\n"
            )
        cmd = [sys.executable, "-m", "skillbank.cli.service", "trainer", "--config", str(cfg)]
        cmd += ["--threads", str(threads), "--nproc", str(nproc)]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        log = open(Path(tmp) / "trainer.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            last = RunPaths(out, names[-1]).broadcast_stable(rollouts)
            deadline = time.monotonic() + 900
            while not last.is_file():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((Path(tmp) / "trainer.log").read_text()[-2000:])
                time.sleep(0.1)
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
                proc.wait(60)
            log.close()
        lines = RunPaths(out, names[0]).trainer_log.read_text().splitlines()
        times = [r["time"] for r in map(json.loads, lines) if r.get("event") == "step"]
    return (len(times) - 1) / (times[-1] - times[0])


def rollout_steps_per_s(task: str, workers: int, repeats: int, envs: int) -> float:
    import torch

    from skillbank.algos.normalize import ObsNorm
    from skillbank.algos.ppo import PPOConfig
    from skillbank.models import ActorCritic, ActorCriticConfig
    from skillbank.service.kinds.ppo.config import task_spaces
    from skillbank.tasks import parse_task
    from skillbank.tasks.workers import make_env
    from skillbank.training.rollout import RolloutState, collect_rollout

    spec = parse_task(task)
    obs_dim, kind, act_dim = task_spaces(spec)
    torch.manual_seed(0)
    net = ActorCritic(ActorCriticConfig(obs_dim, kind, act_dim, [64, 64]))
    cfg = PPOConfig(envs_per_task=envs, rollout_steps=128)
    with make_env([spec], envs, seed=0, workers=workers) as env:
        state = RolloutState(env.reset(seed=0), [ObsNorm.identity(obs_dim)], None, [[]])
        gen = torch.Generator().manual_seed(0)
        collect_rollout(env, lambda x, t: net(x), state, cfg, kind, gen)  # warm-up
        t0 = time.perf_counter()
        for _ in range(repeats):
            collect_rollout(env, lambda x, t: net(x), state, cfg, kind, gen)
        seconds = time.perf_counter() - t0
    return repeats * env.num_envs * cfg.rollout_steps / seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--only", choices=["trainer", "rollout"], help="one section only")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process (1)")
    p.add_argument("--runs", type=int, default=2, help="trainer: runs (slots), default 2")
    p.add_argument("--rollouts", type=int, default=12, help="trainer: updates timed (12)")
    p.add_argument("--rows", type=int, default=2048, help="trainer: rows per rollout (2048)")
    p.add_argument("--hidden", default="64,64", help="trainer: base hidden widths (64,64)")
    p.add_argument("--task", default="cartpole", help="rollout: task (cartpole; try hopper)")
    p.add_argument("--repeats", type=int, default=10, help="rollout: rollouts timed (10)")
    p.add_argument("--envs", type=int, default=8, help="rollout: envs (8)")
    args = p.parse_args()
    hidden = [int(h) for h in args.hidden.split(",")]
    cores = os.cpu_count()
    print(f"machine: {cores} cores, load {os.getloadavg()[0]:.2f}; torch threads {args.threads}")
    if args.only in (None, "trainer"):
        what = f"{args.runs} runs x {args.rows} rows, hidden {hidden}, {args.threads} thread(s)"
        one = trainer_updates_per_s(1, args.runs, args.rollouts, args.rows, hidden, args.threads)
        print(f"trainer 1 process ({what}): {one:.2f} updates/s")
        two = trainer_updates_per_s(2, args.runs, args.rollouts, args.rows, hidden, args.threads)
        print(f"trainer 2 gloo ranks ({what} per rank): {two:.2f} updates/s")
        print(f"trainer ratio 2 ranks / 1 process: {two / one:.2f}x")
    if args.only in (None, "rollout"):
        import torch

        torch.set_num_threads(args.threads)
        base = rollout_steps_per_s(args.task, 0, args.repeats, args.envs)
        where = f"{args.envs} envs x 128 steps"
        print(f"rollout {args.task} in-process ({where}): {base:.0f} env steps/s")
        w1 = rollout_steps_per_s(args.task, 1, args.repeats, args.envs)
        print(f"rollout {args.task} 1 worker process: {w1:.0f} env steps/s")
        w2 = rollout_steps_per_s(args.task, 2, args.repeats, args.envs)
        print(f"rollout {args.task} 2 worker processes: {w2:.0f} env steps/s")
        print(f"rollout ratio 2 workers / 1 worker: {w2 / w1:.2f}x")
        print(f"rollout ratio 2 workers / in-process: {w2 / base:.2f}x")


if __name__ == "__main__":
    main()
