"""Users' own Hugging Face folders (Qwen2 + BPE + chat template, GPT-2 with Conv1D, Llama
with tied embeddings): new-library, sft, rl, eval from the CLI, and the adapters in real
peft (AutoPeftModelForCausalLM and PeftModel) give skillbank's logits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hf_folders import BUILDERS

from skillbank.cli.main import main
from skillbank.lm.adapters import load_lm_adapter
from skillbank.lm.model import SlotLM, load_base

peft = pytest.importorskip("peft")


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    return {name: build(root / name) for name, build in BUILDERS.items()}


def _peft_logits(adapter: Path, base: Path, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    from peft import AutoPeftModelForCausalLM, PeftModel
    from transformers import AutoModelForCausalLM

    auto = AutoPeftModelForCausalLM.from_pretrained(str(adapter)).eval()
    hf = AutoModelForCausalLM.from_pretrained(str(base))
    pm = PeftModel.from_pretrained(hf, str(adapter)).eval()
    with torch.no_grad():
        return auto(input_ids=x).logits, pm(input_ids=x).logits


@pytest.mark.parametrize("arch", sorted(BUILDERS))
def test_hf_folder_through_every_verb(
    arch: str, folders: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    base = folders[arch]
    lib, sft, rl = tmp_path / "lib", tmp_path / "sft", tmp_path / "rl"
    assert main(["lm", "new-library", str(lib), "--base", str(base)]) == 0
    common = ["--domain", "reverse", "--eval-n", "4", "--quiet", "--max-new-tokens", "6"]
    sft_args = ["lm", "sft", *common[:4], "--quiet", "--library", str(lib), "--out", str(sft)]
    assert main([*sft_args, "--steps", "2", "--lr", "0.05", "--batch-size", "4"]) == 0
    rl_args = ["lm", "rl", *common, "--library", str(lib), "--skill", "rev_rl", "--out", str(rl)]
    rl_args += ["--init", str(sft), "--steps", "1", "--prompts", "2", "--group", "2"]
    assert main([*rl_args, "--temperature", "0.7", "--loss-type", "grpo"]) == 0
    capsys.readouterr()
    assert main(["lm", "eval", str(lib), "--domains", "reverse", "--n", "4", "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert set(table["reverse"]) == {"(base)", "reverse", "rev_rl"}

    cfg = json.loads((sft / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == str(base.absolute())
    meta = json.loads((rl / "skill.json").read_text())
    assert meta["config"]["temperature"] == 0.7 and meta["config"]["loss_type"] == "grpo"

    model, tok = load_base(base)
    lm = SlotLM(model, tok, num_slots=1, capacity=8)
    load_lm_adapter(lm, 0, sft)
    x = torch.tensor([tok.prompt_ids("rev:hello=") + tok.encode("olleh")])
    with torch.no_grad():
        ours = lm.logits(x, torch.tensor([0])).logits
        plain = lm.logits(x, torch.tensor([-1])).logits
    auto, pm = _peft_logits(sft, base, x)
    assert (ours - auto).abs().max() <= 1e-4
    assert (ours - pm).abs().max() <= 1e-4
    assert (ours - plain).abs().max() > 1e-3  # the adapter changes the outputs


def test_tied_embeddings_stay_tied_in_a_library(folders: dict[str, Path], tmp_path: Path) -> None:
    from skillbank.library.core import PolicyLibrary
    from skillbank.lm.evaluate import create_lm_library, library_lm

    model, tok = load_base(folders["llama_tied"])
    create_lm_library(tmp_path / "lib", model, tok)
    lm = library_lm(PolicyLibrary.load(tmp_path / "lib"))
    hf = lm.base
    assert hf.lm_head.weight is hf.model.embed_tokens.weight
    assert torch.equal(hf.lm_head.weight, model.lm_head.weight)
    assert lm.tok.eos_ids == tok.eos_ids
    # a stored base without tokenizer files (the service's OUT/base) reads its source folder
    from skillbank.lm.evaluate import base_tokenizer

    config = {"kwargs": {}, "source": str(folders["qwen2"]), "eos_ids": [5]}
    q = base_tokenizer(config, tmp_path / "no_such_base")
    assert q.use_chat_template and 5 in q.eos_ids


def test_special_ids_come_from_the_folder(folders: dict[str, Path]) -> None:
    _, q = load_base(folders["qwen2"])
    im_end = q.hf.convert_tokens_to_ids("<|im_end|>")
    endoftext = q.hf.convert_tokens_to_ids("<|endoftext|>")
    assert q.eos_ids == [im_end, endoftext] and q.pad_id == endoftext and q.bos_id is None
    text = q.hf.decode(q.prompt_ids("rev:ab="))
    assert text.startswith("<|im_start|>user\nrev:ab=") and text.endswith("assistant\n")
    _, plain = load_base(folders["qwen2"], use_chat_template=False)
    assert plain.hf.decode(plain.prompt_ids("rev:ab=")) == "rev:ab="
    _, g = load_base(folders["gpt2"])
    assert g.pad_id == g.eos_id == g.hf.eos_token_id and not g.use_chat_template
    _, ll = load_base(folders["llama_tied"])
    assert ll.prompt_ids("rev:ab=")[0] == ll.bos_id == ll.hf.bos_token_id


def test_target_modules(folders: dict[str, Path], tmp_path: Path, capsys) -> None:
    model, tok = load_base(folders["gpt2"])
    every = SlotLM(model, tok, targets="all-linear")
    assert "lm_head" not in every.mm.layers and len(every.mm.layers) == 8
    model, tok = load_base(folders["qwen2"])
    only = SlotLM(model, tok, targets=["q_proj", "v_proj"])
    assert sorted({p.rsplit(".", 1)[1] for p in only.mm.layers}) == ["q_proj", "v_proj"]
    base = str(folders["qwen2"])
    args = ["lm", "new-library", str(tmp_path / "lib"), "--base", base]
    assert main([*args, "--target-modules", "q_proj,nope"]) == 2
    err = capsys.readouterr().err
    assert "field 'target_modules': no Linear module named 'nope'" in err
