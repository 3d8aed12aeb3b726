"""Rollout files: round trip, and every kind of bad file rejected with file + key."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from svc_helpers import fake_meta, fake_rollout

from skillbank.service.protocol.paths import RunPaths
from skillbank.service.protocol.rollout_io import RolloutError, read_rollout, write_rollout


@pytest.fixture
def run(tmp_path: Path) -> RunPaths:
    run = RunPaths(tmp_path, "a")
    run.root.mkdir()
    return run


def test_round_trip(run: RunPaths) -> None:
    batch = fake_rollout(64)
    write_rollout(run, 3, {**batch, "task": torch.zeros(64, dtype=torch.long)}, fake_meta(2))
    ro = read_rollout(run, 3, 4, "discrete", 2)
    assert ro.policy_step == 2 and ro.recent_return == 20.0
    assert all(torch.equal(ro.tensors[k], batch[k]) for k in batch)
    assert sorted(os.listdir(run.rollouts)) == ["step_3"]  # no temp folder left
    with pytest.raises(FileExistsError):
        write_rollout(run, 3, batch, fake_meta(2))


def test_missing_run_folder_is_not_recreated(tmp_path: Path) -> None:
    run = RunPaths(tmp_path, "gone")
    with pytest.raises(OSError):
        write_rollout(run, 0, fake_rollout(8), fake_meta())
    assert not run.root.exists()


def _publish(
    run: RunPaths, step: int, tensors: dict, meta: object, raw: bytes | None = None
) -> None:
    folder = run.rollout(step)
    folder.mkdir(parents=True)
    save_file(tensors, str(folder / "rollout.safetensors"))
    if raw is not None:
        (folder / "rollout.safetensors").write_bytes(raw)
    (folder / "meta.json").write_text(json.dumps(meta))


def test_truncated_file(run: RunPaths) -> None:
    _publish(run, 0, fake_rollout(64), fake_meta())
    path = run.rollout_tensors(0)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(RolloutError, match="corrupt or truncated") as err:
        read_rollout(run, 0, 4, "discrete", 2)
    assert str(path) in str(err.value)


def test_garbage_file(run: RunPaths) -> None:
    _publish(run, 0, fake_rollout(8), fake_meta(), raw=b"\x00" * 100)
    with pytest.raises(RolloutError, match="corrupt or truncated"):
        read_rollout(run, 0, 4, "discrete", 2)


def _bad(key: str, value: torch.Tensor | None) -> dict:
    t = fake_rollout(32)
    if value is None:
        del t[key]
    else:
        t[key] = value
    return t


@pytest.mark.parametrize(
    "tensors, key",
    [
        (_bad("obs", torch.zeros(32, 5)), "obs"),
        (_bad("obs", torch.zeros(32, 4, dtype=torch.float64)), "obs"),
        (_bad("logp", torch.zeros(31)), "logp"),
        (_bad("values", None), "values"),
        (_bad("actions", torch.full((32,), 2)), "actions"),
        (_bad("actions", torch.zeros(32)), "actions"),
        (_bad("returns", torch.full((32,), float("nan"))), "returns"),
        ({**fake_rollout(32), "extra": torch.zeros(1)}, None),
    ],
)
def test_bad_tensors_name_the_key(run: RunPaths, tensors: dict, key: str | None) -> None:
    _publish(run, 0, tensors, fake_meta())
    with pytest.raises(RolloutError) as err:
        read_rollout(run, 0, 4, "discrete", 2)
    msg = str(err.value)
    assert str(run.rollout_tensors(0)) in msg
    assert (f"key {key!r}" in msg) if key else "unexpected key" in msg


@pytest.mark.parametrize(
    "meta, field",
    [
        ({**fake_meta(), "policy_step": 5}, "policy_step"),
        ({**fake_meta(), "policy_step": "0"}, "policy_step"),
        ({**fake_meta(), "episode_returns": ["x"]}, "episode_returns"),
        ({**fake_meta(), "obs_norm": {"mean": [0.0], "var": [1.0]}}, "obs_norm"),
        ([1, 2], None),
    ],
)
def test_bad_meta_names_the_field(run: RunPaths, meta: object, field: str | None) -> None:
    _publish(run, 2, fake_rollout(8), meta)
    with pytest.raises(RolloutError) as err:
        read_rollout(run, 2, 4, "discrete", 2)
    assert str(run.rollout_meta(2)) in str(err.value)
    if field:
        assert field in str(err.value)
