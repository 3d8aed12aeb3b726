"""convert-adapter: a PEFT adapter becomes a step-0 checkpoint that the trainer resumes,
and the first broadcast equals the input adapter exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from svc_helpers import fake_trainer, write_orch

from skillbank.config import ConfigError
from skillbank.lora import MultiLoraModel, peft_io
from skillbank.models import ActorCritic, ActorCriticConfig
from skillbank.service.protocol.checkpoint import adapter_state, load_rank_file, norm_from_tensors
from skillbank.service.protocol.paths import RunPaths
from skillbank.service.tools.convert import convert_adapter
from skillbank.service.trainer.config import TrainerConfig
from skillbank.service.trainer.loop import Trainer


def _random_adapter(model: MultiLoraModel, folder: Path, rank: int = 4, base: str = "") -> None:
    g = torch.Generator().manual_seed(1)
    model.reset_slot(0, rank, 2.0 * rank, generator=g)
    with torch.no_grad():
        for layer in model.layers.values():
            layer.lora_B[0, :, : int(layer.slot_rank[0])] = torch.randn(
                layer.out_features, int(layer.slot_rank[0]), generator=g
            )
    peft_io.save_adapter(model, 0, folder, base_model_name_or_path=base or str(folder))


def _same_adapter(x: dict, y: dict) -> bool:
    return x.keys() == y.keys() and all(
        torch.equal(x[k][0], y[k][0]) and torch.equal(x[k][1], y[k][1]) and x[k][2] == y[k][2]
        for k in x
    )


def _peft_resave(model: MultiLoraModel, src: Path, dst: Path) -> None:
    """The adapter saved by peft itself (PeftModel.save_pretrained)."""
    from peft import PeftModel

    PeftModel.from_pretrained(model.plain_base(), str(src)).save_pretrained(str(dst))


def test_converted_adapter_is_resumed_exactly(tmp_path: Path) -> None:
    out = tmp_path / "out"
    info, model = fake_trainer(out)
    _random_adapter(model, tmp_path / "skill", base=info.base_dir)  # local: no hub lookup
    _peft_resave(model, tmp_path / "skill", tmp_path / "peft")
    given = peft_io.read_adapter(tmp_path / "peft").state
    norm = tmp_path / "norm.json"
    norm.write_text('{"mean": [0, 1, 2, 3], "var": [1, 2, 3, 4], "count": 50}')
    folder = convert_adapter(tmp_path / "peft", out / "run_w", obs_norm=norm)
    run = RunPaths(out, "w")
    assert folder == run.checkpoint(0)
    assert run.checkpoint_stable(0).is_file() and run.weight_stable(0).is_file()
    tensors = load_rank_file(run.rank_file(0))
    assert not any(k.startswith("optim.") for k in tensors)
    assert int(tensors["run.step"]) == 0 and norm_from_tensors(tensors)["count"] == 50
    assert _same_adapter(adapter_state(tensors, run.rank_file(0)), given)
    assert _same_adapter(peft_io.read_adapter(run.weight(0)).state, given)

    write_orch(out, "w", task="cartpole", max_steps=5)
    trainer = Trainer(TrainerConfig(output_dir=str(out), base_task="cartpole"), tmp_path / "t.toml")
    try:
        trainer.tick()
        assert trainer.registry.live["w"].step == 0
        first = peft_io.read_adapter(run.broadcast(0)).state
        assert _same_adapter(first, given)
        assert run.broadcast_stable(0).is_file()
    finally:
        trainer.close()
    with pytest.raises(FileExistsError):
        convert_adapter(tmp_path / "peft", out / "run_w")


def test_converter_rejects_bad_inputs(tmp_path: Path) -> None:
    out = tmp_path / "out"
    info, model = fake_trainer(out)
    with pytest.raises(ConfigError, match="trainer.json"):
        convert_adapter(tmp_path / "x", tmp_path / "other" / "run_a")
    # an adapter for another base: shapes do not fit
    other = MultiLoraModel(ActorCritic(ActorCriticConfig(4, "discrete", 2, [8])), 1, 4)
    _random_adapter(other, tmp_path / "small")
    with pytest.raises(peft_io.AdapterFormatError, match="shape") as err:
        convert_adapter(tmp_path / "small", out / "run_a")
    assert "adapter_model.safetensors" in str(err.value)
    # rank above the trainer's capacity (16)
    big = MultiLoraModel(model.plain_base(), 1, 32)
    _random_adapter(big, tmp_path / "big", rank=32)
    with pytest.raises(peft_io.AdapterFormatError, match="capacity"):
        convert_adapter(tmp_path / "big", out / "run_a")
    # not an adapter
    (tmp_path / "empty").mkdir()
    with pytest.raises(peft_io.AdapterFormatError, match="adapter_config.json"):
        convert_adapter(tmp_path / "empty", out / "run_a")
    # full modules (modules_to_save) cannot live in a slot
    _random_adapter(model, tmp_path / "mts")
    cfg_path = tmp_path / "mts" / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps({**cfg, "modules_to_save": ["head"]}))
    weights = tmp_path / "mts" / "adapter_model.safetensors"
    tensors = load_file(str(weights))
    save_file({**tensors, "base_model.model.head.weight": torch.zeros(2, 2)}, str(weights))
    with pytest.raises(peft_io.AdapterFormatError, match="modules_to_save"):
        convert_adapter(tmp_path / "mts", out / "run_a")
    assert not (out / "run_a").exists()  # nothing written on error
