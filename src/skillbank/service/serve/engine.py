"""The resident model: a frozen Hugging Face causal LM with stacked LoRA slots, one
``SlotAdam`` over them, the fused forward/backward of many tenants, and per-slot state.

Slots ``0 .. train_slots-1`` belong to training tenants; the next ``sampler_slots`` hold
saved sampler weights. Slot ``-1`` is the base alone. Gradients accumulate per slot row
(``forward_backward`` adds, ``optim_step`` applies and clears the tenant's row only), so the
calls of different tenants never mix.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from skillbank.algos.slot_adam import SlotAdam
from skillbank.errors import ConfigError
from skillbank.lora import MultiLoraModel
from skillbank.service.serve.errors import ServeError, field_error
from skillbank.service.serve.losses import Loss, datum_loss
from skillbank.service.serve.wire import Datum

GROUPS: dict[str, tuple[str, ...]] = {
    "train_attn": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "train_mlp": ("gate_proj", "up_proj", "down_proj"),
    "train_unembed": ("lm_head",),
}
"""Which projections each of Tinker's LoraConfig flags trains."""
LORA_ALPHA = 32.0
"""Tinker's LoRA alpha: scaling = 32 / rank."""

LoraState = dict[str, tuple[Tensor, Tensor, float]]
Moments = dict[str, tuple[Tensor, Tensor]]


@dataclass
class Work:
    """One tenant's share of a fused pass: its slot, checked datums and loss."""

    slot: int
    data: list[Datum]
    loss: Loss
    config: dict[str, float]
    forward_only: bool


@dataclass
class WorkResult:
    outputs: list[dict[str, np.ndarray]] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    error: ServeError | None = None


def load_hf_base(folder: str | os.PathLike[str]) -> tuple[nn.Module, Any]:
    """(model, tokenizer or None) of a Hugging Face causal-LM folder, in float32."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging

    logging.set_verbosity_error()
    path = Path(folder)
    if not (path / "config.json").is_file():
        raise ConfigError(f"{path}: field 'base': not a model folder (no config.json)")
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
    try:
        tok = AutoTokenizer.from_pretrained(str(path))
    except Exception:  # no HF tokenizer in the folder: token ids only (stop strings off)
        tok = None
    return model, tok


class Engine:
    """The multi-LoRA model and its optimiser (used from one thread only: the worker)."""

    def __init__(
        self, base: nn.Module, tokenizer: Any, train_slots: int, sampler_slots: int, capacity: int
    ) -> None:
        names = {n.rsplit(".", 1)[-1] for n, m in base.named_modules() if isinstance(m, nn.Linear)}
        targets = sorted({t for group in GROUPS.values() for t in group} & names)
        if not targets:
            raise ConfigError("base: no q/k/v/o, gate/up/down or lm_head projections to adapt")
        self.train_slots, self.sampler_slots = train_slots, sampler_slots
        self.num_slots = train_slots + sampler_slots
        self.mm = MultiLoraModel(base, self.num_slots, capacity, targets)
        self.mm.eval()
        self.capacity = capacity
        self.tokenizer = tokenizer
        cfg: Any = base.config
        self.vocab = int(cfg.vocab_size)
        self.max_len = int(getattr(cfg, "max_position_embeddings", 2048))
        self.params = self.mm.slot_parameters()
        self.layer_names = list(self.mm.layers)
        for p in self.params:
            p.grad = torch.zeros_like(p)
        self.opt = SlotAdam(self.params, self.num_slots, lr=1e-4, betas=(0.9, 0.95), eps=1e-12)

    # ------------------------------------------------------------------ slots
    def init_slot(self, slot: int, rank: int, seed: int, groups: dict[str, bool]) -> None:
        """A fresh adapter (A random from ``seed``, B = 0) on the trained groups only."""
        if not 1 <= rank <= self.capacity:
            raise field_error("lora_config.rank", f"{rank} not in [1, {self.capacity}]")
        gen = torch.Generator().manual_seed(int(seed))
        for name, layer in self.mm.layers.items():
            short = name.rsplit(".", 1)[-1]
            on = any(groups.get(g, True) and short in ts for g, ts in GROUPS.items())
            if on:
                layer.reset_slot(slot, rank, LORA_ALPHA, generator=gen)
            else:
                layer.zero_slot(slot)
        self.opt.reset_slot(slot)
        self.zero_grad(slot)

    @torch.no_grad()
    def zero_grad(self, slot: int) -> None:
        for p in self.params:
            assert p.grad is not None
            p.grad[slot].zero_()

    def _rank(self, name: str, slot: int) -> int:
        rank: Any = self.mm.layers[name].slot_rank
        return int(rank[slot])

    def lora_state(self, slot: int) -> LoraState:
        return self.mm.slot_state(slot)

    def moments(self, slot: int) -> tuple[int, Moments]:
        """(step, {"<module>.A": (exp_avg, exp_avg_sq), ...}) cut to each layer's rank."""
        out: Moments = {}
        for i, name in enumerate(self.layer_names):
            r = self._rank(name, slot)
            if r == 0:
                continue
            a, b = 2 * i, 2 * i + 1
            out[f"{name}.A"] = (self.opt.exp_avg[a][slot, :r], self.opt.exp_avg_sq[a][slot, :r])
            out[f"{name}.B"] = (
                self.opt.exp_avg[b][slot, :, :r],
                self.opt.exp_avg_sq[b][slot, :, :r],
            )
        return int(self.opt.steps[slot]), {k: (m.clone(), v.clone()) for k, (m, v) in out.items()}

    @torch.no_grad()
    def load_slot(self, slot: int, state: LoraState, optim: tuple[int, Moments] | None) -> int:
        """Load an adapter (and Adam state, if any) into ``slot``; returns its rank."""
        for name, (a, _, _) in state.items():
            if name not in self.mm.layers or a.shape[0] > self.capacity:
                raise field_error("path", f"checkpoint module {name!r} does not fit this base")
        self.mm.load_slot_state(slot, state)
        self.opt.reset_slot(slot)
        self.zero_grad(slot)
        if optim is not None:
            step, moments = optim
            for i, name in enumerate(self.layer_names):
                for j, part in ((2 * i, "A"), (2 * i + 1, "B")):
                    if f"{name}.{part}" not in moments:
                        continue
                    m, v = moments[f"{name}.{part}"]
                    idx: tuple[int | slice, ...] = (slot, slice(0, m.shape[0]))
                    if part == "B":
                        idx = (slot, slice(None), slice(0, m.shape[1]))
                    self.opt.exp_avg[j][idx] = m
                    self.opt.exp_avg_sq[j][idx] = v
            self.opt.steps[slot] = int(step)
        return max((int(a.shape[0]) for a, _, _ in state.values()), default=0)

    def copy_to(self, src: int, dst: int) -> None:
        self.mm.copy_slot(src, dst)

    # ------------------------------------------------------------- fused pass
    def fused(self, works: list[Work]) -> list[WorkResult]:
        """ONE forward (and backward) for every tenant's datums: rows routed by slot."""
        rows = [(w.slot, d) for w in works for d in w.data]
        longest = max(int(d.tokens.numel()) for _, d in rows)
        tokens = torch.zeros(len(rows), longest, dtype=torch.int64)
        for b, (_, d) in enumerate(rows):
            tokens[b, : d.tokens.numel()] = d.tokens  # right padding: causal rows ignore it
        slot_ids = torch.tensor([s for s, _ in rows], dtype=torch.int64)
        need_grad = any(not w.forward_only for w in works)
        with torch.set_grad_enabled(need_grad), self.mm.slots(slot_ids):
            logits = self.mm.base(input_ids=tokens).logits
        logp_all = torch.log_softmax(logits.float(), dim=-1)
        results, total, first = [], None, 0
        for w in works:
            res, item_loss = WorkResult(), None
            try:
                for b, d in enumerate(w.data, start=first):
                    n = int(d.tokens.numel())
                    tgt = d.inputs["target_tokens"].view(n, 1)
                    logp = logp_all[b, :n].gather(1, tgt).view(n)
                    el = datum_loss(w.loss, logp, d, w.config)
                    item_loss = el.sum() if item_loss is None else item_loss + el.sum()
                    res.outputs.append(
                        {
                            "logprobs": logp.detach().numpy().astype(np.float32),
                            "elementwise_loss": el.detach().numpy().astype(np.float32),
                        }
                    )
            except ServeError as e:
                res, item_loss = WorkResult(error=e), None
            first += len(w.data)
            if item_loss is not None:
                res.metrics = {"loss:sum": float(item_loss.detach())}
                if not w.forward_only and item_loss.requires_grad:
                    total = item_loss if total is None else total + item_loss
            results.append(res)
        if total is not None:
            total.backward()
        return results

    # -------------------------------------------------------------- optimiser
    @staticmethod
    def adam_params(adam: dict[str, float]) -> tuple[float, float, float, float, float, float]:
        """(lr, beta1, beta2, eps, weight_decay, grad_clip_norm) of Tinker's AdamParams."""
        vals = (
            ("learning_rate", 1e-4, lambda v: v >= 0),
            ("beta1", 0.9, lambda v: 0 <= v < 1),
            ("beta2", 0.95, lambda v: 0 <= v < 1),
            ("eps", 1e-12, lambda v: v >= 0),
            ("weight_decay", 0.0, lambda v: v >= 0),
            ("grad_clip_norm", 0.0, lambda v: v >= 0),
        )
        out = []
        for name, default, ok in vals:
            v = adam.get(name, default)
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                raise field_error(f"adam_params.{name}", f"expected a number, got {v!r}")
            if not (math.isfinite(v) and ok(v)):
                raise field_error(f"adam_params.{name}", f"invalid value {v!r}")
            out.append(float(v))
        return tuple(out)  # type: ignore[return-value]

    @torch.no_grad()
    def optim_steps(self, steps: list[tuple[int, dict[str, float]]]) -> list[Any]:
        """AdamW steps of several slots (one SlotAdam step per group of equal betas and
        eps); each result is the slot's metrics or a ServeError. Clears their gradients."""
        results: list[Any] = [None] * len(steps)
        groups: dict[tuple[float, float, float], list[int]] = {}
        for i, (slot, adam) in enumerate(steps):
            try:
                lr, b1, b2, eps, wd, clip = self.adam_params(adam)
            except ServeError as e:
                results[i] = e
                continue
            grads = [p.grad[slot] for p in self.params if p.grad is not None]
            norm = math.sqrt(sum(float((g.double() ** 2).sum()) for g in grads))
            if not math.isfinite(norm):
                self.zero_grad(slot)
                results[i] = ServeError("gradient is NaN or infinite: step skipped, cleared")
                continue
            if clip > 0 and norm > clip:
                for g in grads:
                    g.mul_(clip / (norm + 1e-6))
            if wd > 0:
                for p in self.params:
                    p[slot].mul_(1.0 - lr * wd)
            self.opt.lr[slot] = lr
            groups.setdefault((b1, b2, eps), []).append(i)
            results[i] = {"grad_norm:mean": norm}
        for (b1, b2, eps), idx in groups.items():
            slots = sorted({steps[i][0] for i in idx})
            self.opt.beta1, self.opt.beta2, self.opt.eps = b1, b2, eps
            self.opt.set_active(slots)
            self.opt.step()
            for k in slots:
                self.zero_grad(k)
            for i in idx:
                results[i]["step:max"] = float(self.opt.steps[steps[i][0]])
        return results

    def optim_step(self, slot: int, adam: dict[str, float]) -> dict[str, float]:
        """One AdamW step of ``slot`` with Tinker's AdamParams; clears its gradient."""
        out = self.optim_steps([(slot, adam)])[0]
        if isinstance(out, ServeError):
            raise out
        return out

    def step_of(self, slot: int) -> int:
        return int(self.opt.steps[slot])
