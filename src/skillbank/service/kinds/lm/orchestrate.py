"""The LM orchestrator (kind "lm"): one process per run, sampling and scoring for GRPO.

Loop for n = first step .. max_steps - 1:
1. wait until a broadcast of step >= n - k is STABLE (k = the trainer's max_async_level),
2. load the newest STABLE broadcast adapter into the slot of a private copy of the base,
3. draw P prompts of the run's task (the domain's train split, or the user's dataset), sample
   G completions each with that adapter (``skillbank.lm.grpo.collect``: the in-process
   sampler, at the run's temperature / top-p / top-k / stop strings), score them with the
   domain's verifier or the dataset's reward functions, compute group-relative advantages,
4. publish ``rollouts/step_<n>`` (``lm_update.write_lm_rollout``: staged, then renamed).
Stops after its last rollout, or with ``protocol.watch.Stopped`` when the run folder
disappears or the run is evicted or rejected (``orchestrator.main`` reports it);
restarted, it continues after its newest rollout.
"""

from __future__ import annotations

import random
import sys
import time
from collections import deque
from pathlib import Path

import torch

from skillbank.io import read_json
from skillbank.lm.evaluate import base_tokenizer
from skillbank.lm.grpo import GRPOConfig, collect
from skillbank.lm.model import SlotLM
from skillbank.lm.rewards import RewardError
from skillbank.lm.tokenizer import LMTokenizer, TokenizerError
from skillbank.lora import peft_io
from skillbank.service.kinds.fields import mix_seed
from skillbank.service.kinds.lm.config import LMRunConfig, run_task
from skillbank.service.kinds.lm.update import write_lm_rollout
from skillbank.service.protocol.base import load_base, slot_model
from skillbank.service.protocol.files import append_jsonl
from skillbank.service.protocol.info import TrainerInfo
from skillbank.service.protocol.paths import BaseFiles, RunPaths
from skillbank.service.protocol.watch import (
    POLL_S,
    first_step,
    read_run_id,
    wait_for_broadcast,
)


def load_broadcast(lm: SlotLM, run: RunPaths, step: int) -> bool:
    """Load broadcast ``step`` into slot 0; False if it vanished or is unreadable."""
    folder = run.broadcast(step)
    try:
        peft_io.apply_adapter(lm.mm, 0, peft_io.read_adapter(folder), source=folder)
    except (peft_io.AdapterFormatError, OSError) as e:
        print(f"[orchestrator] broadcast {step} unreadable, retrying: {e}", file=sys.stderr)
        return False
    return True


def run_tokenizer(info: TrainerInfo, cfg: LMRunConfig) -> LMTokenizer:
    """The trainer base's tokenizer (``OUT/base/tokenizer/``), chat template as ``cfg`` says."""
    base_dir = Path(info.base_dir)
    tok = base_tokenizer(read_json(BaseFiles(base_dir).config), base_dir)
    if cfg.chat_template is not None:
        if cfg.chat_template and not getattr(tok.hf, "chat_template", None):
            raise TokenizerError(
                f"{base_dir}: field 'chat_template': the base's tokenizer has no chat template"
            )
        tok.use_chat_template = cfg.chat_template
    return tok


def sampling_config(cfg: LMRunConfig) -> GRPOConfig:
    """The GRPO settings an LM orchestrator samples and scores with."""
    return GRPOConfig(
        prompts_per_step=cfg.prompts_per_step,
        group_size=cfg.group_size,
        scale_std=cfg.scale_std,
        scale_rewards=cfg.scale_rewards,
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        top_k=cfg.top_k,
        stop=list(cfg.stop),
    )


def run_lm(run: RunPaths, cfg: LMRunConfig, specs: list[str], info: TrainerInfo) -> int:
    """The LM orchestrator loop (see the module docstring); returns an exit code."""
    lm = SlotLM(slot_model(load_base(info), info, 1), run_tokenizer(info, cfg))
    domain = run_task(cfg)
    gcfg = sampling_config(cfg)
    k = info.max_async_level
    recent: deque[float] = deque(maxlen=5)  # mean rewards of the last rollouts
    policy_step, n = -1, 0
    newest = wait_for_broadcast(run, 0)
    run_id = read_run_id(run)  # written at admission, before broadcast 0
    n = first_step(run, newest)
    rng = random.Random(mix_seed(cfg.seed, 1_000_003, n))
    gen = torch.Generator().manual_seed(mix_seed(cfg.seed, 1_000_003, n))
    print(f"[orchestrator] {run.name}: starting at step {n}", file=sys.stderr, flush=True)
    while n < cfg.max_steps:
        newest = wait_for_broadcast(run, max(0, n - k), run_id=run_id)
        if newest != policy_step:
            if not load_broadcast(lm, run, newest):
                time.sleep(POLL_S)
                continue
            policy_step = newest
        t0 = time.perf_counter()
        examples = [domain.sample(rng) for _ in range(cfg.prompts_per_step)]
        try:
            batch, rewards = collect(lm, domain, examples, 0, gcfg, gen)
        except RewardError as e:  # the user's function failed on sampled text: this run only
            print(f"[orchestrator] {run.name}: step {n}: {e}", file=sys.stderr, flush=True)
            return 1
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
    print(f"[orchestrator] {run.name}: done ({n} rollouts)", file=sys.stderr, flush=True)
    return 0
