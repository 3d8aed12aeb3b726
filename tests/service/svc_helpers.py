"""Helpers of the service tests: processes started and stopped by their pids, waiting,
TOML and rollout fixtures, and a hand-driven "fake trainer" for orchestrator tests."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from skillbank.lora import MultiLoraModel
from skillbank.service.protocol.base import slot_model
from skillbank.service.protocol.info import TrainerInfo, write_trainer_info
from skillbank.service.protocol.paths import OutPaths, RunPaths
from skillbank.service.protocol.rollout_io import write_rollout
from skillbank.service.trainer.base import resolve_base
from skillbank.service.trainer.config import TrainerConfig
from skillbank.service.trainer.loop import Trainer


def toml_text(fields: dict[str, Any]) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(fmt(x) for x in v) + "]"
        raise TypeError(v)

    top = [f"{k} = {fmt(v)}" for k, v in fields.items() if not isinstance(v, dict)]
    tables = [
        f"[{k}]\n" + "\n".join(f"{kk} = {fmt(vv)}" for kk, vv in v.items())
        for k, v in fields.items()
        if isinstance(v, dict)
    ]
    return "\n".join(top + tables) + "\n"


def write_trainer_toml(path: Path, out: Path, **fields: Any) -> Path:
    base = {"output_dir": str(out), "base_task": "cartpole", "max_concurrent_runs": 2}
    path.write_text(toml_text({**base, **fields}))
    return path


def write_orch(out: Path, name: str, text: str | None = None, **fields: Any) -> RunPaths:
    run = RunPaths(out, name)
    run.control.mkdir(parents=True, exist_ok=True)
    body = text if text is not None else toml_text({"task": "cartpole", **fields})
    tmp = run.control / ".orch.toml.tmp"
    tmp.write_text(body)
    os.replace(tmp, run.orch_toml)
    return run


def fake_rollout(rows: int = 256, obs_dim: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "obs": torch.randn(rows, obs_dim, generator=g).clamp(-5, 5),
        "actions": torch.randint(0, 2, (rows,), generator=g),
        "logp": torch.full((rows,), -0.6931),
        "values": torch.randn(rows, generator=g),
        "advantages": torch.randn(rows, generator=g),
        "returns": torch.randn(rows, generator=g),
    }


def fake_meta(policy_step: int = 0, ret: float | None = 20.0) -> dict[str, Any]:
    return {
        "policy_step": policy_step,
        "episode_returns": [] if ret is None else [ret],
        "recent_return": ret,
        "obs_norm": {"mean": [0.0] * 4, "var": [1.0] * 4, "count": 10.0},
    }


def fake_trainer(out: Path, k: int = 1) -> tuple[TrainerInfo, MultiLoraModel]:
    """Write what a trainer announces (OUT/base, trainer.json); returns a 1-slot model."""
    cfg = TrainerConfig(output_dir=str(out), base_task="cartpole", max_async_level=k)
    paths = OutPaths(out)
    out.mkdir(parents=True, exist_ok=True)
    base, info = resolve_base(cfg, paths, out / "trainer.toml")
    write_trainer_info(paths.trainer_json, info)
    model = slot_model(base, info, 1)
    model.reset_slot(0, 4, 8.0, generator=torch.Generator().manual_seed(0))
    return info, model


def remove_run(root: Path, timeout: float = 10.0) -> None:
    """Delete a run folder while the trainer and its orchestrator may still write into it,
    as a user's repeated ``rm -rf`` would: retry until it is gone."""
    deadline = time.monotonic() + timeout
    while root.exists():
        shutil.rmtree(root, ignore_errors=True)
        if time.monotonic() > deadline:
            raise AssertionError(f"{root} still exists after {timeout}s of deletion")
        time.sleep(0.01)


def status(out: Path) -> dict[str, Any]:
    try:
        return json.loads((out / "trainer_status.json").read_text()).get("runs", {})
    except (OSError, json.JSONDecodeError):
        return {}


MakeTrainer = Callable[..., Trainer]
"""The ``make_trainer`` fixture (conftest): an in-process trainer on the test's ``out``."""


def tick(t: Trainer) -> None:
    """One trainer tick, then wait for its background writes."""
    t.tick()
    t.io.flush()


def feed(run: RunPaths, step: int, seed: int = 0, **changes: torch.Tensor) -> None:
    """Write a fake rollout of ``step`` (128 rows) for ``run``."""
    write_rollout(run, step, {**fake_rollout(128, seed=seed), **changes}, fake_meta(step))
