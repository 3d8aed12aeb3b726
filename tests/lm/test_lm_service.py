"""LM runs in the multi-run service, in-process: config checks, rollouts, batched GRPO
update over two runs, a bad rollout, and convert-adapter with LM adapters."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from lm_helpers import TINY

from skillbank.config import ConfigError
from skillbank.lm.adapters import init_slot, save_lm_adapter
from skillbank.lm.domains import get_domain
from skillbank.lm.grpo import GRPOConfig, collect
from skillbank.lm.model import ArchConfig, SlotLM, load_base, new_base, save_base
from skillbank.lm.tokenizer import CharTokenizer
from skillbank.service.kinds import load_run_config
from skillbank.service.kinds.lm.update import read_lm_rollout, write_lm_rollout
from skillbank.service.protocol.paths import RunPaths
from skillbank.service.protocol.rollout_io import RolloutError
from skillbank.service.tools.convert import convert_adapter
from skillbank.service.trainer.config import TrainerConfig
from skillbank.service.trainer.loop import Trainer


def _orch(out: Path, name: str, body: str) -> RunPaths:
    run = RunPaths(out, name)
    run.control.mkdir(parents=True, exist_ok=True)
    run.orch_toml.write_text(body)
    return run


def _trainer(out: Path, base_dir: Path) -> Trainer:
    cfg = TrainerConfig(output_dir=str(out), lm_base=str(base_dir), max_concurrent_runs=2)
    return Trainer(cfg, out / "trainer.toml")


def _rollout(trainer: Trainer, run: RunPaths, step: int, domain: str, seed: int) -> float:
    """What the LM orchestrator does for one step, with the newest broadcast."""
    from skillbank.lm.adapters import load_lm_adapter

    lm = SlotLM(trainer.model.plain_base(), CharTokenizer(), num_slots=1, capacity=16)
    load_lm_adapter(lm, 0, run.broadcast(run.newest_stable_broadcast() or 0))
    cfg = GRPOConfig(group_size=4, max_new_tokens=6)
    exs = [get_domain(domain).sample(random.Random(seed)) for _ in range(3)]
    batch, rewards = collect(lm, get_domain(domain), exs, 0, cfg, torch.Generator())
    write_lm_rollout(run, step, batch, {"policy_step": step, "recent_return": 0.1})
    return float(rewards.mean())


def test_two_lm_runs_one_batched_update(tiny_base_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    t = _trainer(out, tiny_base_dir)
    body = 'kind = "lm"\ndomain = "{d}"\nmax_steps = 2\nprompts_per_step = 3\ngroup_size = 4\n'
    runs = {d: _orch(out, d, body.format(d=d)) for d in ("reverse", "sort")}
    bad = _orch(out, "bad", 'kind = "lm"\ndomain = "revers"\n')
    t.tick()
    assert "field 'domain': unknown domain 'revers'" in bad.config_error.read_text()
    assert all(r.broadcast_stable(0).is_file() for r in runs.values())
    before = {d: t.model.slot_state(t.registry.live[d].slot) for d in runs}
    for d, r in runs.items():
        _rollout(t, r, 0, d, seed=1)
    assert t.tick()
    t.io.flush()  # broadcasts are written by the trainer's I/O thread
    for d, r in runs.items():
        live = t.registry.live[d]
        assert live.step == 1 and r.broadcast_stable(1).is_file()
        after = t.model.slot_state(live.slot)
        moved = [not torch.equal(after[k][1], before[d][k][1]) for k in after]
        assert any(moved), f"run {d}: adapter unchanged by the update"
    log = (out / "run_reverse" / "logs").glob("*.jsonl")
    assert any('"runs_in_update": 2.0' in p.read_text() for p in log)
    # a rollout with wrong token ids is rejected (the run goes on), the other is trained
    _rollout(t, runs["sort"], 1, "sort", seed=2)
    r = runs["reverse"]
    _rollout(t, r, 1, "reverse", seed=2)
    import safetensors.torch as st

    tensors = st.load_file(str(r.rollout_tensors(1)))
    tensors["tokens"][0, 1] = 999
    st.save_file(tensors, str(r.rollout_tensors(1)))
    t.tick()
    t.io.flush()
    assert r.rejected_rollout(1).exists()
    rejected = t.out.trainer_log.read_text()
    assert "rollout_rejected" in rejected and "key 'tokens': token ids outside [0, 48)" in rejected
    assert t.registry.parked["sort"].state == "done"
    t.close()


def test_lm_rollout_checks(tiny_base_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    t = _trainer(out, tiny_base_dir)
    run = _orch(out, "r", 'kind = "lm"\ndomain = "add"\n')
    cfg, specs = load_run_config(run.orch_toml, t.info)
    assert specs == ["add"]
    lm = SlotLM(t.model.plain_base(), CharTokenizer(), 1, 8)
    init_slot(lm, 0, 4)
    ex = get_domain("add").examples(2)
    batch, _ = collect(lm, get_domain("add"), ex, 0, GRPOConfig(group_size=2), torch.Generator())
    for i, (key, value, msg) in enumerate(
        [
            ("mask", batch["mask"].float(), "expected bool"),
            ("logp", batch["logp"].abs(), "log-probabilities must be <= 0"),
            ("advantages", batch["advantages"] * float("nan"), "NaN"),
            ("tokens", torch.zeros(4, 200, dtype=torch.long), "2..40 tokens"),
        ]
    ):
        bad = {**batch, key: value}
        if key == "logp":
            bad["logp"] = bad["logp"] + bad["mask"].float()
        write_lm_rollout(run, i, bad, {"policy_step": 0})
        with pytest.raises(RolloutError, match=f"rollout.safetensors: key '{key}': .*{msg}"):
            read_lm_rollout(run, i, cfg, t.info)
    t.close()


def test_lm_run_on_a_control_trainer_is_rejected(tmp_path: Path) -> None:
    from skillbank.service.protocol.paths import OutPaths
    from skillbank.service.trainer.base import resolve_base

    out = tmp_path / "out"
    out.mkdir()
    cfg = TrainerConfig(output_dir=str(out), base_task="cartpole")
    _, info = resolve_base(cfg, OutPaths(out), out / "trainer.toml")
    run = _orch(out, "r", 'kind = "lm"\n')
    with pytest.raises(ConfigError, match="field 'kind': runs of kind 'lm' need a causal-LM"):
        load_run_config(run.orch_toml, info)


def test_convert_lm_adapter(tiny_base_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    t = _trainer(out, tiny_base_dir)
    base, tok = load_base(tiny_base_dir)
    lm = SlotLM(base, tok, 1, 8)
    init_slot(lm, 0, 4, seed=3)
    save_lm_adapter(lm, 0, tmp_path / "sft", str(tiny_base_dir), {"domain": "reverse"})
    folder = convert_adapter(tmp_path / "sft", out / "run_a")
    assert (folder / "STABLE").is_file()
    # an adapter made for a wider base: refused, naming skill.json and the field
    wide_arch = ArchConfig(
        hidden_size=48, layers=2, heads=4, kv_heads=2, intermediate_size=64, max_len=TINY.max_len
    )
    wide = SlotLM(new_base(wide_arch, tok), tok, 1, 8)
    init_slot(wide, 0, 4)
    save_lm_adapter(wide, 0, tmp_path / "wide", "wide")
    with pytest.raises(ConfigError, match=r"skill.json: field 'base.hidden_size' is 48"):
        convert_adapter(tmp_path / "wide", out / "run_b")
    assert not (out / "run_b" / "checkpoints").exists()
    save_base(base, tok, tmp_path / "unused")  # the saved base folder loads again
    t.close()


def test_lm_run_whose_prompts_exceed_the_context(tiny_base_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    t = _trainer(out, tiny_base_dir)
    info = t.info.replace(base_kwargs={**t.info.base_kwargs, "max_position_embeddings": 8})
    run = _orch(out, "r", 'kind = "lm"\ndomain = "reverse"\n')
    with pytest.raises(ConfigError, match="field 'domain': prompts of 'reverse' take up to 15"):
        load_run_config(run.orch_toml, info)
    t.close()


def test_runs_with_different_loss_settings_train_in_one_tick(
    tiny_base_dir: Path, tmp_path: Path
) -> None:
    from skillbank.service.kinds.lm.update import group_config

    out = tmp_path / "out"
    t = _trainer(out, tiny_base_dir)
    body = 'kind = "lm"\ndomain = "{d}"\nmax_steps = 2\nprompts_per_step = 3\ngroup_size = 4\n'
    extra = {
        "reverse": 'loss_type = "grpo"\n',
        "sort": "clip_eps_high = 0.28\nratio_mask_low = 0.125\nratio_mask_high = 8.0\n",
    }
    runs = {d: _orch(out, d, body.format(d=d) + extra[d]) for d in extra}
    t.tick()
    before = {d: t.model.slot_state(t.registry.live[d].slot) for d in runs}
    for d, r in runs.items():
        _rollout(t, r, 0, d, seed=1)
    assert t.tick()
    t.io.flush()
    for d, r in runs.items():
        live = t.registry.live[d]
        assert live.step == 1 and r.broadcast_stable(1).is_file()
        after = t.model.slot_state(live.slot)
        assert any(not torch.equal(after[k][1], before[d][k][1]) for k in after), d
    g = group_config((0.28, 0.125, 8.0))
    assert (g.clip_eps_high, g.ratio_mask_low, g.ratio_mask_high) == (0.28, 0.125, 8.0)
    g = group_config((0.0, 0.0, float("inf")))
    assert (g.clip_eps_high, g.ratio_mask_low, g.ratio_mask_high) == (None, None, None)
    t.close()
