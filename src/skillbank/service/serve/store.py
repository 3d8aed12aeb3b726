"""Tenants in the outputs folder: one ``run_<model id>/`` each, in the service's protocol.

::

    OUT/run_<id>/control/tenant.json     owner digest, LoRA config, names of saved states
    OUT/run_<id>/checkpoints/step_<N>/   save_state: trainer/rank_0.pt (adapter + Adam
                                         state, the service's key space), weight/ (PEFT), STABLE
    OUT/run_<id>/broadcasts/step_<N>/    save_weights_for_sampler: PEFT adapter, STABLE

``N`` is the tenant's optimiser step at the save. Tinker paths name them
``tinker://<id>/weights/<name>`` and ``tinker://<id>/sampler_weights/<name>``; a name the
client gives is recorded in ``tenant.json`` (default name: ``step_<N>``). A checkpoint
written by ``skillbank convert-adapter`` (``step_0``, no Adam state) loads like any other.
All writes are atomic (staged, renamed, then STABLE); the outputs folder is flock-ed by the
server while it runs.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from skillbank.io import read_json, write_json
from skillbank.lora import peft_io
from skillbank.service.protocol import checkpoint as ckpt
from skillbank.service.protocol.files import hold_lock
from skillbank.service.protocol.paths import OutPaths, RunPaths, parse_step, step_name
from skillbank.service.serve.engine import LoraState, Moments
from skillbank.service.serve.errors import field_error, not_found

KINDS = {"weights": "training", "sampler_weights": "sampler"}
"""Tinker path segment -> checkpoint type."""
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}")
_SESSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]{0,63}")
TENANT_JSON = "tenant.json"
"""In the run's control folder (ask: a ``RunPaths.tenant_json`` in protocol/paths.py)."""


@dataclass
class Tenant:
    """A training client's record (what ``tenant.json`` holds)."""

    model_id: str
    owner: str
    rank: int
    seed: int
    groups: dict[str, bool]
    created: float = field(default_factory=time.time)
    names: dict[str, dict[str, int]] = field(
        default_factory=lambda: {"weights": {}, "sampler_weights": {}}
    )
    user_metadata: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def tinker_path(model_id: str, kind: str, name: str) -> str:
    return f"tinker://{model_id}/{kind}/{name}"


class Store:
    """The outputs folder of a server (locked for the server's lifetime)."""

    def __init__(self, out: Path, base_name: str) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.paths = OutPaths(out)
        self.base_name = base_name
        self._lock_fd = hold_lock(out, "another skillbank serve or trainer uses it", folder=True)

    def run(self, model_id: str) -> RunPaths:
        """The run folder of a model id ``<session>:train:<n>``: ``run_<session>.train.<n>``."""
        return self.paths.run(model_id.replace(":", "."))

    def tenant_json(self, model_id: str) -> Path:
        return self.run(model_id).control / TENANT_JSON

    # ---------------------------------------------------------------- tenants
    @staticmethod
    def model_id(session_id: Any, seq: Any) -> str:
        """The SDK's model id rule (it derives the id of a model created by load_state
        itself): ``<session id>:train:<model_seq_id>``."""
        if not isinstance(session_id, str) or not _SESSION.fullmatch(session_id):
            raise field_error("session_id", f"{session_id!r} is not a session id")
        if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq < 10**9:
            raise field_error("model_seq_id", f"expected an integer >= 0, got {seq!r}")
        return f"{session_id}:train:{seq}"

    def save_tenant(self, t: Tenant) -> None:
        run = self.run(t.model_id)
        run.control.mkdir(parents=True, exist_ok=True)
        write_json(self.tenant_json(t.model_id), t.to_json())

    def tenants(self) -> list[Tenant]:
        """Every tenant recorded in the outputs folder (a restarted server's tenants)."""
        out = []
        for _entry, path in self.paths.run_candidates():
            file = path / "control" / TENANT_JSON
            if not file.is_file():
                continue
            data = read_json(file)
            try:
                out.append(Tenant(**data))
            except TypeError:
                continue  # not written by this server version: left alone
        return out

    # ------------------------------------------------------------------ saving
    def check_name(self, name: str | None, step: int) -> str:
        if name is None or name == "":
            return step_name(step)
        if not _NAME.fullmatch(name) or ".." in name:
            raise field_error("path", f"checkpoint name {name!r}: use letters, digits, _ . -")
        return name

    def save_state(
        self, t: Tenant, step: int, state: LoraState, optim: tuple[int, Moments], name: str
    ) -> str:
        tensors = {**ckpt.adapter_tensors(state), **ckpt.optimizer_tensors(*optim)}
        tensors["run.step"] = torch.tensor(step, dtype=torch.int64)
        run = self.run(t.model_id)
        ckpt.write_checkpoint(run, step, tensors, state, self.paths.staging, self.base_name)
        return self._name(t, "weights", name, step)

    def save_sampler(self, t: Tenant, step: int, state: LoraState, name: str) -> str:
        run = self.run(t.model_id)
        ckpt.write_broadcast(run, step, state, None, self.paths.staging, self.base_name)
        return self._name(t, "sampler_weights", name, step)

    def _name(self, t: Tenant, kind: str, name: str, step: int) -> str:
        t.names[kind][name] = step
        self.save_tenant(t)
        return tinker_path(t.model_id, kind, name)

    # ----------------------------------------------------------------- reading
    def parse(self, path: str, owner: str, tenants: dict[str, Tenant]) -> tuple[Tenant, str, int]:
        """(tenant, kind, step) of a ``tinker://`` path this owner may read."""
        m = re.fullmatch(r"tinker://([^/]+)/([a-z_]+)/([^/]+)", path or "")
        if m is None:
            raise field_error("path", f"{path!r} is not tinker://<model id>/weights/<name>")
        mid, kind, name = m.groups()
        t = tenants.get(mid) or self.imported(mid)
        if t is None or t.owner not in (owner, ""):
            raise not_found("model", "path", mid)
        if kind not in KINDS:
            raise field_error("path", f"kind {kind!r} not in {sorted(KINDS)}")
        step = t.names.get(kind, {}).get(name, parse_step(name))
        if step is None:
            raise not_found("checkpoint", "path", path)
        run = self.run(mid)
        ok = run.checkpoint_stable(step) if kind == "weights" else run.broadcast_stable(step)
        if not ok.is_file():
            raise not_found("checkpoint", "path", path)
        return t, kind, step

    def imported(self, run_name: str) -> Tenant | None:
        """A run folder put in the outputs folder by the operator (``convert-adapter``, a
        copied run): no ``tenant.json``, a STABLE checkpoint. Every key may load from it."""
        try:
            run = self.paths.run(run_name)
        except ValueError:
            return None
        if (run.control / TENANT_JSON).is_file() or run.newest_stable_checkpoint() is None:
            return None
        return Tenant(run_name, "", 0, 0, {})

    def read_state(self, t: Tenant, step: int) -> tuple[LoraState, tuple[int, Moments] | None]:
        run = self.run(t.model_id)
        tensors = ckpt.load_rank_file(run.rank_file(step))
        state = ckpt.adapter_state(tensors, run.rank_file(step))
        return state, ckpt.optimizer_state(tensors, run.rank_file(step))

    def read_sampler(self, t: Tenant, kind: str, step: int) -> LoraState:
        run = self.run(t.model_id)
        folder = run.broadcast(step) if kind == "sampler_weights" else run.weight(step)
        return dict(peft_io.read_adapter(folder).state)

    def newest_checkpoint(self, t: Tenant) -> int | None:
        return self.run(t.model_id).newest_stable_checkpoint()

    def list_checkpoints(self, t: Tenant) -> list[dict[str, Any]]:
        """Tinker ``Checkpoint`` records of the tenant's saved states, oldest first."""
        run, out = self.run(t.model_id), []
        for kind, names in t.names.items():
            for name, step in names.items():
                folder = run.checkpoint(step) if kind == "weights" else run.broadcast(step)
                if not (folder / "STABLE").is_file():
                    continue
                stamp = (folder / "STABLE").stat().st_mtime
                out.append(
                    {
                        "checkpoint_id": f"{kind}/{name}",
                        "checkpoint_type": KINDS[kind],
                        "time": datetime.fromtimestamp(stamp, timezone.utc).isoformat(),
                        "tinker_path": tinker_path(t.model_id, kind, name),
                        "size_bytes": sum(
                            f.stat().st_size for f in folder.rglob("*") if f.is_file()
                        ),
                        "public": False,
                    }
                )
        return sorted(out, key=lambda c: c["time"])
