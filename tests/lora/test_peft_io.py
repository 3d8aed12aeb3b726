"""PEFT adapter format: skillbank <-> peft round trips and one clear error per bad input."""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from skillbank.lora import MultiLoraModel
from skillbank.lora.peft_io import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    AdapterFormatError,
    load_adapter,
    parse_peft_key,
    peft_key,
    read_adapter,
    save_adapter,
    write_adapter,
)

peft = pytest.importorskip("peft")
from peft import LoraConfig, PeftModel, get_peft_model  # noqa: E402
from peft.utils.other import get_pattern_key  # noqa: E402

TARGETS = ["pi.0", "pi.2", "v.0"]
CAPACITY = 4
OBS = 6


class Net(nn.Module):
    """Tiny actor-critic: pi.0, pi.2, v.0, v.2 are Linear layers."""

    def __init__(self) -> None:
        super().__init__()
        self.pi = nn.Sequential(nn.Linear(OBS, 16), nn.Tanh(), nn.Linear(16, 3))
        self.v = nn.Sequential(nn.Linear(OBS, 16), nn.Tanh(), nn.Linear(16, 1))

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.pi(x), self.v(x)], dim=-1)


def make_model(seed: int = 0, num_slots: int = 3) -> MultiLoraModel:
    torch.manual_seed(seed)
    return MultiLoraModel(Net(), num_slots=num_slots, rank=CAPACITY, target_modules=TARGETS)


def fill_slot(model: MultiLoraModel, slot: int, seed: int, ranks: dict[str, int] | None = None):
    """Random A and B (B nonzero, so the slot changes the outputs); per-layer rank/alpha."""
    g = torch.Generator().manual_seed(seed)
    for i, (name, layer) in enumerate(sorted(model.layers.items())):
        r = (ranks or {}).get(name, CAPACITY)
        a = torch.randn(r, layer.in_features, generator=g) * 0.3
        b = torch.randn(layer.out_features, r, generator=g) * 0.3
        layer.set_slot(slot, a, b, alpha=float(2 * r + i))


def run(model: MultiLoraModel, x: Tensor, slot: int) -> Tensor:
    with torch.no_grad():
        return model(x, slot_ids=torch.full((x.shape[0],), slot))


def snapshot(model: MultiLoraModel, slot: int) -> dict[str, tuple[Tensor, Tensor, float]]:
    return model.slot_state(slot)


def assert_same_state(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want)
    for name in want:
        a1, b1, s1 = got[name]
        a2, b2, s2 = want[name]
        assert torch.equal(a1, a2) and torch.equal(b1, b2), name
        assert s1 == pytest.approx(s2), name


@pytest.fixture
def x() -> Tensor:
    return torch.randn(7, OBS, generator=torch.Generator().manual_seed(123))


def peft_adapter(model: MultiLoraModel, out: Path, seed: int = 5, **kw: Any) -> nn.Module:
    """A peft-made adapter on a plain copy of the base, saved with save_pretrained."""
    torch.manual_seed(seed)
    opts: dict[str, Any] = {"r": 4, "lora_alpha": 8, "target_modules": TARGETS}
    opts.update(kw)
    pm = get_peft_model(model.plain_base(), LoraConfig(init_lora_weights=False, **opts))
    pm.eval()
    pm.save_pretrained(str(out))
    return pm


# -------------------------------------------------------------------------------- keys
def test_key_translation_round_trip() -> None:
    key = peft_key("pi.0", "lora_A")
    assert key == "base_model.model.pi.0.lora_A.weight"
    assert parse_peft_key(key) == ("pi.0", "lora_A")
    assert parse_peft_key("base_model.model.a.b.lora_B.default.weight") == ("a.b", "lora_B")
    with pytest.raises(ValueError):
        parse_peft_key("base_model.model.v.2.weight")
    with pytest.raises(ValueError):
        peft_key("pi.0", "lora_C")


def test_peft_writes_the_keys_we_expect(tmp_path: Path) -> None:
    model = make_model()
    peft_adapter(model, tmp_path / "p", modules_to_save=["v.2"])
    keys = set(load_file(str(tmp_path / "p" / ADAPTER_WEIGHTS)))
    lora = {peft_key(p, part) for p in TARGETS for part in ("lora_A", "lora_B")}
    assert keys == lora | {"base_model.model.v.2.weight", "base_model.model.v.2.bias"}


# ------------------------------------------------------------------------ round trips
def test_skillbank_round_trip_into_another_slot(tmp_path: Path, x: Tensor) -> None:
    model = make_model()
    fill_slot(model, 0, seed=1, ranks={"pi.2": 2, "v.0": 3})
    fill_slot(model, 1, seed=2)
    slot1 = snapshot(model, 1)
    save_adapter(model, 0, tmp_path / "a")
    config = load_adapter(model, 2, tmp_path / "a")
    assert config["r"] == 4 and config["rank_pattern"] == {"pi.2": 2, "v.0": 3}
    assert config["target_modules"] == sorted(TARGETS)
    assert_same_state(snapshot(model, 2), snapshot(model, 0))
    assert torch.equal(run(model, x, 2), run(model, x, 0))
    assert not torch.allclose(run(model, x, 2), run(model, x, -1))
    assert_same_state(snapshot(model, 1), slot1)


def test_skillbank_adapter_loads_in_peft(tmp_path: Path, x: Tensor) -> None:
    model = make_model()
    fill_slot(model, 1, seed=3, ranks={"pi.0": 2, "v.0": 1})
    save_adapter(model, 1, tmp_path / "a")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # peft must not complain about missing/unknown keys
        pm = PeftModel.from_pretrained(model.plain_base(), str(tmp_path / "a"))
    with torch.no_grad():
        want = pm(x)
    got = run(model, x, 1)
    assert torch.allclose(got, want, atol=1e-5)
    assert (got - run(model, x, -1)).abs().max() > 1e-2  # the adapter does something
    for name in TARGETS:
        assert (
            pm.base_model.model.get_submodule(name).r["default"]
            == model.layers[name].get_slot(1)[0].shape[0]
        )


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"rank_pattern": {"pi.2": 2}, "alpha_pattern": {"v.0": 3}},
        {"rank_pattern": {r"pi\.\d": 3}, "alpha_pattern": {"0": 5}},  # regex / suffix keys
        {"use_rslora": True, "r": 3, "lora_alpha": 5},
        {"target_modules": ["pi.2"]},
        {"lora_dropout": 0.3},
    ],
    ids=["plain", "patterns", "regex-patterns", "rslora", "one-module", "dropout"],
)
def test_peft_adapter_loads_into_slot(tmp_path: Path, x: Tensor, options: dict) -> None:
    model = make_model()
    fill_slot(model, 0, seed=1)
    fill_slot(model, 2, seed=2)  # overwritten by the load: stale layers must be zeroed
    slot0 = snapshot(model, 0)
    base_out = run(model, x, -1)
    pm = peft_adapter(model, tmp_path / "p", **options)
    with torch.no_grad():
        want = pm(x)
    load_adapter(model, 2, tmp_path / "p")
    assert torch.allclose(run(model, x, 2), want, atol=1e-5)
    assert (want - base_out).abs().max() > 1e-2
    assert_same_state(snapshot(model, 0), slot0)
    assert torch.equal(run(model, x, -1), base_out)
    # mixed batch: each row gets its own slot
    ids = torch.tensor([2, 0, -1, 2, 0, -1, 2])
    with torch.no_grad():
        mixed = model(x, slot_ids=ids)
    ref = {2: want, 0: run(model, x, 0), -1: base_out}
    for row, k in enumerate(ids.tolist()):
        assert torch.allclose(mixed[row], ref[k][row], atol=1e-5)


def test_adapter_names_in_keys_are_accepted(tmp_path: Path, x: Tensor) -> None:
    model = make_model()
    pm = peft_adapter(model, tmp_path / "p")
    path = tmp_path / "p" / ADAPTER_WEIGHTS
    tensors = load_file(str(path))
    renamed = {k.replace(".weight", ".default.weight"): v for k, v in tensors.items()}
    save_file(renamed, str(path))
    load_adapter(model, 1, tmp_path / "p")
    with torch.no_grad():
        assert torch.allclose(run(model, x, 1), pm(x), atol=1e-5)


def test_modules_to_save_from_peft(tmp_path: Path) -> None:
    model = make_model()
    pm = peft_adapter(model, tmp_path / "p", modules_to_save=["v.2"])
    head = pm.base_model.model.v[2].modules_to_save["default"]
    config, state, extra = read_adapter(tmp_path / "p")
    assert sorted(state) == sorted(TARGETS)
    assert sorted(extra) == ["v.2.bias", "v.2.weight"]
    assert torch.equal(extra["v.2.weight"], head.weight.detach())
    # in-memory form of the key (with the wrapper infix) reads the same
    path = tmp_path / "p" / ADAPTER_WEIGHTS
    tensors = load_file(str(path))
    w = tensors.pop("base_model.model.v.2.weight")
    tensors["base_model.model.v.2.modules_to_save.default.weight"] = w
    save_file(tensors, str(path))
    assert torch.equal(read_adapter(tmp_path / "p").modules_to_save["v.2.weight"], w)


def test_modules_to_save_from_skillbank_load_in_peft(tmp_path: Path, x: Tensor) -> None:
    model = make_model()
    fill_slot(model, 0, seed=4)
    g = torch.Generator().manual_seed(9)
    head = {"v.2.weight": torch.randn(1, 16, generator=g), "v.2.bias": torch.randn(1, generator=g)}
    save_adapter(model, 0, tmp_path / "a", modules_to_save=head)
    config, _, extra = read_adapter(tmp_path / "a")
    assert config["modules_to_save"] == ["v.2"]
    assert all(torch.equal(extra[k], head[k]) for k in head)

    pm = PeftModel.from_pretrained(model.plain_base(), str(tmp_path / "a"))
    ref = model.merged_copy(0)
    with torch.no_grad():
        ref.v[2].weight.copy_(head["v.2.weight"])
        ref.v[2].bias.copy_(head["v.2.bias"])
        assert torch.allclose(pm(x), ref(x), atol=1e-5)
        assert not torch.allclose(pm(x)[:, 3], run(model, x, 0)[:, 3], atol=1e-3)


def test_write_read_round_trip_with_ambiguous_patterns(tmp_path: Path) -> None:
    """'b' is a suffix of 'a.b': the written patterns must still give every module its rank
    under peft's own matching rules."""
    g = torch.Generator().manual_seed(0)
    ranks = {"b": 2, "a.b": 4, "c.b": 4, "pixb": 4, "pi.b": 3}
    state = {
        p: (torch.randn(r, 5, generator=g), torch.randn(6, r, generator=g), 1.5 * r)
        for p, r in ranks.items()
    }
    write_adapter(tmp_path / "w", {"task_type": None}, state)
    config, back, _ = read_adapter(tmp_path / "w")
    assert_same_state(back, state)
    for order in (sorted, lambda keys: sorted(keys, reverse=True)):  # peft re-sorts keys
        rank_pattern = {k: config["rank_pattern"][k] for k in order(config["rank_pattern"])}
        alpha_pattern = {k: config["alpha_pattern"][k] for k in order(config["alpha_pattern"])}
        for p, r in ranks.items():
            key = get_pattern_key(rank_pattern.keys(), p)
            assert rank_pattern.get(key, config["r"]) == r
            key = get_pattern_key(alpha_pattern.keys(), p)
            assert alpha_pattern.get(key, config["lora_alpha"]) == pytest.approx(1.5 * r)


def test_peft_adapter_rewritten_by_skillbank_loads_in_peft(tmp_path: Path, x: Tensor) -> None:
    """read_adapter -> write_adapter (the converter path) keeps peft's outputs, rsLoRA and
    patterns included."""
    model = make_model()
    pm = peft_adapter(
        model,
        tmp_path / "p",
        use_rslora=True,
        r=3,
        lora_alpha=5,
        target_modules=["0"],  # suffix: pi.0 and v.0
        modules_to_save=["v.2"],
    )
    config, state, extra = read_adapter(tmp_path / "p")
    write_adapter(tmp_path / "w", config, state, extra)
    written = json.loads((tmp_path / "w" / ADAPTER_CONFIG).read_text())
    assert written["use_rslora"] is False and written["target_modules"] == ["pi.0", "v.0"]
    pm2 = PeftModel.from_pretrained(model.plain_base(), str(tmp_path / "w"))
    with torch.no_grad():
        assert torch.allclose(pm2(x), pm(x), atol=1e-5)


def test_duplicate_keys(tmp_path: Path) -> None:
    model = make_model()
    peft_adapter(model, tmp_path / "p")
    path = tmp_path / "p" / ADAPTER_WEIGHTS
    tensors = load_file(str(path))
    tensors["base_model.model.pi.0.lora_A.default.weight"] = tensors[peft_key("pi.0", "lora_A")]
    save_file({k: v.clone() for k, v in tensors.items()}, str(path))
    with pytest.raises(AdapterFormatError, match="duplicate") as info:
        read_adapter(tmp_path / "p")
    assert ADAPTER_WEIGHTS in str(info.value)


def test_rslora_alpha_is_converted(tmp_path: Path) -> None:
    model = make_model()
    peft_adapter(model, tmp_path / "p", use_rslora=True, r=4, lora_alpha=6)
    _, state, _ = read_adapter(tmp_path / "p")
    for _, _, alpha in state.values():
        assert alpha / 4 == pytest.approx(6 / math.sqrt(4))


def test_writes_are_atomic(tmp_path: Path) -> None:
    model = make_model()
    fill_slot(model, 0, seed=1)
    with pytest.raises(TypeError):
        save_adapter(model, 0, tmp_path / "a", extra_config={"auto_mapping": {"x": object()}})
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="empty"):
        save_adapter(model, 1, tmp_path / "a")
    # overwriting an existing folder keeps its other files and leaves no temp behind
    save_adapter(model, 0, tmp_path / "a")
    (tmp_path / "a" / "skill.json").write_text("{}")
    fill_slot(model, 0, seed=2, ranks={"pi.0": 1})
    save_adapter(model, 0, tmp_path / "a")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [
        ADAPTER_CONFIG,
        ADAPTER_WEIGHTS,
        "skill.json",
    ]
    assert read_adapter(tmp_path / "a").state["pi.0"][0].shape[0] == 1


# ------------------------------------------------------------------------- bad inputs
@pytest.fixture
def setup(tmp_path: Path) -> tuple[MultiLoraModel, Path]:
    """A model whose slot 1 holds an adapter, and a good skillbank adapter folder."""
    model = make_model()
    fill_slot(model, 0, seed=1)
    save_adapter(model, 0, tmp_path / "good")
    fill_slot(model, 1, seed=2, ranks={"v.0": 2})
    return model, tmp_path / "good"


def expect_error(model: MultiLoraModel, folder: Path, *needles: str) -> str:
    before = snapshot(model, 1)
    with pytest.raises(AdapterFormatError) as info:
        load_adapter(model, 1, folder)
    msg = str(info.value)
    for needle in needles:
        assert needle in msg, (needle, msg)
    assert_same_state(snapshot(model, 1), before)
    return msg


def edit_config(folder: Path, change: Callable[[dict], None]) -> None:
    path = folder / ADAPTER_CONFIG
    config = json.loads(path.read_text())
    change(config)
    path.write_text(json.dumps(config))


def edit_tensors(folder: Path, change: Callable[[dict[str, Tensor]], None]) -> None:
    path = folder / ADAPTER_WEIGHTS
    tensors = load_file(str(path))
    change(tensors)
    save_file(tensors, str(path))


A0, B0 = peft_key("pi.0", "lora_A"), peft_key("pi.0", "lora_B")


def test_missing_folder(setup, tmp_path: Path) -> None:
    model, _ = setup
    expect_error(model, tmp_path / "nope", "nope", "not found")


@pytest.mark.parametrize("name", [ADAPTER_CONFIG, ADAPTER_WEIGHTS])
def test_missing_file(setup, name: str) -> None:
    model, folder = setup
    (folder / name).unlink()
    expect_error(model, folder, name, "not found")


def test_pickle_weights_are_not_read(setup) -> None:
    model, folder = setup
    (folder / ADAPTER_WEIGHTS).rename(folder / "adapter_model.bin")
    expect_error(model, folder, ADAPTER_WEIGHTS, "adapter_model.bin", "pickle")


@pytest.mark.parametrize("text", ['{"peft_type": "LORA", "r": 4', "[1, 2]", "\xff\xfe"])
def test_config_not_json(setup, text: str) -> None:
    model, folder = setup
    (folder / ADAPTER_CONFIG).write_bytes(text.encode("latin-1"))
    expect_error(model, folder, ADAPTER_CONFIG, "JSON")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("peft_type", "LOHA"),
        ("use_dora", True),
        ("bias", "all"),
        ("lora_bias", True),
        ("r", "four"),
        ("r", 0),
        ("lora_alpha", None),
        ("use_rslora", "yes"),
        ("rank_pattern", {"pi.(": 2}),
        ("init_lora_weights", "pissa"),
        ("modules_to_save", "v.2"),
    ],
)
def test_bad_config_field(setup, field: str, value: Any) -> None:
    model, folder = setup
    edit_config(folder, lambda c: c.__setitem__(field, value))
    expect_error(model, folder, ADAPTER_CONFIG, f"'{field}'")


def test_missing_required_field(setup) -> None:
    model, folder = setup
    edit_config(folder, lambda c: c.pop("r"))
    expect_error(model, folder, ADAPTER_CONFIG, "'r'")


def test_target_module_absent_from_base(setup) -> None:
    model, folder = setup

    def rename(t: dict[str, Tensor]) -> None:
        t[peft_key("pi.9", "lora_A")] = t.pop(A0)
        t[peft_key("pi.9", "lora_B")] = t.pop(B0)

    edit_tensors(folder, rename)
    expect_error(model, folder, ADAPTER_WEIGHTS, peft_key("pi.9", "lora_A"), "pi.9")


def test_target_module_not_a_lora_layer(setup) -> None:
    model, folder = setup  # v.2 exists in the base but carries no LoRA

    def add(t: dict[str, Tensor]) -> None:
        t[peft_key("v.2", "lora_A")] = torch.zeros(4, 16)
        t[peft_key("v.2", "lora_B")] = torch.zeros(1, 4)

    edit_tensors(folder, add)
    expect_error(model, folder, ADAPTER_WEIGHTS, peft_key("v.2", "lora_A"))


def test_shape_mismatch_with_base(setup) -> None:
    model, folder = setup
    edit_tensors(folder, lambda t: t.__setitem__(A0, torch.zeros(4, OBS + 1)))
    expect_error(model, folder, ADAPTER_WEIGHTS, A0, "(4, 7)", "(4, 6)")


def test_shape_mismatch_with_config_rank(setup) -> None:
    model, folder = setup
    edit_tensors(folder, lambda t: t.__setitem__(B0, torch.zeros(16, 3)))
    expect_error(model, folder, ADAPTER_WEIGHTS, B0, "(16, 3)", "'r'")


def test_rank_above_capacity(setup, tmp_path: Path) -> None:
    model, _ = setup
    peft_adapter(model, tmp_path / "big", r=8)
    expect_error(model, tmp_path / "big", ADAPTER_CONFIG, "'r'", "capacity 4")
    peft_adapter(model, tmp_path / "big2", rank_pattern={"pi.2": 6})
    expect_error(model, tmp_path / "big2", ADAPTER_CONFIG, "rank_pattern", "pi.2", "capacity")


@pytest.mark.parametrize("how", ["truncated", "garbage", "empty"])
def test_corrupt_safetensors(setup, how: str) -> None:
    model, folder = setup
    path = folder / ADAPTER_WEIGHTS
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"x" * 64, "empty": b""}[how])
    expect_error(model, folder, ADAPTER_WEIGHTS, "corrupt")


@pytest.mark.parametrize("key", ["base_model.model.pi.0.extra.weight", "other.lora_A.weight"])
def test_unknown_key(setup, key: str) -> None:
    model, folder = setup
    edit_tensors(folder, lambda t: t.__setitem__(key, torch.zeros(2)))
    expect_error(model, folder, ADAPTER_WEIGHTS, key, "unexpected key")


@pytest.mark.parametrize("key", [A0, B0])
def test_missing_a_or_b(setup, key: str) -> None:
    model, folder = setup
    edit_tensors(folder, lambda t: t.pop(key))
    expect_error(model, folder, ADAPTER_WEIGHTS, key, "missing")


def test_non_finite_values(setup) -> None:
    model, folder = setup
    edit_tensors(folder, lambda t: t[A0].__setitem__((0, 0), float("nan")))
    expect_error(model, folder, ADAPTER_WEIGHTS, A0, "NaN")


def test_bad_slot_index_leaves_model_alone(setup) -> None:
    model, folder = setup
    with pytest.raises(IndexError):
        load_adapter(model, 3, folder)
