"""What each Tinker call does, on top of the engine, the tenant table and the store.

``Server`` is built once per process. Methods named ``op_*`` return an ``Op`` for the
worker's queue (they run in the worker thread); the others answer at once. Every check
on a request's fields raises a ServeError naming the field.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from skillbank.service.serve.config import ServeConfig
from skillbank.service.serve.engine import GROUPS, Engine, Work, load_hf_base
from skillbank.service.serve.errors import Unsupported, field_error, not_found
from skillbank.service.serve.losses import check_datums
from skillbank.service.serve.sampling import SampleJob, generate
from skillbank.service.serve.store import Store, Tenant
from skillbank.service.serve.tenants import Tenants
from skillbank.service.serve.wire import (
    FwdBwd,
    decode_tokens,
    encode_fwdbwd_output,
    encode_sample_output,
)
from skillbank.service.serve.worker import Op, Worker


@dataclass
class Sampler:
    """A sampling session: the owner and what it samples (None: the base)."""

    owner: str
    model_path: str | None
    target: tuple[Tenant, str, int] | None  # (tenant, kind, step)


def _int(body: dict[str, Any], name: str, default: int | None = None, lo: int = 0) -> int:
    v = body.get(name, default)
    if not isinstance(v, int) or isinstance(v, bool) or v < lo:
        raise field_error(name, f"expected an integer >= {lo}, got {v!r}")
    return v


def _num(body: dict[str, Any], name: str, default: float) -> float:
    v = body.get(name, default)
    if v is None:
        v = default
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
        raise field_error(name, f"expected a finite number, got {v!r}")
    return float(v)


class Server:
    """The state of one ``skillbank serve`` process."""

    def __init__(self, cfg: ServeConfig) -> None:
        self.cfg = cfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.base_name = str(Path(cfg.base).resolve())
        model, tok = load_hf_base(cfg.base)
        self.engine = Engine(model, tok, cfg.max_tenants, cfg.sampler_slots, cfg.max_rank)
        self.store = Store(Path(cfg.out), self.base_name)
        self.tenants = Tenants(self.engine, self.store, cfg.idle_timeout_s)
        self.sessions: dict[str, str] = {}
        self.samplers: dict[str, Sampler] = {}
        self.rng = secrets.SystemRandom()
        self.worker = Worker(
            self._fused,
            self._sample,
            self.engine.optim_steps,
            cfg.fuse_window_ms / 1000.0,
            self.tenants.unload_idle,
        )
        eos = getattr(model.config, "eos_token_id", None)
        self.eos = {eos} if isinstance(eos, int) else set(eos or [])

    def start(self) -> None:
        self.worker.start()

    def close(self) -> None:
        """Stop the worker, then save and unload every resident tenant."""
        self.worker.stop()
        self.tenants.save_all()

    # -------------------------------------------------------------- sessions
    def create_session(self, owner: str) -> dict[str, Any]:
        sid = f"sess-{secrets.token_hex(8)}"
        self.sessions[sid] = owner
        return {"session_id": sid, "type": "create_session"}

    def capabilities(self) -> dict[str, Any]:
        return {
            "supported_models": [
                {
                    "model_name": self.base_name,
                    "max_context_length": self.engine.max_len,
                    "trainable": True,
                    "sampleable": True,
                }
            ]
        }

    def _check_base(self, name: Any, field: str = "base_model") -> None:
        if name is not None and str(name) != self.base_name:
            raise field_error(
                field, f"unknown base model {name!r}; this server has {self.base_name!r}"
            )

    def get_info(self, owner: str, body: dict[str, Any]) -> dict[str, Any]:
        t = self.tenants.get(str(body.get("model_id", "")), owner)
        arch = getattr(self.engine.mm.base.config, "model_type", None)
        return {
            "type": "get_info",
            "model_data": {
                "arch": arch,
                "model_name": self.base_name,
                "tokenizer_id": self.base_name,
            },
            "model_id": t.model_id,
            "is_lora": True,
            "lora_rank": t.rank,
            "model_name": self.base_name,
        }

    # --------------------------------------------------------------- models
    def _new_model_id(self, owner: str, body: dict[str, Any]) -> str:
        sid = body.get("session_id")
        mid = self.store.model_id(sid, body.get("model_seq_id"))
        if self.sessions.setdefault(str(sid), owner) != owner:
            raise not_found("session", "session_id", str(sid))
        if mid in self.tenants.snapshot():
            raise field_error("model_seq_id", f"model {mid!r} exists already")
        return mid

    def op_create_model(self, owner: str, body: dict[str, Any]) -> Op:
        self._check_base(body.get("base_model"))
        lora = body.get("lora_config")
        if not isinstance(lora, dict):
            raise Unsupported("field 'lora_config': full fine-tuning (give a LoRA config)")
        rank = _int(lora, "rank", None, 1)
        if rank > self.cfg.max_rank:
            raise field_error(
                "lora_config.rank", f"{rank} above the server's --max-rank {self.cfg.max_rank}"
            )
        seed = lora.get("seed")
        seed = self.rng.randrange(2**31) if seed is None else _int(lora, "seed")
        groups = {g: bool(lora.get(g, True)) for g in GROUPS}
        if not any(groups.values()):
            raise field_error(
                "lora_config", "train_attn, train_mlp and train_unembed are all false"
            )
        opt = body.get("optimizer_config") or {}
        if opt.get("type", "adamw") != "adamw":
            raise Unsupported(f"field 'optimizer_config.type': {opt.get('type')!r} (only adamw)")
        meta = body.get("user_metadata") or {}
        mid = self._new_model_id(owner, body)
        t = Tenant(mid, owner, rank, seed, groups, user_metadata=dict(meta))

        def run() -> dict[str, Any]:
            self.tenants.add(t)
            return {"model_id": t.model_id, "type": "create_model"}

        return Op("call", owner, t.model_id, self.worker.new_future(owner, t.model_id), run=run)

    def op_pass(self, owner: str, req: FwdBwd) -> Op:
        t = self.tenants.get(req.model_id, owner)
        if len(req.data) > self.cfg.max_datums:
            raise field_error(
                "data", f"{len(req.data)} datums, above the limit {self.cfg.max_datums}"
            )

        def prepare() -> Work:
            loss = check_datums(
                req.data, req.loss_fn, req.config, self.engine.vocab, self.engine.max_len
            )
            return Work(self.tenants.slot(t), req.data, loss, req.config, req.forward_only)

        return Op(
            "pass", owner, t.model_id, self.worker.new_future(owner, t.model_id), prepare=prepare
        )

    def _fused(self, works: list[Work]) -> list[Any]:
        return [
            r.error if r.error is not None else encode_fwdbwd_output(r.outputs, r.metrics)
            for r in self.engine.fused(works)
        ]

    def op_optim_step(self, owner: str, body: dict[str, Any]) -> Op:
        t = self.tenants.get(str(body.get("model_id", "")), owner)
        if "adam_params" not in body:
            raise Unsupported("field 'optimizer_params': only adam_params (AdamParams)")
        adam = body["adam_params"]
        if not isinstance(adam, dict):
            raise field_error("adam_params", "expected an object")

        self.engine.adam_params(adam)  # refused at once when a value is bad

        def step() -> tuple[int, dict[str, Any]]:
            return self.tenants.slot(t), adam

        return Op("optim", owner, t.model_id, self.worker.new_future(owner, t.model_id), step=step)

    # ---------------------------------------------------------- save / load
    def op_save_state(self, owner: str, body: dict[str, Any]) -> Op:
        t = self.tenants.get(str(body.get("model_id", "")), owner)

        def run() -> dict[str, Any]:
            slot = self.tenants.slot(t)
            step = self.engine.step_of(slot)
            name = self.store.check_name(body.get("path"), step)
            state, optim = self.engine.lora_state(slot), self.engine.moments(slot)
            path = self.store.save_state(t, step, state, optim, name)
            return {"path": path, "type": "save_weights"}

        return Op("call", owner, t.model_id, self.worker.new_future(owner, t.model_id), run=run)

    def op_save_sampler(self, owner: str, body: dict[str, Any]) -> Op:
        t = self.tenants.get(str(body.get("model_id", "")), owner)
        if body.get("kind", "snapshot") != "snapshot":
            raise Unsupported(
                f"field 'kind': {body.get('kind')!r} sampling clients (only snapshot)"
            )

        def run() -> dict[str, Any]:
            slot = self.tenants.slot(t)
            step = self.engine.step_of(slot)
            name = self.store.check_name(body.get("path"), step)
            path = self.store.save_sampler(t, step, self.engine.lora_state(slot), name)
            out: dict[str, Any] = {"path": path, "type": "save_weights_for_sampler"}
            if body.get("path") is None:
                sid = f"samp-{secrets.token_hex(8)}"
                self.samplers[sid] = Sampler(owner, path, (t, "sampler_weights", step))
                out["sampling_session_id"] = sid
            return out

        return Op("call", owner, t.model_id, self.worker.new_future(owner, t.model_id), run=run)

    def op_load_state(self, owner: str, body: dict[str, Any]) -> Op:
        path = body.get("path")
        if not isinstance(path, str):
            raise field_error("path", "missing")
        src, kind, step = self.store.parse(path, owner, self.tenants.snapshot())
        if kind != "weights":
            raise field_error("path", "load_state takes a training checkpoint (…/weights/…)")
        with_optim = bool(body.get("optimizer", False))
        if body.get("model_id"):
            t = self.tenants.get(str(body["model_id"]), owner)
        else:
            self._check_base(body.get("base_model"))
            state, _ = self.store.read_state(src, step)
            rank = max(int(a.shape[0]) for a, _, _ in state.values())
            mid = self._new_model_id(owner, body)
            t = Tenant(mid, owner, rank, src.seed, dict(src.groups))

        def run() -> dict[str, Any]:
            state, optim = self.store.read_state(src, step)
            if t.model_id not in self.tenants.known:
                self.tenants.add(t)
            slot = self.tenants.slot(t)
            t.rank = self.engine.load_slot(slot, state, optim if with_optim else None)
            self.store.save_tenant(t)
            return {"path": path, "model_id": t.model_id, "type": "load_weights"}

        return Op("call", owner, t.model_id, self.worker.new_future(owner, t.model_id), run=run)

    def list_checkpoints(self, owner: str, model_id: str) -> dict[str, Any]:
        t = self.tenants.get(model_id, owner)
        cks = self.store.list_checkpoints(t)
        return {
            "checkpoints": cks,
            "cursor": {"offset": 0, "limit": len(cks), "total_count": len(cks)},
        }

    # -------------------------------------------------------------- sampling
    def _new_sampler(self, owner: str, body: dict[str, Any]) -> Sampler:
        """What a request samples: saved weights (``model_path``) or the base."""
        path = body.get("model_path")
        if not path:
            self._check_base(body.get("base_model"))
            return Sampler(owner, None, None)
        target = self.store.parse(str(path), owner, self.tenants.snapshot())
        return Sampler(owner, str(path), target)

    def create_sampling_session(self, owner: str, body: dict[str, Any]) -> dict[str, Any]:
        sid = f"samp-{secrets.token_hex(8)}"
        self.samplers[sid] = self._new_sampler(owner, body)
        return {"sampling_session_id": sid, "type": "create_sampling_session"}

    def sampler(self, owner: str, sid: str) -> Sampler:
        s = self.samplers.get(sid)
        if s is None or s.owner != owner:
            raise not_found("sampling session", "sampling_session_id", sid)
        return s

    def op_sample(self, owner: str, body: dict[str, Any]) -> tuple[Op, list[str]]:
        sid = body.get("sampling_session_id")
        s = self.sampler(owner, str(sid)) if sid else self._new_sampler(owner, body)
        job = self._sample_job(body)
        for unsupported in ("topk_prompt_logprobs", "topk_sample_logprobs", "prompt_alt_tokens_k"):
            if body.get(unsupported):
                raise Unsupported(f"field {unsupported!r}")
        if body.get("target_prompt_logprobs") is not None:
            raise Unsupported("field 'target_prompt_logprobs'")

        def make() -> SampleJob:
            if s.target is not None:
                job.slot = self.tenants.sampler_slot(*s.target)
            return job

        mid = s.target[0].model_id if s.target else None
        op = Op("sample", owner, mid, self.worker.new_future(owner, mid), job=make)
        ids = [f"seq-{secrets.token_hex(6)}" for _ in range(job.num_samples)]
        return op, ids

    def _sample_job(self, body: dict[str, Any]) -> SampleJob:
        prompt = decode_tokens("prompt", body.get("prompt"))
        if not prompt:
            raise field_error("prompt", "no tokens")
        if max(prompt) >= self.engine.vocab or min(prompt) < 0:
            raise field_error("prompt", f"token ids must lie in [0, {self.engine.vocab})")
        if len(prompt) >= self.engine.max_len:
            raise field_error(
                "prompt", f"{len(prompt)} tokens: no room in the context {self.engine.max_len}"
            )
        n = _int(body, "num_samples", 1, 1)
        if n > self.cfg.max_num_samples:
            raise field_error("num_samples", f"{n} above the limit {self.cfg.max_num_samples}")
        sp = body.get("sampling_params")
        if not isinstance(sp, dict):
            raise field_error("sampling_params", "missing")
        mt = sp.get("max_tokens") or 16
        if not isinstance(mt, int) or not 1 <= mt <= self.cfg.max_sample_tokens:
            raise field_error(
                "sampling_params.max_tokens", f"must be in [1, {self.cfg.max_sample_tokens}]"
            )
        temp = _num(sp, "temperature", 1.0)
        top_p = _num(sp, "top_p", 1.0)
        if temp < 0 or not 0 < top_p <= 1:
            raise field_error("sampling_params", "temperature must be >= 0 and top_p in (0, 1]")
        top_k = sp.get("top_k", -1)
        seed = sp.get("seed")
        stop = sp.get("stop")
        stop_tokens, stop_strings = set(self.eos), []
        if isinstance(stop, str):
            stop_strings = [stop]
        elif isinstance(stop, list):
            stop_tokens = {x for x in stop if isinstance(x, int)}
            stop_strings = [x for x in stop if isinstance(x, str)]
        return SampleJob(
            slot=-1,
            prompt=prompt,
            num_samples=n,
            max_tokens=mt,
            temperature=temp,
            top_k=int(top_k) if isinstance(top_k, int) else -1,
            top_p=top_p,
            seed=int(seed) if isinstance(seed, int) else self.rng.randrange(2**31),
            stop_tokens=stop_tokens,
            stop_strings=stop_strings,
            prompt_logprobs=bool(body.get("prompt_logprobs")),
        )

    def _sample(self, jobs: list[SampleJob]) -> list[bytes]:
        outs = generate(self.engine.mm, jobs, self.engine.max_len, self.engine.tokenizer)
        return [encode_sample_output(seqs, plp) for seqs, plp in outs]
