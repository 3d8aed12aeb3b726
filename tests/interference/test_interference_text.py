"""The text setting on a tiny random LM (no training): loss, neurons, HVP, full weights."""

from pathlib import Path

import pytest
import torch

from skillbank.interference.hessian import gradient, hvp, loss_value
from skillbank.interference.measures import neuron_change
from skillbank.interference.text import TextOptions, text_setting


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from skillbank.lm.model import ArchConfig, new_base, save_base
    from skillbank.lm.tokenizer import CharTokenizer

    tok = CharTokenizer()
    arch = ArchConfig(hidden_size=16, layers=2, heads=2, kv_heads=2, intermediate_size=24)
    folder = tmp_path_factory.mktemp("lm") / "base"
    save_base(new_base(arch, tok, seed=0), tok, folder)
    return folder


def _opts(base: Path, mode: str) -> TextOptions:
    return TextOptions(
        domains=["reverse", "sort"],
        mode=mode,
        base=base,
        rank=4,
        loss_samples=6,
        eval_n=4,
        warmup_sft=0,
    )


def test_adapter_loss_matches_answer_nll_and_has_curvature(base_dir: Path) -> None:
    from skillbank.lm import answer_nll

    torch.manual_seed(0)
    st = text_setting(_opts(base_dir, "shared-adapter"))
    assert all("lora_" in k for k in st.params)
    with torch.no_grad():  # a non-zero adapter (B starts at 0)
        for k, p in st.params.items():
            if k.endswith("lora_B"):
                p.normal_(0, 0.05)
    loss, data = st.domains[0].make_loss()
    td = st.domains[0].train.__self__  # type: ignore[attr-defined]  # the TextDomain
    exs = td.domain.examples(6, "train", seed=777)  # the loss's examples (index 0)
    assert loss_value(loss, st.theta()) == pytest.approx(answer_nll(td.m.lm, 0, exs), rel=1e-5)
    assert data["tokens"].shape == data["mask"].shape
    theta = st.theta()
    g = gradient(loss, theta)
    hg = hvp(loss, theta, g)
    assert sum(float((hg[k] * g[k]).sum()) for k in g) != 0.0  # double backward works


def test_adapter_effective_weights_and_neurons(base_dir: Path) -> None:
    st = text_setting(_opts(base_dir, "shared-adapter"))
    theta0 = st.theta()
    theta1 = {k: v.clone() for k, v in theta0.items()}
    key = next(k for k in theta1 if k.endswith("layers.1.mlp.up_proj.lora_B"))
    theta1[key][0, 5] += 1.0  # only output row 5 of up_proj changes
    eff0, eff1 = st.effective(theta0), st.effective(theta1)
    assert set(eff0) == {
        f"layers.{i}.mlp.{p}" for i in (0, 1) for p in ("gate_proj", "up_proj", "down_proj")
    }
    delta = {k: eff1[k] - eff0[k] for k in eff0}
    change = neuron_change(delta, st.neuron_layers)
    assert float(change["layers.0.mlp"].abs().sum()) == 0.0
    nz = torch.nonzero(change["layers.1.mlp"]).squeeze(1).tolist()
    assert nz == [5] and change["layers.1.mlp"].shape == (24,)


def test_full_mode_trains_base_weights(base_dir: Path) -> None:
    st = text_setting(_opts(base_dir, "full"))
    assert not any("lora_" in k for k in st.params)
    before = st.theta()
    summary = st.domains[0].train(2, 0, True)
    after = st.theta()
    assert summary["grpo_steps"] == 2
    moved = [k for k in before if not torch.equal(before[k], after[k])]
    assert any("mlp.gate_proj" in k for k in moved)
    assert 0.0 <= st.domains[1].score() <= 100.0


def test_full_mode_warm_up_merges_the_sft_adapter(base_dir: Path) -> None:
    from skillbank.interference.text import TextModel, merge_slot_into_base
    from skillbank.lm import load_base

    opts = _opts(base_dir, "full")
    model = TextModel(opts)
    from skillbank.lm import init_slot

    init_slot(model.lm, 0, 4, seed=0)
    with torch.no_grad():
        for p in model.lm.slot_parameters():
            p.normal_(0, 0.1)
    tokens = torch.randint(3, 20, (2, 7))
    with torch.no_grad():
        adapted = model.lm.logits(tokens, torch.zeros(2, dtype=torch.long)).logits
        merge_slot_into_base(model)
        merged = model.lm.logits(tokens, torch.full((2,), -1)).logits
        slot_now = model.lm.logits(tokens, torch.zeros(2, dtype=torch.long)).logits
    torch.testing.assert_close(merged, adapted, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(slot_now, merged)  # the slot is zero after the merge
    fresh, _ = load_base(base_dir)
    name = next(k for k, _ in fresh.named_parameters() if k.endswith("mlp.up_proj.weight"))
    assert not torch.equal(
        fresh.get_parameter(name),
        model.lm.base.get_parameter(name.replace("up_proj.weight", "up_proj.base_layer.weight")),
    )
    st = text_setting(
        TextOptions(domains=["reverse"], mode="full", base=base_dir, warmup_sft=2, eval_n=2)
    )
    assert st.info["warmup_sft"]["steps"] == 2
