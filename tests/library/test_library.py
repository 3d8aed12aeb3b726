"""PolicyLibrary: on-disk round trips, mixed-skill forward/act, skill management, errors."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

from skillbank.algos.normalize import ObsNorm
from skillbank.library.core import LibraryError, PolicyLibrary, load_policy
from skillbank.lora import MultiLoraModel, peft_io
from skillbank.models import ActorCritic, ActorCriticConfig

OBS, ACTIONS, HIDDEN = 4, 2, [32, 32]
ATOL = 1e-5
LAYERS = ["pi.0", "pi.2", "pi.4", "v.0", "v.2", "v.4"]


# --------------------------------------------------------------------------- helpers
def ac_config() -> ActorCriticConfig:
    return ActorCriticConfig(obs_dim=OBS, action_kind="discrete", action_dim=ACTIONS, hidden=HIDDEN)


def make_base(seed: int = 0) -> ActorCritic:
    torch.manual_seed(seed)
    return ActorCritic(ac_config())


def base_config(obs_norm: ObsNorm | None = None) -> dict:
    return {
        "kind": "actor_critic",
        "kwargs": ac_config().to_dict(),
        "obs_norm": obs_norm.to_dict() if obs_norm is not None else None,
    }


def trained(base: ActorCritic, num_slots: int = 3, capacity: int = 4, seed: int = 1):
    """A MultiLoraModel over a copy of ``base`` with random adapters; slot k has rank
    ranks[k] and alpha 2 * rank + k. B is large enough to change the greedy action."""
    model = MultiLoraModel(copy.deepcopy(base), num_slots=num_slots, rank=capacity)
    g = torch.Generator().manual_seed(seed)
    ranks = [2, 3, 1, 4][:num_slots]
    for k, r in enumerate(ranks):
        for layer in model.layers.values():
            a = torch.randn(r, layer.in_features, generator=g) * 0.5
            b = torch.randn(layer.out_features, r, generator=g) * 0.5
            layer.set_slot(k, a, b, float(2 * r + k))
    return model.eval(), ranks


def obs(n: int, seed: int = 2) -> Tensor:
    return torch.randn(n, OBS, generator=torch.Generator().manual_seed(seed))


def slot_out(model: MultiLoraModel, x: Tensor, slot: int) -> tuple[Tensor, Tensor]:
    with torch.no_grad():
        return model(x, slot_ids=torch.full((x.shape[0],), slot))


def assert_out_close(got, want, atol: float = ATOL) -> None:
    assert type(got) is type(want) and len(got) == len(want)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=atol, rtol=1e-5)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


@pytest.fixture
def lib_setup(tmp_path: Path):
    """A library with skills 'a' (slot 0 of the trainer model, rank 2) and 'b' (slot 1,
    rank 3, added from a PEFT folder); capacity 8 > ranks."""
    base = make_base()
    model, ranks = trained(base)
    lib = PolicyLibrary.create(tmp_path / "lib", base, base_config(), capacity=8)
    lib.add_skill("a", (model, 0), {"task": {"name": "ta"}, "scores": {"ret": 1.5}})
    peft_io.save_adapter(model, 1, tmp_path / "adapter_b")
    lib.add_skill("b", tmp_path / "adapter_b", {"task": {"name": "tb"}})
    return lib, model, ranks, tmp_path


# -------------------------------------------------------------------- round trip
def test_create_load_round_trip(lib_setup) -> None:
    lib, model, _, tmp_path = lib_setup
    index = json.loads((tmp_path / "lib" / "library.json").read_text())
    assert index["skills"] == ["a", "b"] and index["format_version"] == 1
    cfg = json.loads((tmp_path / "lib" / "base" / "config.json").read_text())
    assert cfg["kind"] == "actor_critic" and cfg["kwargs"] == ac_config().to_dict()

    again = PolicyLibrary.load(tmp_path / "lib")
    assert again.skills == ["a", "b"] and again.load_errors == {}
    assert again.skill_meta("a") == {"task": {"name": "ta"}, "scores": {"ret": 1.5}}
    assert again.skill_meta("b") == {"task": {"name": "tb"}}
    x = obs(6)
    for name, slot in (("a", 0), ("b", 1)):
        want = slot_out(model, x, slot)
        assert_out_close(again.forward(x, name), want)
        assert_out_close(lib.forward(x, name), want)
    # base weights survive the round trip exactly
    base = make_base()
    for key, t in base.state_dict().items():
        assert torch.equal(again.base_model().state_dict()[key], t), key
    assert again.memory_report() == lib.memory_report()


def test_create_refuses_existing_library(lib_setup) -> None:
    _, _, _, tmp_path = lib_setup
    with pytest.raises(LibraryError, match="library.json"):
        PolicyLibrary.create(tmp_path / "lib", make_base(), base_config())
    with pytest.raises(LibraryError, match="kind"):
        PolicyLibrary.create(tmp_path / "other", make_base(), {"kwargs": {}})


def test_add_skill_from_slot_and_from_peft_folder(lib_setup) -> None:
    lib, model, ranks, tmp_path = lib_setup
    x = obs(5)
    assert_out_close(lib.forward(x, "a"), slot_out(model, x, 0))
    assert_out_close(lib.forward(x, "b"), slot_out(model, x, 1))
    # the stored skill folder is a PEFT adapter with the skill's rank
    adapter = peft_io.read_adapter(tmp_path / "lib" / "skills" / "a")
    assert sorted(adapter.state) == LAYERS
    assert all(a.shape[0] == ranks[0] for a, _, _ in adapter.state.values())
    assert json.loads((tmp_path / "lib" / "skills" / "b" / "skill.json").read_text()) == {
        "task": {"name": "tb"}
    }


# ----------------------------------------------------------------------- forward
def test_forward_mixed_skills_equals_per_row(lib_setup) -> None:
    lib, model, _, _ = lib_setup
    x = obs(8)
    names = ["b", None, "a", "a", None, "b", "a", "b"]
    got = lib.forward(x, names)
    base_out = lib.base_model()(x)
    assert isinstance(base_out, tuple) and isinstance(got, tuple) and len(got) == 2
    assert all(isinstance(t, Tensor) for t in got)
    assert [t.shape for t in got] == [t.shape for t in base_out]
    slot = {"a": 0, "b": 1}
    for i, name in enumerate(names):
        if name is None:
            want = tuple(t[i : i + 1].detach() for t in base_out)
        else:
            want = slot_out(model, x[i : i + 1], slot[name])
        assert_out_close(tuple(t[i : i + 1] for t in got), want)
    # None for every row: exactly the base
    all_base = lib.forward(x, None)
    assert all(torch.equal(g, w) for g, w in zip(all_base, base_out))
    with pytest.raises(ValueError):
        lib.forward(x, ["a"] * 3)
    with pytest.raises(KeyError):
        lib.forward(x, "nope")


# --------------------------------------------------------------------------- act
def test_act_uses_each_skills_obs_norm(tmp_path: Path) -> None:
    base = make_base()
    model, _ = trained(base)
    base_norm = ObsNorm(np.array([1.0, -1.0, 0.5, 0.0]), np.array([4.0, 0.25, 1.0, 9.0]), 10)
    norm_a = ObsNorm(np.array([3.0, -2.0, 1.0, 2.5]), np.array([0.04, 0.09, 4.0, 0.01]), 10)
    norm_b = ObsNorm(np.array([-2.0, 1.0, -3.0, 0.5]), np.array([0.25, 0.01, 0.16, 1.0]), 10)
    lib = PolicyLibrary.create(tmp_path / "lib", base, base_config(base_norm), capacity=4)
    lib.add_skill("a", (model, 0), {"obs_norm": norm_a})  # ObsNorm object accepted
    lib.add_skill("b", (model, 1), {"obs_norm": norm_b.to_dict()})

    raw = obs(32, seed=11) * 2
    names = [("a", "b", None)[i % 3] for i in range(32)]
    norms = {"a": norm_a, "b": norm_b, None: base_norm}

    def expected(normalise: bool) -> np.ndarray:
        acts = []
        for i, name in enumerate(names):
            row = raw[i : i + 1]
            if normalise:
                n = norms[name]
                mean = torch.tensor(n.mean, dtype=torch.float32)
                std = torch.tensor(np.sqrt(n.var + 1e-8), dtype=torch.float32)
                row = ((row - mean) / std).clamp(-10, 10)
            logits = lib.forward(row, [name])[0]
            acts.append(int(logits.argmax(-1)))
        return np.array(acts)

    with_norm, without = expected(True), expected(False)
    assert (with_norm != without).any(), "test data must make normalisation matter"
    got = lib.act(raw.numpy(), names)
    assert got.shape == (32,)
    np.testing.assert_array_equal(got, with_norm)

    # reload: stats persist in skill.json / base config
    again = PolicyLibrary.load(tmp_path / "lib")
    np.testing.assert_array_equal(again.act(raw.numpy(), names), with_norm)
    # one row (1-D obs) gives a scalar action
    assert int(lib.act(raw[0].numpy(), "a")) == with_norm[0]


def test_act_single_skill_uses_merged_cache(lib_setup, monkeypatch) -> None:
    lib, _, _, _ = lib_setup
    raw = obs(40, seed=5).numpy() * 3
    calls = []
    merged_copy = lib.model.merged_copy
    monkeypatch.setattr(
        lib.model, "merged_copy", lambda k: calls.append(k) or merged_copy(k), raising=True
    )
    for name in ("a", "b"):
        single = lib.act(raw, name)
        mixed = lib.act(raw, [name] * len(raw))
        np.testing.assert_array_equal(single, mixed)
        assert lib.act(raw, name).tolist() == single.tolist()
    assert calls == [0, 1]  # one merge per skill, reused on the second call
    assert lib.merged("a") is lib.merged("a")
    np.testing.assert_array_equal(lib.act(raw, None), lib.act(raw, [None] * len(raw)))
    # the single-skill path really differs from the base for these skills
    assert (lib.act(raw, "a") != lib.act(raw, None)).any()


def test_merged_cache_follows_an_overwritten_skill(lib_setup) -> None:
    lib, model, _, _ = lib_setup
    x = obs(6)
    raw = x.numpy()
    lib.act(raw, "a")  # fills the merged cache for 'a'
    lib.add_skill("a", (model, 2), overwrite=True)
    want = slot_out(model, x, 2)
    assert_out_close(lib.forward(x, "a"), want)
    assert_out_close(lib.forward(x, ["a"] * 6), want)
    merged = lib.merged("a")
    with torch.no_grad():
        assert_out_close(merged(x), want)
    # 'b' is untouched by the overwrite
    assert_out_close(lib.forward(x, "b"), slot_out(model, x, 1))
    again = PolicyLibrary.load(lib.path)
    assert_out_close(again.forward(x, "a"), want)


# ------------------------------------------------------------- manage skills
def test_remove_and_rename_persist(lib_setup) -> None:
    lib, model, _, tmp_path = lib_setup
    lib.add_skill("c", (model, 2))
    lib.remove_skill("a")
    assert lib.skills == ["b", "c"]
    assert not (tmp_path / "lib" / "skills" / "a").exists()
    with pytest.raises(KeyError):
        lib.forward(obs(2), "a")
    lib.rename_skill("b", "b2")
    assert lib.skills == ["b2", "c"]
    assert (tmp_path / "lib" / "skills" / "b2").is_dir()
    assert not (tmp_path / "lib" / "skills" / "b").exists()
    x = obs(4)
    assert_out_close(lib.forward(x, "b2"), slot_out(model, x, 1))

    again = PolicyLibrary.load(tmp_path / "lib")
    assert again.skills == ["b2", "c"]
    assert again.skill_meta("b2") == {"task": {"name": "tb"}}
    assert_out_close(again.forward(x, "b2"), slot_out(model, x, 1))
    assert_out_close(again.forward(x, "c"), slot_out(model, x, 2))
    with pytest.raises(LibraryError):
        lib.rename_skill("c", "b2")  # exists
    with pytest.raises(KeyError):
        lib.rename_skill("zzz", "y")


BAD_NAMES = ["../x", "a/b", "", ".", "..", "/abs", "x\n", ".hidden", "a\\b"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_skill_names_are_rejected(lib_setup, name: str) -> None:
    lib, model, _, tmp_path = lib_setup
    before = snapshot(tmp_path)
    with pytest.raises(LibraryError):
        lib.add_skill(name, (model, 2))
    with pytest.raises(LibraryError):
        lib.rename_skill("a", name)
    assert lib.skills == ["a", "b"]
    assert snapshot(tmp_path) == before


def test_load_rejects_escaping_skill_names_in_index(lib_setup) -> None:
    """A library.json listing '../outside' must not read a folder outside LIB/skills."""
    lib, model, _, tmp_path = lib_setup
    peft_io.save_adapter(model, 2, tmp_path / "lib" / "outside")
    index_path = tmp_path / "lib" / "library.json"
    index = json.loads(index_path.read_text())
    index["skills"].append("../outside")
    index_path.write_text(json.dumps(index))
    with pytest.raises(LibraryError):
        PolicyLibrary.load(tmp_path / "lib")
    loose = PolicyLibrary.load(tmp_path / "lib", strict=False)
    assert loose.skills == ["a", "b"] and "../outside" in loose.load_errors


def test_add_existing_name_without_overwrite_raises(lib_setup) -> None:
    lib, model, _, tmp_path = lib_setup
    before = snapshot(tmp_path / "lib")
    with pytest.raises(LibraryError, match="'a'"):
        lib.add_skill("a", (model, 2))
    assert snapshot(tmp_path / "lib") == before
    x = obs(3)
    assert_out_close(lib.forward(x, "a"), slot_out(model, x, 0))


# ------------------------------------------------------------------------- load
def test_load_strict_names_corrupt_adapter_file(lib_setup) -> None:
    _, model, _, tmp_path = lib_setup
    bad = tmp_path / "lib" / "skills" / "a" / "adapter_model.safetensors"
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        PolicyLibrary.load(tmp_path / "lib")
    loose = PolicyLibrary.load(tmp_path / "lib", strict=False)
    assert loose.skills == ["b"]
    assert list(loose.load_errors) == ["a"] and str(bad) in loose.load_errors["a"]
    x = obs(4)
    assert_out_close(loose.forward(x, "b"), slot_out(model, x, 1))
    with pytest.raises(KeyError):
        loose.forward(x, "a")


@pytest.mark.parametrize(
    ("rel", "content"),
    [
        ("library.json", "{not json"),
        ("library.json", "[1, 2]"),
        ("library.json", '{"format_version": 99, "skills": []}'),
        ("base/config.json", "{not json"),
        ("base/config.json", '{"kwargs": {}}'),
        ("base/config.json", '{"kind": "actor_critic", "kwargs": {"obs_dim": 4}}'),
        ("base/config.json", '{"kind": "nope", "kwargs": {}}'),
        ("base/model.safetensors", "garbage"),
    ],
)
def test_corrupt_library_files_raise_library_error(lib_setup, rel: str, content: str) -> None:
    _, _, _, tmp_path = lib_setup
    target = tmp_path / "lib" / rel
    target.write_text(content)
    with pytest.raises(LibraryError, match=re.escape(str(target))):
        PolicyLibrary.load(tmp_path / "lib")


def test_missing_library_json(tmp_path: Path) -> None:
    with pytest.raises(LibraryError, match=re.escape(str(tmp_path / "library.json"))):
        PolicyLibrary.load(tmp_path)


# ----------------------------------------------------------------------- memory
def test_memory_report_arithmetic(lib_setup) -> None:
    lib, _, ranks, _ = lib_setup
    assert lib.model.capacity == 8 > max(ranks[:2])
    base = make_base()
    base_bytes = sum(p.numel() for p in base.parameters()) * 4
    dims = [(OBS, 32), (32, 32), (32, ACTIONS), (OBS, 32), (32, 32), (32, 1)]  # (in, out)
    want_skill = {
        name: sum(r * (i + o) * 4 for i, o in dims)
        for name, r in (("a", ranks[0]), ("b", ranks[1]))
    }
    rep = lib.memory_report()
    assert rep["base_bytes"] == base_bytes
    assert rep["skill_bytes"] == want_skill
    assert rep["total_bytes"] == base_bytes + sum(want_skill.values())
    assert rep["full_copies_bytes"] == 2 * base_bytes
    assert rep["saving"] == pytest.approx(1 - rep["total_bytes"] / (2 * base_bytes))


# ------------------------------------------------------------------------ export
def test_export_skill_loads_with_load_policy(lib_setup) -> None:
    lib, _, _, tmp_path = lib_setup
    norm = ObsNorm(np.arange(OBS, dtype=float), np.ones(OBS) * 2, 5.0)
    lib.add_skill("n", (lib.model, lib.slot_of("b")), {"obs_norm": norm, "task": {"t": 1}})
    for name in ("a", "n"):
        out = lib.export_skill(name, tmp_path / "export" / name)
        policy, config = load_policy(out)
        assert isinstance(policy, ActorCritic)
        assert config["skill"] == name and config["kind"] == "actor_critic"
        x = obs(7, seed=9)
        with torch.no_grad():
            assert_out_close(policy(x), lib.forward(x, name), atol=1e-5)
    _, config = load_policy(tmp_path / "export" / "n")
    assert config["obs_norm"] == norm.to_dict() and config["task"] == {"t": 1}
    # the exported policy is not the base
    x = obs(7, seed=9)
    with torch.no_grad():
        assert not torch.allclose(
            load_policy(tmp_path / "export" / "a")[0](x)[1], lib.base_model()(x)[1]
        )


# -------------------------------------------------------------- failed add_skill
def _bad_adapters(tmp_path: Path, model: MultiLoraModel) -> dict[str, Path]:
    out: dict[str, Path] = {}
    out["missing"] = tmp_path / "no_such_adapter"
    corrupt = tmp_path / "corrupt"
    peft_io.save_adapter(model, 2, corrupt)
    w = corrupt / "adapter_model.safetensors"
    w.write_bytes(w.read_bytes()[:40])
    out["corrupt"] = corrupt
    state = model.slot_state(2)
    unknown = tmp_path / "unknown_module"
    peft_io.write_adapter(unknown, {}, {**state, "q.0": state["pi.0"]})
    out["unknown_module"] = unknown
    shape = tmp_path / "wrong_shape"
    a, b, alpha = state["pi.0"]
    peft_io.write_adapter(shape, {}, {"pi.0": (torch.ones(a.shape[0], 7), b, alpha)})
    out["wrong_shape"] = shape
    big = tmp_path / "big_rank_unknown_module"  # rank above capacity AND a bad module
    g = torch.Generator().manual_seed(3)
    peft_io.write_adapter(
        big,
        {},
        {
            "pi.0": (torch.randn(12, OBS, generator=g), torch.randn(32, 12, generator=g), 3.0),
            "zz.1": (torch.randn(12, OBS, generator=g), torch.randn(32, 12, generator=g), 3.0),
        },
    )
    out["big_rank_unknown_module"] = big
    return out


@pytest.mark.parametrize(
    "kind", ["missing", "corrupt", "unknown_module", "wrong_shape", "big_rank_unknown_module"]
)
@pytest.mark.parametrize("name", ["new", "a"])
def test_failed_add_skill_changes_nothing(lib_setup, kind: str, name: str) -> None:
    lib, model, _, tmp_path = lib_setup
    bad = _bad_adapters(tmp_path / "bad", model)[kind]
    before = snapshot(tmp_path / "lib")
    x = obs(6)
    want = {n: lib.forward(x, n) for n in ("a", "b")}
    with pytest.raises(ValueError):
        lib.add_skill(name, bad, overwrite=True)
    assert snapshot(tmp_path / "lib") == before
    for n in ("a", "b"):
        assert_out_close(lib.forward(x, n), want[n])
    assert lib.skills == ["a", "b"]  # same skills, same order
    mixed = lib.forward(x, ["b", "a", "a", "b", "a", "b"])
    for i, n in enumerate(["b", "a", "a", "b", "a", "b"]):
        assert_out_close(tuple(t[i : i + 1] for t in mixed), tuple(t[i : i + 1] for t in want[n]))
    assert_out_close(lib.forward(x, "a"), slot_out(model, x, 0))
    again = PolicyLibrary.load(tmp_path / "lib")
    assert again.skills == ["a", "b"]
    assert_out_close(again.forward(x, "a"), slot_out(model, x, 0))


# ----------------------------------------------------------------------- growth
def test_growing_slots_and_capacity_keeps_skills(tmp_path: Path) -> None:
    base = make_base()
    model, _ = trained(base, num_slots=4, capacity=4)
    lib = PolicyLibrary.create(tmp_path / "lib", base, base_config(), capacity=2)
    x = obs(5)
    for i in range(6):  # more skills than the initial 4 slots; ranks up to 4 > capacity 2
        lib.add_skill(f"s{i}", (model, i % 4))
    assert lib.model.capacity >= 4 and lib.model.num_slots >= 6
    names = [f"s{i}" for i in range(6)]
    for i, name in enumerate(names):
        assert_out_close(lib.forward(x, name), slot_out(model, x, i % 4))
    again = PolicyLibrary.load(tmp_path / "lib")
    assert again.skills == names
    for i, name in enumerate(names):
        assert_out_close(again.forward(x, name), slot_out(model, x, i % 4))
