"""Issue 13 in the service's ``lm`` runs: any local Hugging Face causal-LM folder as the
trainer's ``lm_base``, a user's JSONL dataset and reward module (written here, outside the
package), the run's sampling and loss options, and the first on-policy ratio at T != 1."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import torch
from hf_folders import BUILDERS

from skillbank.lm.grpo import collect, merge_batches
from skillbank.lm.model import SlotLM
from skillbank.lm.sample import token_logprobs
from skillbank.service.kinds import load_run_config
from skillbank.service.kinds.lm.config import run_task
from skillbank.service.kinds.lm.orchestrate import run_lm, run_tokenizer, sampling_config
from skillbank.service.kinds.lm.update import read_lm_rollout, write_lm_rollout
from skillbank.service.protocol.paths import RunPaths
from skillbank.service.trainer.config import TrainerConfig
from skillbank.service.trainer.loop import Trainer

REWARDS = '''
def overlap(completions, completion, **kwargs):
    """Share of the reference's characters found in the completion."""
    return [len(set(c) & set(r)) / max(1, len(set(r))) for c, r in zip(completions, completion)]


def broken(completions, **kwargs):
    raise RuntimeError("my bug")
'''


def _user_files(tmp: Path) -> tuple[Path, Path]:
    """A JSONL dataset (TRL's prompt / completion) and a reward module, outside the package."""
    user = tmp / "user"
    user.mkdir()
    words = ["abc", "cab", "bca", "acb", "bac", "cba"]
    rows = [{"prompt": f"reverse {w} =", "completion": w[::-1]} for w in words]
    data = user / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    module = user / "my_rewards.py"
    module.write_text(REWARDS)
    return data, module


def _orch(out: Path, name: str, body: str) -> RunPaths:
    run = RunPaths(out, name)
    run.control.mkdir(parents=True, exist_ok=True)
    run.orch_toml.write_text(body)
    return run


def _body(data: Path, reward: str, **extra: object) -> str:
    fields = {
        "kind": "lm",
        "dataset": str(data),
        "reward": [reward],
        "max_steps": 2,
        "prompts_per_step": 2,
        "group_size": 2,
        "max_new_tokens": 4,
        "rank": 4,
        **extra,
    }
    return "".join(f"{k} = {json.dumps(v)}\n" for k, v in fields.items())


@pytest.mark.parametrize("arch", sorted(BUILDERS))
def test_lm_run_on_a_hf_folder_with_user_data(arch: str, tmp_path: Path) -> None:
    folder = BUILDERS[arch](tmp_path / arch)
    data, module = _user_files(tmp_path)
    out = tmp_path / "out"
    cfg = TrainerConfig(output_dir=str(out), lm_base=str(folder), max_concurrent_runs=2)
    t = Trainer(cfg, out / "trainer.toml")
    base_cfg = json.loads((out / "base" / "config.json").read_text())
    assert (out / "base" / "tokenizer" / "tokenizer.json").is_file()
    assert base_cfg["eos_ids"] and base_cfg["target_modules"]
    if arch == "gpt2":
        assert any(m.endswith("c_attn") for m in base_cfg["target_modules"])
    good = _orch(out, "good", _body(data, f"{module}:overlap", temperature=0.7, top_k=20))
    bad = _orch(out, "bad", _body(data, f"{module}:broken"))
    t.tick()
    t.io.flush()
    err = bad.config_error.read_text()
    assert "orch.toml: field 'reward'" in err and "raised RuntimeError: my bug" in err, err
    assert "good" in t.registry.live and good.broadcast_stable(0).is_file()
    slot = t.registry.live["good"].slot
    before = t.model.slot_state(slot)
    run_cfg, specs = load_run_config(good.orch_toml, t.info)
    codes: list[int] = []
    orch = threading.Thread(target=lambda: codes.append(run_lm(good, run_cfg, specs, t.info)))
    orch.start()
    deadline = time.monotonic() + 120
    while orch.is_alive() and time.monotonic() < deadline:
        t.tick()
        t.io.flush()
        time.sleep(0.05)
    orch.join(timeout=5)
    assert codes == [0]
    for _ in range(20):  # the last rollout is trained after the orchestrator stops
        t.tick()
        t.io.flush()
        if good.broadcast_stable(2).is_file():
            break
        time.sleep(0.05)
    assert good.broadcast_stable(2).is_file()
    logged = [json.loads(x) for x in good.orchestrator_log.read_text().splitlines()]
    assert [x["step"] for x in logged] == [0, 1]
    assert all(0.0 <= x["reward"] <= 1.0 for x in logged)
    after = t.model.slot_state(slot)
    assert any(not torch.equal(after[k][1], before[k][1]) for k in after)
    t.close()


def test_first_ratio_is_one_at_temperature_07(tiny_base_dir: Path, tmp_path: Path) -> None:
    data, module = _user_files(tmp_path)
    out = tmp_path / "out"
    cfg = TrainerConfig(output_dir=str(out), lm_base=str(tiny_base_dir))
    t = Trainer(cfg, out / "trainer.toml")
    run = _orch(out, "r", _body(data, f"{module}:overlap", temperature=0.7, loss_type="dr_grpo"))
    t.tick()
    t.io.flush()
    run_cfg, _ = load_run_config(run.orch_toml, t.info)
    slot = t.registry.live["r"].slot
    lm = SlotLM(t.model, run_tokenizer(t.info, run_cfg))
    task = run_task(run_cfg)
    gen = torch.Generator().manual_seed(0)
    batch, _ = collect(lm, task, task.train[:2], slot, sampling_config(run_cfg), gen)
    write_lm_rollout(run, 0, batch, {"policy_step": 0})
    ro = read_lm_rollout(run, 0, run_cfg, t.info)
    b = merge_batches([ro.tensors], [slot])
    mask = b["mask"]
    with torch.no_grad():
        at_t = token_logprobs(t.model, b["tokens"], b["slot"], b["temperature"])
        at_1 = token_logprobs(t.model, b["tokens"], b["slot"], 1.0)
    assert float((at_t - b["logp"])[mask].abs().max()) < 1e-4
    assert float((at_1 - b["logp"])[mask].abs().max()) > 1e-3  # the test can fail
    rows = b["tokens"].shape[0]  # dr_grpo: 1 / (completions x max_new_tokens) per row
    assert torch.allclose(b["weight"], torch.full((rows,), 1.0 / (rows * 4)))
    t.close()


BAD_REWARDS = """
def short(completions, **kwargs):
    return [1.0]


def nan(completions, **kwargs):
    return [float("nan")] * len(completions)


def picky(completions, completion, **kwargs):
    if any(c not in completion for c in completions):
        raise ValueError("unexpected text")
    return [1.0] * len(completions)
"""


def test_bad_user_data_rejects_only_that_run(tiny_base_dir: Path, tmp_path: Path) -> None:
    data, module = _user_files(tmp_path)
    bad_mod = tmp_path / "user" / "bad_rewards.py"
    bad_mod.write_text(BAD_REWARDS)
    no_col = tmp_path / "user" / "q.jsonl"
    no_col.write_text('{"question": "x"}\n')
    out = tmp_path / "out"
    t = Trainer(TrainerConfig(output_dir=str(out), lm_base=str(tiny_base_dir)), out / "t.toml")
    cases = {
        "short": (_body(data, f"{bad_mod}:short"), "field 'reward'", "returned 1 values"),
        "nan": (_body(data, f"{bad_mod}:nan"), "field 'reward'", "not finite"),
        "missing": (_body(data, f"{module}:nope"), "field 'reward'", "no attribute 'nope'"),
        "column": (_body(no_col, f"{module}:overlap"), "field 'dataset'", "no column 'prompt'"),
        "noreward": ('kind = "lm"\nreward = ["m:f"]\n', "field 'reward'", "need a 'dataset'"),
        "mask": (
            _body(data, f"{module}:overlap", ratio_mask_low=2.0, ratio_mask_high=1.0),
            "field 'ratio_mask_low'",
            "must be < ratio_mask_high",
        ),
    }
    runs = {name: _orch(out, name, body) for name, (body, _, _) in cases.items()}
    good = _orch(out, "good", _body(data, f"{module}:overlap"))
    t.tick()
    for name, (_, field, msg) in cases.items():
        err = runs[name].config_error.read_text()
        assert f"orch.toml: {field}" in err and msg in err, (name, err)
    assert "good" in t.registry.live and not good.config_error.exists()
    t.close()


def test_reward_failing_on_sampled_text_stops_that_orchestrator(
    tiny_base_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, _ = _user_files(tmp_path)
    bad_mod = tmp_path / "user" / "bad_rewards.py"
    bad_mod.write_text(BAD_REWARDS)
    out = tmp_path / "out"
    t = Trainer(TrainerConfig(output_dir=str(out), lm_base=str(tiny_base_dir)), out / "t.toml")
    run = _orch(out, "r", _body(data, f"{bad_mod}:picky"))
    t.tick()
    t.io.flush()
    assert not run.config_error.exists()  # the reference completions pass the check
    cfg, specs = load_run_config(run.orch_toml, t.info)
    assert run_lm(run, cfg, specs, t.info) == 1
    err = capsys.readouterr().err
    assert "r: step 0: reward function" in err and "raised ValueError: unexpected text" in err
    t.close()
