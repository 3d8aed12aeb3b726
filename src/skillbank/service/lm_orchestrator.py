"""The LM orchestrator (kind "lm"): one process per run, sampling and scoring for GRPO.

Loop for n = first step .. max_steps - 1:
1. wait until a broadcast of step >= n - k is STABLE (k = the trainer's max_async_level),
2. load the newest STABLE broadcast adapter into the slot of a private copy of the base,
3. draw P prompts of the run's domain (train split), sample G completions each with that
   adapter (``skillbank.lm.grpo.collect``: the in-process sampler), score them with the
   domain's verifier, compute group-relative advantages,
4. publish ``rollouts/step_<n>`` (``lm_update.write_lm_rollout``: staged, then renamed).
Stops when the run folder disappears, the run is evicted or rejected, or after its last
rollout; restarted, it continues after its newest rollout.
"""

from __future__ import annotations

import random
import sys
import time
from collections import deque

import torch

from skillbank.lm.domains import get_domain
from skillbank.lm.grpo import GRPOConfig, collect
from skillbank.lm.model import SlotLM
from skillbank.lm.tokenizer import CharTokenizer
from skillbank.lora import peft_io
from skillbank.service.base import load_base, slot_model
from skillbank.service.config import TrainerInfo
from skillbank.service.files import append_jsonl
from skillbank.service.lm_config import LMRunConfig
from skillbank.service.lm_update import write_lm_rollout
from skillbank.service.orchestrator import POLL_S, Stopped, first_step, wait_for_broadcast
from skillbank.service.paths import RunPaths


def load_broadcast(lm: SlotLM, run: RunPaths, step: int) -> bool:
    """Load broadcast ``step`` into slot 0; False if it vanished or is unreadable."""
    folder = run.broadcast(step)
    try:
        peft_io.apply_adapter(lm.mm, 0, peft_io.read_adapter(folder), source=folder)
    except (peft_io.AdapterFormatError, OSError) as e:
        print(f"[orchestrator] broadcast {step} unreadable, retrying: {e}", file=sys.stderr)
        return False
    return True


def run_lm(run: RunPaths, cfg: LMRunConfig, specs: list, info: TrainerInfo) -> int:
    """The LM orchestrator loop (see the module docstring); returns an exit code."""
    tok = CharTokenizer(str(info.base_kwargs["alphabet"]))
    lm = SlotLM(slot_model(load_base(info), info, 1), tok)
    domain = get_domain(cfg.domain)
    gcfg = GRPOConfig(
        prompts_per_step=cfg.prompts_per_step,
        group_size=cfg.group_size,
        scale_std=cfg.scale_std,
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
    )
    k = info.max_async_level
    recent: deque[float] = deque(maxlen=5)  # mean rewards of the last rollouts
    policy_step, n = -1, 0
    try:
        newest = wait_for_broadcast(run, 0)
        n = first_step(run, newest)
        rng = random.Random(cfg.seed * 1_000_003 + n)
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + n)
        print(f"[orchestrator] {run.name}: starting at step {n}", file=sys.stderr, flush=True)
        while n < cfg.max_steps:
            newest = wait_for_broadcast(run, max(0, n - k))
            if newest != policy_step:
                if not load_broadcast(lm, run, newest):
                    time.sleep(POLL_S)
                    continue
                policy_step = newest
            t0 = time.perf_counter()
            examples = [domain.sample(rng) for _ in range(cfg.prompts_per_step)]
            batch, rewards = collect(lm, domain, examples, 0, gcfg, gen)
            reward = float(rewards.mean())
            recent.append(reward)
            meta = {
                "policy_step": policy_step,
                "reward": reward,
                "recent_return": sum(recent) / len(recent),
                "collect_s": time.perf_counter() - t0,
            }
            write_lm_rollout(run, n, batch, meta)
            append_jsonl(run.orchestrator_log, {"step": n, **meta})
            n += 1
    except Stopped as e:
        print(f"[orchestrator] {run.name}: stopped: {e}", file=sys.stderr, flush=True)
        return 2 if "rejected" in str(e) else 0
    except OSError:
        if not run.root.is_dir():
            print(f"[orchestrator] {run.name}: run folder disappeared", file=sys.stderr)
            return 0
        raise
    print(f"[orchestrator] {run.name}: done ({n} rollouts)", file=sys.stderr, flush=True)
    return 0
