"""LM adapters in PEFT's format: both directions against real peft, and wrong bases."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lm_helpers import TINY

from skillbank.lm.adapters import init_slot, load_lm_adapter, save_lm_adapter
from skillbank.lm.model import (
    LM_TARGETS,
    ArchConfig,
    BaseMismatchError,
    SlotLM,
    load_base,
    new_base,
)
from skillbank.lm.tokenizer import CharTokenizer
from skillbank.lora.peft_io import AdapterFormatError

peft = pytest.importorskip("peft")


def _randomize(lm: SlotLM, slot: int, seed: int) -> None:
    init_slot(lm, slot, rank=4, seed=seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in lm.mm.layers.values():
            b = torch.randn(layer.lora_B[slot].shape, generator=g) * 0.2
            layer.lora_B[slot].copy_(b)


def test_skillbank_adapter_loads_in_peft(tiny_base_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    base, tok = load_base(tiny_base_dir)
    lm = SlotLM(base, tok, num_slots=2, capacity=8)
    _randomize(lm, 1, seed=3)
    save_lm_adapter(lm, 1, tmp_path / "ad", str(tiny_base_dir), {"domain": "reverse"})
    x = torch.tensor([tok.prompt_ids("rev:hello=olleh")])
    ours = lm.logits(x, torch.tensor([1])).logits
    hf = AutoModelForCausalLM.from_pretrained(str(tiny_base_dir))
    pm = peft.PeftModel.from_pretrained(hf, str(tmp_path / "ad")).eval()
    with torch.no_grad():
        theirs = pm(input_ids=x).logits
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert not torch.allclose(ours, lm.logits(x, torch.tensor([-1])).logits, atol=1e-3)


def test_peft_adapter_loads_in_a_slot(tiny_base_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(str(tiny_base_dir))
    cfg = peft.LoraConfig(r=4, lora_alpha=8, target_modules=LM_TARGETS, init_lora_weights=False)
    pm = peft.get_peft_model(hf, cfg).eval()
    pm.save_pretrained(str(tmp_path / "peft_ad"))
    base, tok = load_base(tiny_base_dir)
    lm = SlotLM(base, tok, num_slots=2, capacity=8)
    meta = load_lm_adapter(lm, 0, tmp_path / "peft_ad")
    assert meta == {}
    x = torch.tensor([tok.prompt_ids("sort:dcba=abcd")])
    with torch.no_grad():
        assert torch.allclose(
            lm.logits(x, torch.tensor([0])).logits, pm(input_ids=x).logits, atol=1e-5
        )


def test_adapter_for_a_different_base(tiny_lm: SlotLM, tmp_path: Path) -> None:
    _randomize(tiny_lm, 0, seed=1)
    save_lm_adapter(tiny_lm, 0, tmp_path / "ad", "tiny")
    tok = CharTokenizer()
    wide = SlotLM(
        new_base(
            ArchConfig(
                hidden_size=48, layers=2, heads=4, kv_heads=2, intermediate_size=64, max_len=40
            ),
            tok,
        ),
        tok,
    )
    with pytest.raises(BaseMismatchError, match=r"skill.json: field 'base.hidden_size' is 32"):
        load_lm_adapter(wide, 0, tmp_path / "ad")
    tok2 = CharTokenizer("abcdefghijklmnopqrstuvwxyz0123456789 :=+-?>|,;")
    other_vocab = SlotLM(new_base(TINY, tok2), tok2)
    with pytest.raises(
        BaseMismatchError, match=r"field 'base.vocab_size' is 48, but the base has 49"
    ):
        load_lm_adapter(other_vocab, 0, tmp_path / "ad")
    (tmp_path / "ad" / "skill.json").unlink()  # a bare PEFT adapter: shapes are checked
    with pytest.raises(
        AdapterFormatError, match=r"adapter_model.safetensors: field '.*\.lora_[AB]\.weight': shape"
    ):
        load_lm_adapter(wide, 0, tmp_path / "ad")
    slot_before = wide.mm.slot_state(0)
    assert all(a.shape[0] == 0 for a, _, _ in slot_before.values())  # slot untouched


def test_packaged_base(tmp_path: Path) -> None:
    """The committed tiny-lm loads with from_pretrained, is small, knows the formats (stops
    its answers) but not the skills, and its adapters load in peft."""
    from transformers import AutoModelForCausalLM

    from skillbank.lm.domains import get_domain
    from skillbank.lm.evaluate import score
    from skillbank.lm.model import DEFAULT_BASE

    files = sorted(p.name for p in DEFAULT_BASE.iterdir())
    assert "model.safetensors" in files and "tokenizer.json" in files
    assert sum(p.stat().st_size for p in DEFAULT_BASE.iterdir()) < 10 * 2**20
    base, tok = load_base()
    n = sum(p.numel() for p in base.parameters())
    assert 0.5e6 <= n <= 5e6
    lm = SlotLM(base, tok, num_slots=1, capacity=8)
    assert score(lm, -1, get_domain("reverse"), n=40) < 0.4
    _randomize(lm, 0, seed=5)
    save_lm_adapter(lm, 0, tmp_path / "ad", str(DEFAULT_BASE))
    pm = peft.PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(str(DEFAULT_BASE)), str(tmp_path / "ad")
    ).eval()
    x = torch.tensor([tok.prompt_ids("caesar:abz=bca")])
    with torch.no_grad():
        assert torch.allclose(
            lm.logits(x, torch.tensor([0])).logits, pm(input_ids=x).logits, atol=1e-4
        )
