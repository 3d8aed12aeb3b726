"""Slow, real processes: an adapter saved by peft on the trainer's base goes through
convert-adapter; the first broadcast equals it exactly; training continues and the return
does not drop below the adapter's own score by more than noise."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from svc_helpers import status, write_orch, write_trainer_toml

from proc_helpers import Procs, read_jsonl, wait_for
from skillbank.algos.normalize import ObsNorm
from skillbank.algos.ppo import PPOConfig
from skillbank.lora import MultiLoraModel, peft_io
from skillbank.service.protocol.base import load_base, slot_model
from skillbank.service.protocol.checkpoint import load_rank_file, norm_from_tensors
from skillbank.service.protocol.info import read_trainer_info
from skillbank.service.protocol.paths import OutPaths, RunPaths
from skillbank.tasks import make_vec_env, parse_task
from skillbank.training.loop import LoraBank, train_ppo
from skillbank.training.rollout import evaluate

pytestmark = pytest.mark.slow

TASK = "cartpole"
EPISODES = 64


def _score(model: MultiLoraModel, norm: ObsNorm, seed: int) -> np.ndarray:
    """Returns of EPISODES episodes with sampled actions (as the rollouts act)."""
    env = make_vec_env([parse_task(TASK)], EPISODES, seed)
    try:
        bank = LoraBank(model, [0])
        with torch.no_grad():
            return evaluate(env, bank, [norm], "discrete", deterministic=False, seed=seed)[0]
    finally:
        env.close()


def _same(x: dict, y: dict) -> bool:
    return x.keys() == y.keys() and all(
        torch.equal(x[k][0], y[k][0]) and torch.equal(x[k][1], y[k][1]) and x[k][2] == y[k][2]
        for k in x
    )


def test_peft_adapter_warm_starts_a_run(tmp_path: Path, procs: Procs) -> None:
    out = tmp_path / "out"
    toml = write_trainer_toml(tmp_path / "trainer.toml", out)
    trainer = procs.start("trainer", "trainer", "--config", str(toml))
    paths = OutPaths(out)
    wait_for(paths.trainer_json.is_file, 60, "trainer.json", [trainer])
    info = read_trainer_info(paths.trainer_json)

    # 1. a skill trained in-process on the trainer's base, saved by peft itself
    model = slot_model(load_base(info), info, 1)
    model.reset_slot(0, 8, 16.0, generator=torch.Generator().manual_seed(0))
    cfg = PPOConfig().replace(learning_rate=3e-3, anneal_lr=False, total_steps=30 * 1024)
    result = train_ppo(LoraBank(model, [0]), [parse_task(TASK)], cfg, "discrete", seed=0)
    norm = result.norms[0]
    own = _score(model, norm, seed=1)
    peft_io.save_adapter(model, 0, tmp_path / "skill", base_model_name_or_path=info.base_dir)
    from peft import PeftModel

    peft_model = PeftModel.from_pretrained(model.plain_base(), str(tmp_path / "skill"))
    peft_model.save_pretrained(str(tmp_path / "peft"))
    given = peft_io.read_adapter(tmp_path / "peft").state
    (tmp_path / "norm.json").write_text(json.dumps(norm.to_dict()))

    # 2. convert, then start the run from it
    run = RunPaths(out, "warm")
    cmd = [sys.executable, "-m", "skillbank.cli.service", "convert-adapter"]
    cmd += [str(tmp_path / "peft"), str(run.root), "--obs-norm", str(tmp_path / "norm.json")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    write_orch(out, "warm", task=TASK, max_steps=15, learning_rate=3e-4)
    orch = procs.start("orch", "orchestrator", "--run", str(run.root))
    wait_for(run.broadcast_stable(0).is_file, 60, "first broadcast", [trainer, orch])
    assert _same(peft_io.read_adapter(run.broadcast(0)).state, given)  # bit-exact
    resumed = [e for e in read_jsonl(paths.trainer_log) if e["event"] == "resumed"]
    assert resumed and resumed[0]["step"] == 0 and "fresh optimiser" in resumed[0]["message"]

    # 3. training continues from the skill's level, not from scratch
    wait_for(lambda: orch.poll() is not None, 240, "run finishes", [trainer])
    assert orch.returncode == 0, procs.log("orch")
    wait_for(lambda: status(out).get("warm", {}).get("state") == "done", 30, "done")
    first = next(r["recent_return"] for r in read_jsonl(run.orchestrator_log) if r["recent_return"])
    assert first > 0.5 * own.mean(), (first, own.mean())  # a fresh adapter scores ~20-50
    final = run.newest_stable_checkpoint()
    assert final == 15
    after = slot_model(load_base(info), info, 1)
    peft_io.load_adapter(after, 0, run.weight(final))
    norm_after = ObsNorm.from_dict(norm_from_tensors(load_rank_file(run.rank_file(final))))
    score = _score(after, norm_after, seed=2)
    # noise: 3 standard errors of the two estimates, but at least the update-to-update
    # fluctuation of PPO returns at this level (10-20%: one 15-update run went 185-219)
    noise = max(3 * math.sqrt(own.var() / EPISODES + score.var() / EPISODES), 0.2 * own.mean())
    assert score.mean() >= own.mean() - noise, (score.mean(), own.mean(), noise)
    during = [r["recent_return"] for r in read_jsonl(run.orchestrator_log) if r["recent_return"]]
    assert np.mean(during) >= own.mean() - noise, (during, own.mean())
    assert Procs.stop(trainer) == 0
