"""GRPO maths and sampling options: temperature in sampling and scoring, TRL's loss types
and advantage scaling, top-k / top-p / stop strings, and ``lm pretrain`` on few steps."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from skillbank.algos.grpo import group_advantages, loss_weights, ratio_mask
from skillbank.algos.slot_adam import SlotAdam
from skillbank.cli.main import main
from skillbank.lm.adapters import init_slot
from skillbank.lm.domains import get_domain
from skillbank.lm.grpo import GRPOConfig, collect, grpo_step, merge_batches
from skillbank.lm.model import SlotLM
from skillbank.lm.sample import filter_logits, generate, token_logprobs


def _perturb(lm: SlotLM, slot: int, seed: int) -> None:
    init_slot(lm, slot, rank=4, seed=seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in lm.mm.layers.values():
            layer.lora_B[slot].copy_(torch.randn(layer.lora_B[slot].shape, generator=g) * 0.3)


@pytest.mark.parametrize("temperature", [0.7, 1.5])
def test_first_ratio_is_one_at_any_temperature(tiny_lm: SlotLM, temperature: float) -> None:
    _perturb(tiny_lm, 0, seed=1)
    cfg = GRPOConfig(group_size=4, max_new_tokens=8, temperature=temperature, update_epochs=1)
    d = get_domain("reverse")
    batch, _ = collect(tiny_lm, d, d.examples(3), 0, cfg, torch.Generator().manual_seed(0))
    slots = torch.zeros(batch["tokens"].shape[0], dtype=torch.long)
    lp = token_logprobs(tiny_lm.mm, batch["tokens"], slots, temperature)
    m = batch["mask"]
    assert (lp[m] - batch["logp"][m]).abs().max() < 1e-4
    wrong = token_logprobs(tiny_lm.mm, batch["tokens"], slots, 1.0)
    assert (wrong[m] - batch["logp"][m]).abs().max() > 1e-2  # the bug this guards against
    opt = SlotAdam(tiny_lm.slot_parameters(), tiny_lm.mm.num_slots, lr=1e-3)
    opt.set_active([0])
    stats = grpo_step(tiny_lm.mm, opt, merge_batches([batch], [0]), cfg)
    assert stats["ratio_mean"] == pytest.approx(1.0, abs=1e-5) and stats["clip_frac"] == 0.0


def test_loss_types_and_reward_scaling() -> None:
    slot = torch.tensor([0, 0, 1])
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]).bool()
    assert torch.allclose(loss_weights(slot, mask, "dapo"), torch.tensor([1 / 6, 1 / 6, 1.0]))
    assert torch.equal(loss_weights(slot, mask, "bnpo"), loss_weights(slot, mask, "dapo"))
    assert torch.allclose(loss_weights(slot, mask, "grpo"), torch.tensor([1 / 4, 1 / 8, 1.0]))
    dr = loss_weights(slot, mask, "dr_grpo", max_completion_length=8)
    assert torch.allclose(dr, torch.tensor([1 / 16, 1 / 16, 1 / 8]))
    with pytest.raises(ValueError, match="loss_type 'ppo'"):
        loss_weights(slot, mask, "ppo")  # type: ignore[arg-type]
    r = torch.tensor([1.0, 0.0, 0.5, 0.5])
    assert torch.allclose(group_advantages(r, 2), torch.tensor([0.5, -0.5, 0.0, 0.0]))
    batch = group_advantages(r, 2, scale="batch")
    assert torch.allclose(batch, torch.tensor([0.5, -0.5, 0.0, 0.0]) / (r.std() + 1e-4))
    group = group_advantages(r, 2, scale="group")
    assert group[0] > 0.7 and group[2] == 0
    logp, old = torch.tensor([[0.0, 1.0, -2.0]]), torch.zeros(1, 3)
    kept = ratio_mask(logp, old, torch.ones(1, 3).bool(), 0.5, 2.0)
    assert kept.tolist() == [[True, False, False]]


def test_grpo_config_is_validated() -> None:
    from skillbank.config import ConfigError, validate

    with pytest.raises(ConfigError, match="field 'loss_type'"):
        validate(GRPOConfig, {"loss_type": "ppo"}, "run.toml")
    with pytest.raises(ConfigError, match="field 'temperature'"):
        validate(GRPOConfig, {"temperature": 0.0}, "run.toml")


def test_top_k_top_p_and_stop_strings(tiny_lm: SlotLM) -> None:
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0]])
    assert torch.isinf(filter_logits(logits, top_k=2)).tolist() == [[False, False, True, True]]
    p = torch.softmax(logits, -1)[0]
    kept = ~torch.isinf(filter_logits(logits, top_p=float(p[0]) + 1e-3))
    assert kept.tolist() == [[True, True, False, False]]
    _perturb(tiny_lm, 0, seed=2)
    prompts = ["rev:abcd=", "sort:dcba=", "add:1+2="]
    greedy = generate(tiny_lm, prompts, 0, 8, greedy=True)
    k1 = generate(tiny_lm, prompts, 0, 8, top_k=1, generator=torch.Generator().manual_seed(0))
    assert k1.completions == greedy.completions
    text = greedy.completions[0]
    assert len(text) >= 3, text
    stop = text[2]
    cut = generate(tiny_lm, prompts[:1], 0, 8, greedy=True, stop=[stop])
    assert cut.completions[0] == text[: text.index(stop)]
    assert int(cut.mask.sum()) == text.index(stop) + 1  # tokens up to the stop string


def test_pretrain_with_few_steps(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "base"
    args = ["lm", "pretrain", "--out", str(out), "--steps", "20", "--hidden", "16"]
    assert main([*args, "--layers", "1", "--quiet"]) == 0
    tok = AutoTokenizer.from_pretrained(str(out), local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(str(out), local_files_only=True)
    assert tok.decode(tok("rev:ab=").input_ids, skip_special_tokens=True) == "rev:ab="
    assert model.config.vocab_size == len(tok)
