"""The PPO orchestrator: one process per run, collecting rollouts for the trainer.

Loop for n = first step .. max_steps - 1:
1. wait until a broadcast of step >= n - k is STABLE (k = the trainer's max_async_level),
2. load the newest STABLE broadcast (merged into a private copy of the base),
3. collect one rollout with ``skillbank.training.rollout.collect_rollout`` (GAE with its own value
   estimates; the run's running observation statistics are updated here and shipped),
4. publish ``rollouts/step_<n>`` (staged folder, then rename).
The orchestrator stops after its last rollout, or with ``protocol.watch.Stopped`` when its
run folder disappears or the run is evicted or rejected (``orchestrator.main`` reports
it). Restarted, it continues after its newest rollout.
"""

from __future__ import annotations

import math
import sys
import time
from collections import deque
from typing import Any

import torch
from torch import Tensor, nn

from skillbank.algos.normalize import ObsNorm
from skillbank.algos.ppo import PPOConfig
from skillbank.io import read_json
from skillbank.lora import peft_io
from skillbank.service.kinds.fields import mix_seed
from skillbank.service.kinds.ppo.config import PPORunConfig
from skillbank.service.protocol.base import load_base, slot_model
from skillbank.service.protocol.files import append_jsonl
from skillbank.service.protocol.info import TrainerInfo
from skillbank.service.protocol.paths import RunPaths, steps
from skillbank.service.protocol.rollout_io import write_rollout
from skillbank.service.protocol.watch import (
    POLL_S,
    first_step,
    read_run_id,
    wait_for_broadcast,
)
from skillbank.tasks.workers import make_env
from skillbank.training.rollout import RewardScaler, RolloutState, collect_rollout, update_norms


class BroadcastPolicy:
    """The newest broadcast adapter merged into a private copy of the base."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.step = -1
        self.net: nn.Module | None = None

    def load(self, run: RunPaths, step: int) -> bool:
        """Load broadcast ``step``; False if it vanished or is unreadable (then retry)."""
        folder = run.broadcast(step)
        try:
            adapter = peft_io.read_adapter(folder)
            peft_io.apply_adapter(self.model, 0, adapter, source=folder)
        except (peft_io.AdapterFormatError, OSError) as e:
            print(f"[orchestrator] broadcast {step} unreadable, retrying: {e}", file=sys.stderr)
            return False
        self.net = self.model.merged_copy(0).eval()
        self.step = step
        return True

    def __call__(self, x: Tensor, task: Tensor) -> tuple[Tensor, Tensor]:
        assert self.net is not None
        return self.net(x)


def initial_norm(run: RunPaths, newest_broadcast: int, obs_dim: int) -> ObsNorm:
    """The run's statistics: from its newest rollout, else the broadcast, else identity."""
    sources = [run.rollout_meta(s) for s in reversed(steps(run.rollouts))][:1]
    for path in sources:
        try:
            norm = read_json(path).get("obs_norm")
            if norm:
                return ObsNorm.from_dict(norm)
        except (OSError, ValueError, KeyError):
            pass
    try:
        norm = read_json(run.broadcast_obs_norm(newest_broadcast))
    except (OSError, ValueError):
        norm = None
    return ObsNorm.from_dict(norm) if norm else ObsNorm.identity(obs_dim)


def mean_or_none(values: Any) -> float | None:
    vals = list(values)
    return float(sum(vals) / len(vals)) if vals else None


def run_ppo(
    run: RunPaths,
    cfg: PPORunConfig,
    specs: list[Any],
    info: TrainerInfo,
) -> int:
    """The PPO orchestrator loop (see the module docstring); returns an exit code."""
    model = slot_model(load_base(info), info, 1)
    kind = str(info.base_kwargs["action_kind"])
    k = info.max_async_level
    ppo = PPOConfig(
        envs_per_task=cfg.envs_per_task,
        rollout_steps=cfg.rollout_steps,
        gamma=cfg.gamma,
        gae_lambda=cfg.gae_lambda,
        normalize_reward=cfg.normalize_reward,
    )
    env = make_env(specs, cfg.envs_per_task, cfg.seed, cfg.env_workers)  # workers: processes
    policy = BroadcastPolicy(model)
    recent: deque[float] = deque(maxlen=10)  # returns of the run's last episodes
    last_return: float | None = None
    n = 0
    try:
        newest = wait_for_broadcast(run, 0)
        run_id = read_run_id(run)  # written at admission, before broadcast 0
        n = first_step(run, newest)
        norm = initial_norm(run, newest, env.obs_dim)
        scaler = RewardScaler(cfg.gamma, env.num_envs) if cfg.normalize_reward else None
        obs = env.reset(seed=cfg.seed + n)
        # one adapter per run: its tasks share one set of statistics (the same object)
        state = RolloutState(obs, [norm] * len(specs), scaler, [[] for _ in specs])
        if norm.count < 1:  # fresh statistics start from the first observations, as in-process
            update_norms(state.norms, obs, env.task_ids)
        torch.manual_seed(mix_seed(cfg.seed, 100_003, n))
        gen = torch.Generator().manual_seed(mix_seed(cfg.seed, 100_003, n))
        msg = f"[orchestrator] {run.name}: starting at step {n}, {env!r}"
        print(msg, file=sys.stderr, flush=True)
        while n < cfg.max_steps:
            newest = wait_for_broadcast(run, max(0, n - k), run_id=run_id)
            if newest != policy.step and not policy.load(run, newest):
                time.sleep(POLL_S)
                continue
            t0 = time.perf_counter()
            batch = collect_rollout(env, policy, state, ppo, kind, gen)
            finished = [r for per_task in state.episode_returns for r in per_task]
            for per_task in state.episode_returns:
                per_task.clear()
            recent.extend(finished)
            last_return = mean_or_none(recent)
            meta = {
                "policy_step": policy.step,
                "episode_returns": finished,
                "recent_return": last_return,
                "obs_norm": norm.to_dict(),
                "collect_s": time.perf_counter() - t0,
            }
            write_rollout(run, n, batch, meta)
            record = {"step": n, "policy_step": policy.step, "recent_return": last_return}
            append_jsonl(run.orchestrator_log, record)
            n += 1
    finally:
        env.close()
    shown = "n/a" if last_return is None or not math.isfinite(last_return) else f"{last_return:.1f}"
    print(f"[orchestrator] {run.name}: done ({n} rollouts, recent return {shown})", file=sys.stderr)
    return 0
