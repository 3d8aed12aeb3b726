"""PolicyLibrary.act's small-batch path: the same actions as an independent reference,
one intra-op thread for small batches (restored after), caches that follow the library."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from skillbank.algos.normalize import CLIP, ObsNorm
from skillbank.library import acting
from skillbank.library.core import PolicyLibrary
from skillbank.lora import MultiLoraModel
from skillbank.models import ActorCritic, ActorCriticConfig

OBS = 4


def _library(tmp_path: Path, kind: str, n_skills: int = 3) -> tuple[PolicyLibrary, list[ObsNorm]]:
    """A library with ``n_skills`` random skills ``s0``.. each with its own observation
    statistics (large adapters, so skills really act differently), base stats too."""
    torch.manual_seed(0)
    cfg = ActorCriticConfig(OBS, kind, 3, [16, 16])
    base = ActorCritic(cfg)
    rng = np.random.default_rng(0)
    base_norm = ObsNorm(rng.normal(size=OBS), rng.uniform(0.2, 3.0, OBS), 10.0)
    lib = PolicyLibrary.create(
        tmp_path / "lib",
        base,
        {"kind": "actor_critic", "kwargs": cfg.to_dict(), "obs_norm": base_norm.to_dict()},
        capacity=4,
    )
    model = MultiLoraModel(copy.deepcopy(base), n_skills, 4)
    g = torch.Generator().manual_seed(1)
    norms = []
    for k in range(n_skills):
        for layer in model.layers.values():
            a = torch.randn(4, layer.in_features, generator=g)
            b = torch.randn(layer.out_features, 4, generator=g)
            layer.set_slot(k, a, b, 8.0)
        norm = ObsNorm(rng.normal(size=OBS), rng.uniform(0.2, 3.0, OBS), 10.0)
        norms.append(norm)
        lib.add_skill(f"s{k}", (model, k), {"obs_norm": norm.to_dict()})
    return lib, [*norms, base_norm]


def _reference(lib: PolicyLibrary, raw: np.ndarray, skills: list[str | None], norms) -> np.ndarray:
    """Greedy actions computed row by row: each row normalised with its own statistics
    and run through the routed multi-LoRA forward (not the merged module)."""
    out = []
    kind = lib.base_config["kwargs"]["action_kind"]
    for row, name in zip(raw, skills):
        norm = norms[-1] if name is None else norms[int(name[1:])]
        x = (row - norm.mean) / np.sqrt(norm.var + 1e-8)
        x = torch.as_tensor(np.clip(x, -CLIP, CLIP), dtype=torch.float32)[None]
        with torch.no_grad():
            logits, _ = lib.forward(x, [name])
        out.append(logits.argmax(-1)[0].item() if kind == "discrete" else logits[0, :3].numpy())
    return np.array(out)


@pytest.fixture
def two_threads() -> Iterator[None]:
    prev = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(prev)


@pytest.mark.parametrize("kind", ["discrete", "box"])
def test_act_matches_reference_single_and_mixed(tmp_path: Path, kind: str) -> None:
    lib, norms = _library(tmp_path, kind)
    raw = np.random.default_rng(3).normal(size=(12, OBS)).astype(np.float32) * 2
    mixed: list[str | None] = [
        "s2",
        None,
        "s0",
        "s1",
        "s0",
        None,
        "s2",
        "s1",
        "s0",
        "s2",
        "s1",
        None,
    ]
    close = np.testing.assert_array_equal if kind == "discrete" else np.testing.assert_allclose
    tol = {} if kind == "discrete" else {"rtol": 1e-5, "atol": 1e-4}  # merged vs routed sums
    for name in ("s0", "s1", "s2", None):
        want = _reference(lib, raw, [name] * len(raw), norms)
        close(lib.act(raw, name), want, **(tol))
        close(lib.act(raw[0], name), want[0], **(tol))
    want = _reference(lib, raw, mixed, norms)
    for _ in range(2):  # the second call goes through the cached route
        close(lib.act(raw, mixed), want, **(tol))
    if kind == "discrete":  # skills and statistics really matter: the check has teeth
        assert len({tuple(lib.act(raw, n).tolist()) for n in ("s0", "s1", "s2", None)}) >= 3
        wrong = _reference(lib, raw, mixed, [norms[-1]] * len(norms))  # base stats everywhere
        assert (wrong != want).any()


def test_small_batches_act_with_one_thread_and_restore_it(tmp_path: Path, two_threads) -> None:
    lib, _ = _library(tmp_path, "discrete")
    seen: list[int] = []

    def record(*_: object) -> None:
        seen.append(torch.get_num_threads())

    lib.merged("s0").pi.register_forward_pre_hook(record)
    lib.model.base.pi.register_forward_pre_hook(record)
    small = np.zeros((acting.SMALL_BATCH_ROWS, OBS), dtype=np.float32)
    large = np.zeros((acting.SMALL_BATCH_ROWS + 1, OBS), dtype=np.float32)
    lib.act(small[0], "s0")
    lib.act(small, ["s0", "s1"] * (len(small) // 2))
    assert seen == [1, 1] and torch.get_num_threads() == 2
    lib.act(large, "s0")
    lib.act(large, ["s1"] * len(large))
    assert seen == [1, 1, 2, 2] and torch.get_num_threads() == 2
    lib.small_batch_rows = 0  # policy off: the caller's setting everywhere
    lib.act(small[0], "s0")
    assert seen[-1] == 2


def test_thread_count_is_restored_when_act_fails(tmp_path: Path, two_threads) -> None:
    lib, _ = _library(tmp_path, "discrete")
    with pytest.raises(KeyError):
        lib.act(np.zeros((2, OBS), dtype=np.float32), ["s0", "nope"])
    with pytest.raises(RuntimeError):
        lib.act(np.zeros((2, OBS + 1), dtype=np.float32), "s0")  # wrong width
    assert torch.get_num_threads() == 2


def test_caches_follow_overwrite_remove_rename(tmp_path: Path) -> None:
    lib, norms = _library(tmp_path, "discrete")
    raw = np.random.default_rng(4).normal(size=(16, OBS)).astype(np.float32) * 2
    names = ["s0", "s1"] * 8
    before = lib.act(raw, names)
    single = lib.act(raw, "s0")
    # overwrite s0 with s2's adapter and statistics: both paths follow at once
    meta = {"obs_norm": norms[2].to_dict()}
    lib.add_skill("s0", tmp_path / "lib" / "skills" / "s2", meta, overwrite=True)
    now_norms = [norms[2], norms[1], norms[2], norms[3]]
    np.testing.assert_array_equal(lib.act(raw, names), _reference(lib, raw, names, now_norms))
    np.testing.assert_array_equal(lib.act(raw, "s0"), lib.act(raw, "s2"))
    assert (lib.act(raw, names) != before).any() and (lib.act(raw, "s0") != single).any()
    lib.rename_skill("s1", "t1")
    with pytest.raises(KeyError):
        lib.act(raw, names)
    with pytest.raises(KeyError):
        lib.act(raw, "s1")
    np.testing.assert_array_equal(lib.act(raw, ["s0", "t1"] * 8)[1::2], before[1::2])
    lib.remove_skill("s2")
    with pytest.raises(KeyError):
        lib.act(raw, "s2")


def test_merged_cache_is_bounded_and_follows_in_place_weight_changes(tmp_path: Path) -> None:
    n = acting.CACHE_ENTRIES + 3
    lib, _ = _library(tmp_path, "discrete", n_skills=n)
    raw = np.random.default_rng(5).normal(size=(8, OBS)).astype(np.float32) * 2
    first = {f"s{k}": lib.act(raw, f"s{k}") for k in range(n)}
    assert len(lib._single_cache) == acting.CACHE_ENTRIES
    for name, want in first.items():  # evicted entries are rebuilt with the same result
        np.testing.assert_array_equal(lib.act(raw, name), want)
    # an in-place change of the adapter weights is seen by the next call
    layer = next(iter(lib.model.layers.values()))
    slot = lib.slot_of("s0")
    with torch.no_grad():
        layer.lora_B[slot].mul_(-1.0)
    routed = lib.act(raw, ["s0"] * len(raw))
    np.testing.assert_array_equal(lib.act(raw, "s0"), routed)
