"""skillbank PPO vs Stable-Baselines3 PPO: time to solve, throughput, multi-skill cost.

One run, one machine, one process: every figure is printed with its ratio to the peer
measured in the same run (Stable-Baselines3 PPO, or for the multi-skill section one skill
alone). ``torch.set_num_threads`` is set once (default 1) before anything runs, so both
libraries use the same number of threads.

Sections (``--only``, comma-separated; default all):

- ``cartpole``: CartPole-v1 time-to-475. Per seed, train from scratch and evaluate every
  ``--eval-every`` env steps with 20 greedy episodes on separate envs; report env steps and
  training wall-clock seconds (evaluation time excluded, measured the same way for both)
  until the first evaluation with mean >= 475, and training SPS. skillbank:
  ``default_ppo(cartpole, "base")`` with a 200k-step budget, ActorCritic [256, 256].
  SB3: rl-zoo CartPole-v1 hyperparameters (8 envs, n_steps 32, batch 256, 20 epochs,
  gamma 0.98, lambda 0.8, lr lin_1e-3, clip lin_0.2, ent 0) with up to 200k steps.
- ``halfcheetah``: HalfCheetah-v5 return after ``--steps`` env steps (mean of 10
  deterministic episodes) and training SPS. skillbank: ``default_ppo(halfcheetah, "base")``.
  SB3: rl-zoo HalfCheetah PPO hyperparameters (VecNormalize obs + reward, 1 env, n_steps
  512, batch 64, 20 epochs, lr 2.0633e-5, ...). Uses the first of ``--seeds``.
- ``multiskill``: wall time to train 8 cartpole LoRA skills concurrently (8 tasks of
  ``cartpole-physics``, repeated as needed) vs 1 skill, same steps per skill.

Training time is measured from just before the training call (``train_ppo`` /
``model.learn``) to the end of the last update, minus the time spent in evaluations.

Run: python bench/ppo_vs_sb3.py [--only cartpole,halfcheetah,multiskill] [--seeds 0,1,2]
     [--steps 300000] [--skill-steps 20000] [--eval-every 1024] [--threads 1] [--quick]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from skillbank.algos.ppo_defaults import NET_DEFAULTS, default_ppo, profile_of
from skillbank.lora import MultiLoraModel
from skillbank.models import ActorCritic, ActorCriticConfig
from skillbank.tasks import get_suite, parse_task
from skillbank.tasks.spaces import spaces_of
from skillbank.training.loop import FullBank, LoraBank, evaluate_bank, train_ppo

SECTIONS = ("cartpole", "halfcheetah", "multiskill")
TARGET_RETURN = 475.0
EVAL_EPISODES = 20
HC_EVAL_EPISODES = 10
CARTPOLE_BUDGET = 200_000

# Pass/fail lines of the summary block: (name, measured ratio, target text, passed).
SUMMARY: list[tuple[str, str, str, bool | None]] = []


def log(msg: str) -> None:
    """A progress line (stderr, so stdout holds only the figures)."""
    print(f"  .. {msg}", file=sys.stderr, flush=True)


def out(msg: str = "") -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------- timing


class TrainClock:
    """Training time: time since ``start`` minus the time spent ``paused``, both as wall
    clock (the figure) and as this process's CPU time (a check that does not count time
    other processes on a shared machine took from us)."""

    def __init__(self) -> None:
        self.t0 = self.c0 = 0.0
        self.paused_s = self.paused_cpu = 0.0

    def start(self) -> None:
        self.t0, self.c0 = time.perf_counter(), time.process_time()
        self.paused_s = self.paused_cpu = 0.0

    def now(self) -> float:
        return time.perf_counter() - self.t0 - self.paused_s

    def cpu(self) -> float:
        return time.process_time() - self.c0 - self.paused_cpu

    @contextmanager
    def pause(self):
        t, c = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.paused_s += time.perf_counter() - t
            self.paused_cpu += time.process_time() - c


@dataclass
class EvalTracker:
    """Evaluates every ``every`` env steps; remembers the first evaluation >= ``target``."""

    every: int
    target: float
    evals: list[tuple[int, float, float]] = field(default_factory=list)  # (steps, train_s, ret)
    hit: tuple[int, float, float] | None = None  # (steps, train_s, cpu_s) of the first success
    next_at: int = 0
    last_steps: int = 0
    last_train_s: float = 0.0
    last_cpu_s: float = 0.0

    def __post_init__(self) -> None:
        self.next_at = self.every

    def after_update(
        self, steps: int, clock: TrainClock, evaluate: Callable[[], float], force: bool = False
    ) -> bool:
        """Call after each update (``steps`` = env steps so far); True once solved."""
        train_s, cpu_s = clock.now(), clock.cpu()
        self.last_steps, self.last_train_s, self.last_cpu_s = steps, train_s, cpu_s
        if self.hit is not None or (steps < self.next_at and not force):
            return self.hit is not None
        while self.next_at <= steps:
            self.next_at += self.every
        with clock.pause():
            ret = float(evaluate())
        self.evals.append((steps, train_s, ret))
        if ret >= self.target:
            self.hit = (steps, train_s, cpu_s)
        return self.hit is not None


def linear(initial: float) -> Callable[[float], float]:
    """rl-zoo's ``lin_<value>`` schedule: ``initial`` times SB3's progress_remaining."""
    return lambda progress_remaining: progress_remaining * initial


def fmt_ratio(x: float) -> str:
    return "n/a" if not np.isfinite(x) else f"{x:.2f}x"


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


def git_state() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return f"{head}{' (src/ has uncommitted changes)' if dirty else ''}"
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def threads_check(expected: int) -> None:
    got = torch.get_num_threads()
    if got != expected:
        raise RuntimeError(f"torch.get_num_threads() is {got}, expected {expected}")


# ---------------------------------------------------------------------------- cartpole


@dataclass
class SolveRun:
    side: str
    seed: int
    tracker: EvalTracker
    budget_steps: int
    gym_check: float | None = None  # the solving policy on gymnasium's own CartPole-v1

    @property
    def cpu_s(self) -> float:
        return self.tracker.hit[2] if self.tracker.hit else self.tracker.last_cpu_s

    @property
    def steps(self) -> int:
        return self.tracker.hit[0] if self.tracker.hit else self.tracker.last_steps

    @property
    def train_s(self) -> float:
        return self.tracker.hit[1] if self.tracker.hit else self.tracker.last_train_s

    @property
    def sps(self) -> float:
        return self.steps / self.train_s if self.train_s > 0 else float("nan")

    @property
    def best(self) -> float:
        return max((r for _, _, r in self.tracker.evals), default=float("nan"))


def skillbank_cartpole(seed: int, budget: int, every: int, threads: int) -> SolveRun:
    spec = parse_task("cartpole")
    cfg = replace(default_ppo(spec, "base"), total_steps=budget)
    torch.manual_seed(seed)
    bank = FullBank([ActorCritic(ActorCriticConfig(4, "discrete", 2, [256, 256]))])
    tracker = EvalTracker(every, TARGET_RETURN)
    clock = TrainClock()

    def should_stop(row: dict, norms: list) -> bool:
        def evaluate() -> float:
            returns = evaluate_bank(bank, [spec], norms, "discrete", EVAL_EPISODES, seed)
            return float(np.mean(returns))

        last = row["steps_per_task"] + cfg.envs_per_task * cfg.rollout_steps > budget
        return tracker.after_update(row["steps_per_task"], clock, evaluate, force=last)

    threads_check(threads)
    clock.start()
    result = train_ppo(bank, [spec], cfg, "discrete", seed=seed, should_stop=should_stop)
    run = SolveRun("skillbank", seed, tracker, budget)
    # Training stopped right after the solving evaluation, so the bank and result.norms are
    # the evaluated policy: replay it on Gymnasium's own CartPole-v1 as a cross-check.
    run.gym_check = gym_cartpole_return(bank, result.norms[0], seed)
    return run


def gym_cartpole_return(bank: FullBank, norm, seed: int) -> float:
    """Mean greedy return of a skillbank policy on Gymnasium's CartPole-v1."""
    import gymnasium

    from skillbank.algos.normalize import normalize_rows, stack_norms

    mean, inv_std = stack_norms([norm])
    env = gymnasium.make("CartPole-v1")
    rows = torch.zeros(1, dtype=torch.long)
    returns = []
    with torch.no_grad():
        for ep in range(EVAL_EPISODES):
            obs, _ = env.reset(seed=seed + 20_000 + ep)
            total, done = 0.0, False
            while not done:
                raw = torch.as_tensor(obs[None], dtype=torch.float32)
                x = normalize_rows(raw, mean, inv_std, rows)
                logits, _ = bank(x, rows)
                obs, r, term, trunc, _ = env.step(int(logits.argmax(-1)))
                total += float(r)
                done = term or trunc
            returns.append(total)
    env.close()
    return float(np.mean(returns))


def sb3_cartpole(seed: int, budget: int, every: int, threads: int) -> SolveRun:
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy

    env = make_vec_env("CartPole-v1", n_envs=8, seed=seed)
    eval_env = make_vec_env("CartPole-v1", n_envs=EVAL_EPISODES, seed=seed + 10_000)
    model = PPO(
        "MlpPolicy",
        env,
        n_steps=32,
        batch_size=256,
        gae_lambda=0.8,
        gamma=0.98,
        n_epochs=20,
        ent_coef=0.0,
        learning_rate=linear(1e-3),
        clip_range=linear(0.2),
        seed=seed,
        device="cpu",
        verbose=0,
    )
    tracker = EvalTracker(every, TARGET_RETURN)
    clock = TrainClock()

    def evaluate() -> float:
        mean, _ = evaluate_policy(
            model, eval_env, n_eval_episodes=EVAL_EPISODES, deterministic=True, warn=False
        )
        return float(mean)

    class EvalEvery(BaseCallback):
        # on_rollout_start runs right after the previous rollout's gradient update.
        def _on_rollout_start(self) -> None:
            if self.num_timesteps > 0:
                tracker.after_update(self.num_timesteps, clock, evaluate)

        def _on_step(self) -> bool:
            return tracker.hit is None

        def _on_training_end(self) -> None:
            if tracker.hit is None and self.num_timesteps != tracker.last_steps:
                tracker.after_update(self.num_timesteps, clock, evaluate, force=True)

    threads_check(threads)
    clock.start()
    model.learn(total_timesteps=budget, callback=EvalEvery())
    env.close()
    eval_env.close()
    return SolveRun("sb3", seed, tracker, budget)


def solve_line(run: SolveRun) -> str:
    t = run.tracker
    if t.hit:
        head = f"steps_to_475={run.steps:>7,d}  train_s={run.train_s:7.2f}  cpu_s={run.cpu_s:7.2f}"
    else:
        head = (
            f"NOT SOLVED in {run.steps:,d} steps ({run.train_s:.2f} s, cpu {run.cpu_s:.2f} s); "
            f"best eval {run.best:.1f}"
        )
    return f"{head}  train_sps={run.sps:7.0f}  evals={len(t.evals)}"


def section_cartpole(seeds: list[int], budget: int, every: int, threads: int) -> None:
    out(f"== cartpole: CartPole-v1 time to greedy mean >= {TARGET_RETURN:g} ==")
    out(
        f"   evaluation: every {every} env steps, {EVAL_EPISODES} greedy episodes on separate "
        f"envs, time excluded; budget {budget:,d} steps per run"
    )
    out(
        "   skillbank: default_ppo(cartpole, 'base') total_steps=budget, 8 envs x 128, "
        "ActorCritic [256, 256] tanh"
    )
    out(
        "   sb3: rl-zoo CartPole-v1 (8 envs x 32, batch 256, 20 epochs, lin_1e-3, lin_0.2), "
        "MlpPolicy [64, 64]"
    )
    runs: dict[str, list[SolveRun]] = {"skillbank": [], "sb3": []}
    for seed in seeds:
        for side, fn in (("skillbank", skillbank_cartpole), ("sb3", sb3_cartpole)):
            log(f"cartpole {side} seed {seed} ...")
            run = fn(seed, budget, every, threads)
            runs[side].append(run)
            out(f"[cartpole] seed={seed} {side:<9}  {solve_line(run)}")
            if run.gym_check is not None:
                out(
                    f"[cartpole] seed={seed} {side:<9}  check: that policy on gymnasium "
                    f"CartPole-v1, {EVAL_EPISODES} greedy episodes: mean {run.gym_check:.1f}"
                )
        sk, sb = runs["skillbank"][-1], runs["sb3"][-1]
        out(
            f"[cartpole] seed={seed} ratio      "
            f"time sb3/skillbank={fmt_ratio(sb.train_s / sk.train_s)}"
            f"  steps sb3/skillbank={fmt_ratio(sb.steps / sk.steps)}"
            f"  sps skillbank/sb3={fmt_ratio(sk.sps / sb.sps)}"
            f"  cpu-time sb3/skillbank={fmt_ratio(sb.cpu_s / sk.cpu_s)}"
        )
    means = {}
    for side, rs in runs.items():
        steps = float(np.mean([r.steps for r in rs]))
        secs = float(np.mean([r.train_s for r in rs]))
        cpu = float(np.mean([r.cpu_s for r in rs]))
        sps = float(np.mean([r.sps for r in rs]))
        solved = sum(r.tracker.hit is not None for r in rs)
        means[side] = (steps, secs, sps, solved, cpu)
        out(
            f"[cartpole] mean    {side:<9}  steps_to_475={steps:>9,.0f}  train_s={secs:7.2f}"
            f"  cpu_s={cpu:7.2f}  train_sps={sps:7.0f}  solved {solved}/{len(rs)}"
        )
    sk, sb = means["skillbank"], means["sb3"]
    all_solved = sk[3] == len(seeds) and sb[3] == len(seeds)
    time_ratio = sb[1] / sk[1]
    note = "" if all_solved else "  (some runs unsolved: their budget counted as a lower bound)"
    out(
        f"[cartpole] mean    ratio      time sb3/skillbank={fmt_ratio(time_ratio)}"
        f"  steps sb3/skillbank={fmt_ratio(sb[0] / sk[0])}"
        f"  sps skillbank/sb3={fmt_ratio(sk[2] / sb[2])}"
        f"  cpu-time sb3/skillbank={fmt_ratio(sb[4] / sk[4])}{note}"
    )
    ok = time_ratio >= 5.0 and sk[3] == len(seeds)
    SUMMARY.append(
        (
            "cartpole time-to-475 (SB3 s / skillbank s)",
            fmt_ratio(time_ratio),
            ">= 5x, skillbank solves every seed",
            ok,
        )
    )
    SUMMARY.append(("cartpole steps-to-475 (SB3 / skillbank)", fmt_ratio(sb[0] / sk[0]), "", None))


# ------------------------------------------------------------------------- halfcheetah


def skillbank_halfcheetah(steps: int, seed: int, threads: int) -> dict[str, float]:
    """{"return": mean eval return, "train_s", "cpu_s", "steps"}."""
    spec = parse_task("halfcheetah")
    cfg = replace(default_ppo(spec, "base"), total_steps=steps)
    obs_dim, kind, act_dim, _ = spaces_of(spec)
    torch.manual_seed(seed)
    net_kw = NET_DEFAULTS[profile_of(spec)]  # the base settings train-base uses
    bank = FullBank([ActorCritic(ActorCriticConfig(obs_dim, kind, act_dim, [256, 256], **net_kw))])
    clock = TrainClock()
    last = {"steps": 0, "train_s": 0.0, "cpu_s": 0.0}
    every = max(1, steps // 10)
    next_log = [every]

    def on_update(row: dict) -> None:
        last.update(steps=row["steps_per_task"], train_s=clock.now(), cpu_s=clock.cpu())
        if row["steps_per_task"] >= next_log[0]:
            next_log[0] += every
            ret = row["episodic_return"][0]
            with clock.pause():
                log(
                    f"skillbank halfcheetah {row['steps_per_task']:,d}/{steps:,d} steps, "
                    f"{last['train_s']:.0f} s, recent train return {ret:.0f}"
                )

    threads_check(threads)
    clock.start()
    result = train_ppo(
        bank, [spec], cfg, kind, seed=seed, on_update=on_update, eval_episodes=HC_EVAL_EPISODES
    )
    return {"return": float(np.mean(result.eval_returns)), **last}


def sb3_halfcheetah(steps: int, seed: int, threads: int) -> dict[str, float]:
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.vec_env import VecNormalize, sync_envs_normalization

    gamma = 0.98
    env = VecNormalize(make_vec_env("HalfCheetah-v5", n_envs=1, seed=seed), gamma=gamma)
    model = PPO(
        "MlpPolicy",
        env,
        batch_size=64,
        n_steps=512,
        gamma=gamma,
        learning_rate=2.0633e-05,
        ent_coef=0.000401762,
        clip_range=0.1,
        n_epochs=20,
        gae_lambda=0.92,
        max_grad_norm=0.8,
        vf_coef=0.58096,
        policy_kwargs={
            "log_std_init": -2,
            "ortho_init": False,
            "activation_fn": torch.nn.ReLU,
            "net_arch": {"pi": [256, 256], "vf": [256, 256]},
        },
        seed=seed,
        device="cpu",
        verbose=0,
    )
    clock = TrainClock()
    last = {"steps": 0, "train_s": 0.0, "cpu_s": 0.0}
    every = max(1, steps // 10)

    class Progress(BaseCallback):
        next_log = every

        def _on_rollout_start(self) -> None:
            last.update(steps=self.num_timesteps, train_s=clock.now(), cpu_s=clock.cpu())
            if self.num_timesteps >= self.next_log:
                self.next_log += every
                with clock.pause():
                    log(
                        f"sb3 halfcheetah {self.num_timesteps:,d}/{steps:,d} steps, "
                        f"{last['train_s']:.0f} s"
                    )

        def _on_step(self) -> bool:
            return True

        def _on_training_end(self) -> None:
            last.update(steps=self.num_timesteps, train_s=clock.now(), cpu_s=clock.cpu())

    threads_check(threads)
    clock.start()
    model.learn(total_timesteps=steps, callback=Progress())
    eval_env = VecNormalize(
        make_vec_env("HalfCheetah-v5", n_envs=HC_EVAL_EPISODES, seed=seed + 10_000),
        training=False,
        norm_reward=False,
        gamma=gamma,
    )
    sync_envs_normalization(env, eval_env)
    rets, _ = evaluate_policy(
        model, eval_env, n_eval_episodes=HC_EVAL_EPISODES, deterministic=True, warn=False
    )
    env.close()
    eval_env.close()
    return {"return": float(rets), **last}


def section_halfcheetah(steps: int, seed: int, threads: int) -> None:
    out(f"== halfcheetah: HalfCheetah-v5, {steps:,d} env steps, seed {seed} ==")
    out(
        f"   return = mean of {HC_EVAL_EPISODES} deterministic episodes after training; "
        "SPS = env steps / training seconds"
    )
    out("   skillbank: default_ppo(halfcheetah, 'base'): 8 envs x 256, 10 epochs x 8 minibatches")
    out("   sb3: rl-zoo HalfCheetah PPO: VecNormalize, 1 env x 512, batch 64, 20 epochs")
    res = {}
    for side, fn in (("skillbank", skillbank_halfcheetah), ("sb3", sb3_halfcheetah)):
        log(f"halfcheetah {side} ({steps:,d} steps) ...")
        r = fn(steps, seed, threads)
        res[side] = r
        out(
            f"[halfcheetah] {side:<9}  return={r['return']:9.1f}  steps={int(r['steps']):,d}"
            f"  train_s={r['train_s']:8.1f}  cpu_s={r['cpu_s']:8.1f}"
            f"  train_sps={r['steps'] / r['train_s']:7.0f}"
        )
    sk, sb = res["skillbank"], res["sb3"]
    sk_ret, sb_ret = sk["return"], sb["return"]
    ratio = (sk["steps"] / sk["train_s"]) / (sb["steps"] / sb["train_s"])
    cpu_ratio = (sk["steps"] / sk["cpu_s"]) / (sb["steps"] / sb["cpu_s"])
    out(
        f"[halfcheetah] ratio      sps skillbank/sb3={fmt_ratio(ratio)}"
        f"  (per cpu-second {fmt_ratio(cpu_ratio)})  return skillbank-sb3={sk_ret - sb_ret:+.1f}"
    )
    SUMMARY.append(
        (
            f"halfcheetah SPS (skillbank / SB3) at {steps:,d} steps",
            f"{fmt_ratio(ratio)}, return {sk_ret:.0f} vs {sb_ret:.0f}",
            ">= 2x at equal or better return",
            ratio >= 2.0 and sk_ret >= sb_ret,
        )
    )


# -------------------------------------------------------------------------- multiskill


def lora_run(
    num_skills: int, steps: int, seed: int, threads: int
) -> tuple[float, float, list[float]]:
    """(wall s, cpu s) to train ``num_skills`` LoRA skills (rank 8) concurrently; the final
    training returns."""
    suite = get_suite("cartpole-physics")
    specs = [suite[i % len(suite)] for i in range(num_skills)]
    torch.manual_seed(seed)
    base = ActorCritic(ActorCriticConfig(4, "discrete", 2, [256, 256]))
    model = MultiLoraModel(base, num_skills, 8)
    gen = torch.Generator().manual_seed(seed)
    for k in range(num_skills):
        model.reset_slot(k, 8, 16.0, generator=gen)
    bank = LoraBank(model, range(num_skills))
    cfg = replace(default_ppo(specs[0], "lora"), total_steps=steps)
    threads_check(threads)
    clock = TrainClock()
    clock.start()
    result = train_ppo(bank, specs, cfg, "discrete", seed=seed)
    return clock.now(), clock.cpu(), list(result.curves[-1]["episodic_return"])


def section_multiskill(seeds: list[int], steps: int, threads: int) -> None:
    n = 8
    suite = get_suite("cartpole-physics")
    out(f"== multiskill: {n} cartpole LoRA skills concurrently vs 1, {steps:,d} steps/skill ==")
    out(
        f"   random-init ActorCritic [256, 256] base, MultiLoraModel(base, num_skills, 8), "
        f"rank 8 alpha 16, default_ppo(cartpole, 'lora'); tasks: {len(suite)} of "
        f"cartpole-physics{' repeated' if len(suite) < n else ''} "
        f"({', '.join(s.name for s in (suite * 2)[:n])}); time includes env creation"
    )
    lora_run(n, 1024, seeds[0], threads)  # warm-up, not timed
    lora_run(1, 1024, seeds[0], threads)
    t1s, tns, c1s, cns = [], [], [], []
    for seed in seeds:
        t1, c1, r1 = lora_run(1, steps, seed, threads)
        tn, cn, rn = lora_run(n, steps, seed, threads)
        t1s.append(t1)
        tns.append(tn)
        c1s.append(c1)
        cns.append(cn)
        out(
            f"[multiskill] seed={seed} 1 skill   wall_s={t1:7.2f}  cpu_s={c1:7.2f}"
            f"  final train return {r1[0]:.0f}"
        )
        out(
            f"[multiskill] seed={seed} {n} skills  wall_s={tn:7.2f}  cpu_s={cn:7.2f}"
            "  final train returns " + " ".join(f"{r:.0f}" for r in rn)
        )
        out(
            f"[multiskill] seed={seed} ratio     {n} skills / 1 skill={fmt_ratio(tn / t1)}"
            f"  (cpu {fmt_ratio(cn / c1)}; vs {n} sequential runs: {fmt_ratio(n * t1 / tn)} faster)"
        )
    t1, tn = float(np.mean(t1s)), float(np.mean(tns))
    c1, cn = float(np.mean(c1s)), float(np.mean(cns))
    ratio = tn / t1
    out(
        f"[multiskill] mean   1 skill {t1:.2f} s, {n} skills {tn:.2f} s, ratio {fmt_ratio(ratio)}"
        f"  (cpu {fmt_ratio(cn / c1)}; vs {n} sequential runs: {fmt_ratio(n * t1 / tn)} faster)"
    )
    SUMMARY.append(
        (f"multiskill wall time ({n} skills / 1 skill)", fmt_ratio(ratio), "<= 3x", ratio <= 3.0)
    )


# -------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--only", default=",".join(SECTIONS), help=f"sections ({', '.join(SECTIONS)})")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--steps", type=int, default=300_000, help="halfcheetah env steps (300000)")
    p.add_argument("--skill-steps", type=int, default=20_000, help="multiskill steps per skill")
    p.add_argument("--eval-every", type=int, default=1024, help="cartpole evaluation period")
    p.add_argument("--budget", type=int, default=CARTPOLE_BUDGET, help="cartpole max steps")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    p.add_argument("--quick", action="store_true", help="smoke run: 1 seed, tiny budgets")
    a = p.parse_args(argv)

    only = [s.strip() for s in a.only.split(",") if s.strip()]
    unknown = sorted(set(only) - set(SECTIONS))
    if unknown:
        p.error(f"unknown section(s) {unknown}; valid: {', '.join(SECTIONS)}")
    seeds = [int(s) for s in a.seeds.split(",") if s.strip()]
    budget, steps, skill_steps, every = a.budget, a.steps, a.skill_steps, a.eval_every
    if a.quick:
        seeds = seeds[:1]
        budget, steps, skill_steps, every = 8192, 4096, 4096, 4096
    if every % 1024 or every % 256:
        log(f"--eval-every {every} is not a multiple of both update sizes (1024 and 256)")

    torch.set_num_threads(a.threads)
    with suppress(RuntimeError):  # already set if torch ran parallel work
        torch.set_num_interop_threads(a.threads)
    import gymnasium
    import stable_baselines3

    # The first torch.optim.Adam() imports torch._dynamo (~1 s): pay it here, untimed, rather
    # than inside whichever library's training clock runs first.
    torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])

    out("# skillbank PPO vs Stable-Baselines3 PPO (bench/ppo_vs_sb3.py)")
    out(
        f"# torch.set_num_threads({a.threads}) for both libraries (one process, run one after "
        f"the other); torch {torch.__version__}, stable-baselines3 {stable_baselines3.__version__}"
        f", gymnasium {gymnasium.__version__}, python {platform.python_version()}"
    )
    out(
        f"# machine: {platform.machine()}, {os.cpu_count()} CPUs; skillbank git {git_state()}; "
        f"sections {','.join(only)}; seeds {seeds}{'; QUICK smoke run' if a.quick else ''}"
    )
    start = time.perf_counter()
    if "cartpole" in only:
        section_cartpole(seeds, budget, every, a.threads)
    if "halfcheetah" in only:
        section_halfcheetah(steps, seeds[0], a.threads)
    if "multiskill" in only:
        section_multiskill(seeds, skill_steps, a.threads)

    out("== summary ==")
    for name, measured, target, ok in SUMMARY:
        goal = f"  (target {target})" if target else ""
        out(f"{verdict(ok):<4}  {name}: {measured}{goal}")
    out(f"# total bench time {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
