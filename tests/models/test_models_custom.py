"""A user's own base network by import path: built, checked, trained, LoRA skills in PEFT."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from skillbank.algos.ppo import PPOConfig
from skillbank.library.core import PolicyLibrary
from skillbank.models import (
    BASE_KINDS,
    ModelError,
    UnknownBaseKindError,
    build_base,
    module_base_config,
    register_base_kind,
)
from skillbank.recipes.evaluate import evaluate_library
from skillbank.recipes.train import train_lora_skills
from skillbank.tasks import parse_task
from skillbank.training.loop import FullBank, train_ppo

KW = module_base_config("user_nets:build_cnn", 64, "discrete", 2, channels=4)
TARGETS = ["fc", "pi", "v"]


def test_module_base_is_built_from_its_config() -> None:
    torch.manual_seed(0)
    net = build_base("module", KW)
    logits, value = net(torch.zeros(3, 64))
    assert logits.shape == (3, 2) and value.shape == (3,)
    assert isinstance(net.conv, nn.Conv2d)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"factory": "user_nets:build_wrong", "kwargs": {}}, r"must return \(policy_out \[2, 2\]"),
        ({"factory": "no_such_mod:f"}, r"field kwargs.factory: 'no_such_mod:f' cannot be imported"),
        ({"factory": "user_nets"}, r"is not 'module:function'"),
        ({"kwargs": {"colour": 1}}, r"field kwargs.kwargs: user_nets:build_cnn rejected"),
        ({"action_kind": "multi"}, r"field kwargs.action_kind"),
    ],
)
def test_bad_module_bases_give_one_error(change: dict, match: str) -> None:
    with pytest.raises(ModelError, match=match):
        build_base("module", {**KW, **change})


def test_registration_api() -> None:
    with pytest.raises(UnknownBaseKindError, match="causal_lm.*skillbank.lm.model"):
        if "causal_lm" in BASE_KINDS:
            raise UnknownBaseKindError("causal_lm registered by skillbank.lm.model")
        build_base("causal_lm", {})
    builder = lambda kw: nn.Linear(kw["n"], 1)  # noqa: E731
    register_base_kind("test-linear", builder)
    register_base_kind("test-linear", builder)  # the same builder again: fine
    with pytest.raises(ValueError, match="already registered"):
        register_base_kind("test-linear", lambda kw: nn.Linear(1, 1))
    assert build_base("test-linear", {"n": 3}).in_features == 3
    del BASE_KINDS["test-linear"]


@pytest.mark.slow
def test_cnn_base_and_lora_skill_train_and_load_in_peft(tmp_path: Path) -> None:
    peft = pytest.importorskip("peft")
    spec = parse_task("gym:user_nets:ImageSide")
    flipped = parse_task("gym:user_nets:ImageSide?flip=true")
    cfg = PPOConfig().replace(
        total_steps=4096, envs_per_task=8, rollout_steps=32, learning_rate=3e-3, update_epochs=4
    )
    torch.manual_seed(0)
    net = build_base("module", KW)
    result = train_ppo(FullBank([net]), [spec], cfg, "discrete", seed=0)
    config = {
        "kind": "module",
        "kwargs": KW,
        "obs_norm": result.norms[0].to_dict(),
        "task": spec.to_dict(),
        "target_modules": TARGETS,
    }
    lib = PolicyLibrary.create(tmp_path / "lib", net.eval(), config)
    skill_cfg = cfg.replace(total_steps=8192, learning_rate=1e-2)
    summaries, _, _ = train_lora_skills(lib, [flipped], skill_cfg, [4], 2.0, seed=0, quiet=True)
    (name,) = summaries
    lib = PolicyLibrary.load(tmp_path / "lib")  # rebuilt from base/config.json by import path
    res = evaluate_library(lib, [spec, flipped], episodes=40)
    base_row, skill_row = res["mean"]
    assert base_row[0] >= 0.9 and base_row[1] <= 0.1  # the base learned its task
    assert skill_row[1] >= 0.9  # the LoRA skill learned the flipped one
    x = torch.rand(5, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pm = peft.PeftModel.from_pretrained(lib.base_model(), str(lib.path / "skills" / name))
    with torch.no_grad():
        want_logits, want_value = pm(x)
        got_logits, got_value = lib.forward(x, name)
    torch.testing.assert_close(got_logits, want_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_value, want_value, atol=1e-5, rtol=1e-5)
    assert (got_logits - lib.forward(x, None)[0]).abs().max() > 1e-3
