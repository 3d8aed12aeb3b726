"""The PPO part of the multi-run orchestrator: many runs' rollouts, one act per env step.

``MultiPPO`` holds every served PPO run of one outputs folder. Each run keeps its own
environments, observation statistics, step counter and async bound, exactly as the
one-run orchestrator (``orchestrate.run_ppo``) does; what is shared is the policy: a
``StackedPolicy`` with one local slot per run, so each ``tick()`` makes ONE forward and
ONE sampling call for the rows of every run that is collecting, then steps each run's
environments with its block of actions. A run waits (without holding the others) until a
broadcast within its async bound is STABLE, collects ``rollout_steps`` steps, and writes
``rollouts/step_<n>`` with the same files and ``meta.json`` as the one-run orchestrator.

Per-step work that grows with the number of runs is kept to copying each run's
observations in and its actions out, and its env step; rollouts are sliced out of the
shared per-step tensors once, when they are written. A failing run (its env raises, its
folder vanishes, it is evicted, its rollout cannot be written) is dropped alone and
reported by ``tick()``.
"""

from __future__ import annotations

import contextlib
import sys
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import gymnasium
import numpy as np
import torch
from torch import Tensor

from skillbank.algos.distributions import sample_with_logp
from skillbank.algos.normalize import CLIP, ObsNorm, stack_norms
from skillbank.algos.ppo import gae
from skillbank.errors import SkillbankError
from skillbank.lora import peft_io
from skillbank.service.kinds.ppo.config import PPORunConfig
from skillbank.service.kinds.ppo.orchestrate import initial_norm, mean_or_none
from skillbank.service.kinds.ppo.stacked import StackedPolicy
from skillbank.service.protocol.base import load_base, slot_model
from skillbank.service.protocol.files import append_jsonl
from skillbank.service.protocol.info import TrainerInfo
from skillbank.service.protocol.paths import RunPaths
from skillbank.service.protocol.rollout_io import write_rollout
from skillbank.service.protocol.watch import Stopped, check_running, first_step, read_run_id
from skillbank.tasks.workers import make_env
from skillbank.training.rollout import RewardScaler, RolloutState, update_norms

CHECK_S = 0.2
"""How often each run's control files are checked (as ``protocol.watch`` does)."""


@dataclass(frozen=True)
class Ended:
    """A run that left the orchestrator: its exit code (0 done or stopped from outside,
    2 rejected or a user error, 1 a bug) and one line saying why."""

    run: RunPaths
    code: int
    why: str


@dataclass
class _Rollout:
    g0: int  # global tick of the first step
    policy_step: int
    env_mean: Tensor  # [n, d] the fixed input transform of this rollout
    env_inv: Tensor
    t0: float
    raw_obs: list[np.ndarray] = field(default_factory=list)
    rewards: list[np.ndarray] = field(default_factory=list)
    dones: list[np.ndarray] = field(default_factory=list)


@dataclass
class _Run:
    run: RunPaths
    cfg: PPORunConfig
    specs: list[Any]
    env: Any
    slot: int = -1  # local slot, given when broadcast 0 appears (the trainer admitted it)
    run_id: str | None = None
    n: int = 0
    policy_step: int = -1
    state: RolloutState | None = None
    norm: ObsNorm | None = None
    rollout: _Rollout | None = None
    next_check: float = 0.0
    next_list: float = 0.0
    low: np.ndarray | None = None  # box action bounds of the run's tasks
    high: np.ndarray | None = None
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=10))
    last_return: float | None = None

    @property
    def rows(self) -> int:
        return int(self.env.num_envs)


class MultiPPO:
    """Every served PPO run of one trainer (see the module docstring)."""

    def __init__(self, info: TrainerInfo, num_slots: int, seed: int = 0) -> None:
        self.reader = slot_model(load_base(info), info, 1)  # adapters are read into slot 0
        self.policy = StackedPolicy(self.reader, num_slots)
        self.num_slots = num_slots
        self.kind = str(info.base_kwargs["action_kind"])
        self.obs_dim = int(info.base_kwargs["obs_dim"])
        self.k = info.max_async_level
        self.runs: list[_Run] = []
        self.slots: list[_Run | None] = [None] * num_slots
        self.tick_no = 0
        self.hist: dict[int, tuple[Tensor, Tensor, Tensor, Tensor]] = {}
        self.rows = 1
        self._alloc(1)
        torch.manual_seed(seed)

    # ---- membership -------------------------------------------------------------------
    def add(self, run: RunPaths, cfg: PPORunConfig, specs: list[Any]) -> None:
        """Serve ``run`` (its environments are made now: errors are the caller's to
        report)."""
        env = make_env(specs, cfg.envs_per_task, cfg.seed, cfg.env_workers)
        r = _Run(run, cfg, list(specs), env)
        if self.kind == "box":
            space = env.action_space
            assert isinstance(space, gymnasium.spaces.Box)
            r.low = np.asarray(space.low, dtype=np.float32)
            r.high = np.asarray(space.high, dtype=np.float32)
        self.runs.append(r)

    def serves(self) -> list[RunPaths]:
        return [r.run for r in self.runs]

    def _drop(self, r: _Run, code: int, why: str) -> Ended:
        self.runs.remove(r)
        if r.slot >= 0:
            self.slots[r.slot] = None
            self.policy.clear(r.slot)
            self._mean[r.slot] = 0.0
            self._inv[r.slot] = 1.0
        with contextlib.suppress(Exception):  # a crashed env's close must not hide why
            r.env.close()
        return Ended(r.run, code, why)

    def close(self) -> None:
        for r in list(self.runs):
            self._drop(r, 0, "orchestrator stopped")

    def _alloc(self, rows: int) -> None:
        """(Re)size the shared per-tick buffers to ``rows`` rows per slot."""
        self.rows = rows
        s, d = self.num_slots, self.obs_dim
        self._raw = np.zeros((s, rows, d), dtype=np.float32)
        self._mean = torch.zeros(s, rows, d)
        self._inv = torch.ones(s, rows, d)
        for r in self.runs:
            if r.rollout is not None:
                self._mean[r.slot, : r.rows] = r.rollout.env_mean
                self._inv[r.slot, : r.rows] = r.rollout.env_inv

    # ---- one tick ---------------------------------------------------------------------
    def tick(self) -> tuple[list[Ended], bool]:
        """Advance every run by one env step (or one poll); returns (runs that ended,
        whether any run collected)."""
        ended: list[Ended] = []
        now = time.monotonic()
        for r in list(self.runs):
            try:
                if now >= r.next_check:
                    r.next_check = now + CHECK_S
                    check_running(r.run, r.run_id)
                if r.rollout is None:
                    self._poll(r)
                    if r.n >= r.cfg.max_steps:
                        ended.append(self._drop(r, 0, self._done_line(r)))
            except Exception as e:
                ended.append(self._failed(r, e))
        active = [r for r in self.runs if r.rollout is not None]
        if not active:
            return ended, False
        for r in active:
            self._raw[r.slot, : r.rows] = r.state.obs  # type: ignore[union-attr]
        obs_t = ((torch.from_numpy(self._raw) - self._mean) * self._inv).clamp_(-CLIP, CLIP)
        policy_out, value = self.policy(obs_t)
        flat = policy_out.reshape(self.num_slots * self.rows, -1)
        action, logp = sample_with_logp(self.kind, flat)
        action = action.reshape(self.num_slots, self.rows, *action.shape[1:])
        logp = logp.reshape(self.num_slots, self.rows)
        env_action = action.numpy()
        g = self.tick_no
        self.hist[g] = (obs_t, action, logp, value)
        stacked: dict[int, tuple[Tensor, ...]] = {}
        for r in active:
            ro = r.rollout
            assert ro is not None
            try:
                if g - ro.g0 == r.cfg.rollout_steps:  # this tick's value is V(last obs)
                    self._finish(r, value[r.slot, : r.rows], stacked)
                else:
                    self._env_step(r, env_action[r.slot, : r.rows])
            except Exception as e:
                ended.append(self._failed(r, e))
        self.tick_no += 1
        oldest = min((r.rollout.g0 for r in self.runs if r.rollout is not None), default=g + 1)
        for old in [h for h in self.hist if h < oldest]:
            del self.hist[old]
        return ended, True

    # ---- per run ----------------------------------------------------------------------
    def _poll(self, r: _Run) -> None:
        """Waiting: start the run (broadcast 0) or its next rollout (within the bound).

        Each poll is one ``stat`` of the awaited ``STABLE``; the broadcasts are listed
        (the awaited step may be pruned already) every ``CHECK_S``."""
        if r.state is None and not self._start(r):
            return
        if r.n >= r.cfg.max_steps:
            return
        need = max(0, r.n - self.k)
        now = time.monotonic()
        if not r.run.broadcast_stable(need).is_file():
            if now < r.next_list:
                return
            r.next_list = now + CHECK_S
        newest = r.run.newest_stable_broadcast()
        if newest is None or newest < need:
            return
        if newest != r.policy_step and not self._load(r, newest):
            return
        self._begin(r)

    def _start(self, r: _Run) -> bool:
        """Broadcast 0 exists (the trainer admitted the run): give it a local slot and
        set it up where the one-run orchestrator would (``first_step``)."""
        now = time.monotonic()
        if not r.run.broadcast_stable(0).is_file():
            if now < r.next_list:
                return False
            r.next_list = now + CHECK_S
        if None not in self.slots:
            return False  # every local slot is busy (a run is leaving): try again later
        newest = r.run.newest_stable_broadcast()
        if newest is None:
            return False
        r.slot = self.slots.index(None)
        self.slots[r.slot] = r
        if r.rows > self.rows:
            self._alloc(r.rows)
        r.run_id = read_run_id(r.run)  # written at admission, before broadcast 0
        r.n = first_step(r.run, newest)
        norm = initial_norm(r.run, newest, r.env.obs_dim)
        scaler = RewardScaler(r.cfg.gamma, r.rows) if r.cfg.normalize_reward else None
        obs = r.env.reset(seed=r.cfg.seed + r.n)
        r.norm = norm
        r.state = RolloutState(obs, [norm] * len(r.specs), scaler, [[] for _ in r.specs])
        if norm.count < 1:  # fresh statistics start from the first observations
            update_norms(r.state.norms, obs, r.env.task_ids)
        msg = f"[orchestrator] {r.run.name}: starting at step {r.n}, {r.env!r} (slot {r.slot})"
        print(msg, file=sys.stderr, flush=True)
        return True

    def _load(self, r: _Run, step: int) -> bool:
        folder = r.run.broadcast(step)
        try:
            adapter = peft_io.read_adapter(folder)
            peft_io.apply_adapter(self.reader, 0, adapter, source=folder)
        except (peft_io.AdapterFormatError, OSError) as e:
            print(f"[orchestrator] {r.run.name}: broadcast {step} unreadable, retrying: {e}")
            return False
        self.policy.load(r.slot, self.reader)
        r.policy_step = step
        return True

    def _begin(self, r: _Run) -> None:
        assert r.state is not None
        task = torch.as_tensor(r.env.task_ids, dtype=torch.long)
        mean, inv_std = stack_norms(r.state.norms)
        ro = _Rollout(self.tick_no, r.policy_step, mean[task], inv_std[task], time.perf_counter())
        self._mean[r.slot, : r.rows] = ro.env_mean
        self._inv[r.slot, : r.rows] = ro.env_inv
        r.rollout = ro

    def _env_step(self, r: _Run, action: np.ndarray) -> None:
        ro, state = r.rollout, r.state
        assert ro is not None and state is not None
        if r.low is not None:
            action = np.clip(action, r.low, r.high)
        next_obs, reward, terminated, truncated, info = r.env.step(action)
        reward = np.asarray(reward, dtype=np.float64)
        done = np.logical_or(terminated, truncated)
        if done.any():
            for i in np.nonzero(done)[0]:
                state.episode_returns[r.env.task_ids[i]].append(float(info["episode_return"][i]))
        if state.scaler is not None:
            reward = state.scaler(reward, done)
        trunc_only = np.logical_and(truncated, np.logical_not(terminated))
        if trunc_only.any():  # bootstrap through time limits with V(final_obs)
            idx = np.nonzero(trunc_only)[0]
            fin = torch.as_tensor(info["final_obs"][idx], dtype=torch.float32)
            fin = ((fin - ro.env_mean[idx]) * ro.env_inv[idx]).clamp(-CLIP, CLIP)
            _, v_fin = self.policy.one(r.slot, fin)
            reward[idx] += r.cfg.gamma * v_fin.numpy()
        ro.raw_obs.append(state.obs)
        ro.rewards.append(reward)
        ro.dones.append(done)
        state.obs = next_obs

    def _finish(self, r: _Run, last_value: Tensor, stacked: dict[int, tuple[Tensor, ...]]) -> None:
        """Rollout complete: GAE, statistics, ``rollouts/step_<n>``, the log line."""
        ro, state = r.rollout, r.state
        assert ro is not None and state is not None and r.norm is not None
        steps, n = r.cfg.rollout_steps, r.rows
        if ro.g0 not in stacked:  # runs that started together share one stack
            entries = [self.hist[g] for g in range(ro.g0, ro.g0 + steps)]
            if len({e[0].shape for e in entries}) == 1:
                stacked[ro.g0] = tuple(torch.stack(parts) for parts in zip(*entries))
            else:  # the buffers grew mid-rollout (a wider run joined): slice step by step
                stacked[ro.g0] = ()
        if stacked[ro.g0]:
            obs, actions, logp, values = (x[:, r.slot, :n] for x in stacked[ro.g0])
        else:
            entries = [self.hist[g] for g in range(ro.g0, ro.g0 + steps)]
            obs, actions, logp, values = (
                torch.stack([e[j][r.slot, :n] for e in entries]) for j in range(4)
            )
        if state.update_norms:
            update_norms(state.norms, np.stack(ro.raw_obs), r.env.task_ids)
        rewards = torch.as_tensor(np.stack(ro.rewards), dtype=torch.float32)
        dones = torch.as_tensor(np.stack(ro.dones), dtype=torch.float32)
        adv, ret = gae(rewards, values, dones, last_value, r.cfg.gamma, r.cfg.gae_lambda)
        task = torch.as_tensor(r.env.task_ids, dtype=torch.long)
        batch = {
            "obs": obs.reshape(steps * n, -1),
            "actions": actions.reshape(steps * n, *actions.shape[2:]),
            "logp": logp.reshape(-1),
            "values": values.reshape(-1),
            "advantages": adv.reshape(-1),
            "returns": ret.reshape(-1),
            "task": task.repeat(steps),
        }
        finished = [x for per_task in state.episode_returns for x in per_task]
        for per_task in state.episode_returns:
            per_task.clear()
        r.recent.extend(finished)
        r.last_return = mean_or_none(r.recent)
        meta = {
            "policy_step": ro.policy_step,
            "episode_returns": finished,
            "recent_return": r.last_return,
            "obs_norm": r.norm.to_dict(),
            "collect_s": time.perf_counter() - ro.t0,
        }
        r.rollout = None
        write_rollout(r.run, r.n, batch, meta)
        record = {"step": r.n, "policy_step": ro.policy_step, "recent_return": r.last_return}
        append_jsonl(r.run.orchestrator_log, record)
        r.n += 1

    def _done_line(self, r: _Run) -> str:
        ret = r.last_return
        shown = "n/a" if ret is None or not np.isfinite(ret) else f"{ret:.1f}"
        return f"done ({r.n} rollouts, recent return {shown})"

    def _failed(self, r: _Run, e: BaseException) -> Ended:
        """Drop ``r`` for ``e``: a stop from outside, a vanished folder, or an error."""
        if isinstance(e, Stopped):
            return self._drop(r, 2 if e.rejected else 0, f"stopped: {e}")
        if isinstance(e, OSError) and not r.run.root.is_dir():
            return self._drop(r, 0, "run folder disappeared")
        if isinstance(e, (SkillbankError, OSError, ValueError)):
            return self._drop(r, 2, f"error: {e}")
        detail = "".join(traceback.format_exception(e)).rstrip()
        return self._drop(r, 1, f"error: {type(e).__name__}: {e}\n{detail}")
