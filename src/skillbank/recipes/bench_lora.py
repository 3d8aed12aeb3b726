"""Multi-LoRA forward benchmark (``skillbank bench lora`` = ``bench/multi_lora_forward.py``).

MLP 64 -> 256 -> 256 -> 8 (tanh), LoRA r=8 on every Linear, batch 4096, N skills mixed
uniformly in one batch (each skill B/N rows, rows shuffled). Printed, all measured in this
run: ms per batch and the ratio to the base alone for
  - base alone (plain nn.Sequential),
  - skillbank PolicyLibrary.forward on the shuffled mixed batch,
  - peft mixed-batch inference (``adapter_names=``), if peft is installed,
  - a loop over N separate full (merged) models, each on its own rows,
  - training step (forward + backward): skillbank (adapter grads) vs the base (all grads),
  - act() latency at batch 1 with 32 skills loaded vs the base alone;
  - act() latency p50 / p99 at batch 1 and 8 (one skill; 8 different skills), idle and
    beside busy processes this benchmark starts and stops, as ratios to the base
    network's forward at the same batch measured in the same rounds; also act() with
    the caller's thread count for small batches (no thread policy), the peer that shows
    what the policy buys.
Timing: median of interleaved repeats (peers alternate, so drift hits all alike).
"""

from __future__ import annotations

import copy
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from skillbank.lora import MultiLoraModel

DIMS = (64, 256, 256, 8)
BATCH = 4096
RANK = 8
# act() reads the action kind and observation size; 8 outputs = Box(4) mean + log-std
BENCH_CONFIG = {"kind": "bench_mlp", "kwargs": {"action_kind": "box", "obs_dim": DIMS[0]}}
LATENCY_SKILLS = 32


class BenchMLP(nn.Module):
    """The benchmark network; returns the output and a zero 'value' so that act() works."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(DIMS[:-1], DIMS[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(DIMS) - 2:
                layers.append(nn.Tanh())
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _time(fns: dict[str, Callable[[], object]], repeats: int, inner: int) -> dict[str, float]:
    """Median ms per call of each function, measured in interleaved rounds."""
    return {k: statistics.median(v) * 1e3 for k, v in _samples(fns, repeats, inner, 3).items()}


def _peft_model(base: nn.Module, adapters: list[dict], n: int) -> nn.Module | None:
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        return None
    targets = [name for name, m in base.named_modules() if isinstance(m, nn.Linear)]
    cfg = LoraConfig(r=RANK, lora_alpha=2 * RANK, target_modules=targets, init_lora_weights=False)
    model = get_peft_model(copy.deepcopy(base), cfg, adapter_name="s0")
    for k in range(1, n):
        model.add_adapter(f"s{k}", cfg)
    # copy skillbank's adapter weights so both compute the same thing
    for name, module in model.named_modules():
        lora_a, lora_b = getattr(module, "lora_A", None), getattr(module, "lora_B", None)
        if isinstance(lora_a, nn.ModuleDict) and isinstance(lora_b, nn.ModuleDict):
            path = name.split("base_model.model.", 1)[-1]
            for k in range(n):
                a, b, _ = adapters[k][path]
                for layers, w in ((lora_a, a), (lora_b, b)):
                    lin = layers[f"s{k}"]
                    assert isinstance(lin, nn.Linear)
                    lin.weight.data.copy_(w)
    return model.eval()


def run(
    threads: int = 2,
    quick: bool = False,
    sizes: tuple[int, ...] = (1, 8, 32, 128),
    only: str | None = None,
    busy: int = 1,
) -> list:
    """Print the forward table (``only="forward"``), the act() latency table
    (``only="latency"``) or both; ``busy`` CPU-burning processes beside the loaded rows."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    repeats, inner = (5, 5) if quick else (15, 10)
    base = BenchMLP().eval()
    x = torch.randn(BATCH, DIMS[0])
    rows: list = []
    if only in (None, "forward"):
        print(
            f"# multi-LoRA forward: MLP {'-'.join(map(str, DIMS))} tanh, r={RANK} on every "
            f"Linear, batch {BATCH}, torch {torch.__version__}, torch.set_num_threads({threads})"
        )
        print(
            f"{'N':>4} {'base ms':>8} {'skillbank':>16} {'peft mixed':>16} {'N full models':>16}"
            f" {'train base ms':>14} {'train skillbank':>16}"
        )
        for n in sizes:
            rows.append(_measure(n, base, x, repeats, inner))
        print(_memory_line(base))
    if only in (None, "latency"):
        rows.append(act_latency(base, threads, busy, rounds=10 if quick else 30))
    return rows


def _make_library(n: int, base: nn.Module) -> tuple[Any, MultiLoraModel, list[str]]:
    """A library over ``base`` with ``n`` random r=8 skills (``s0`` ...), and their model."""
    from skillbank.library.core import PolicyLibrary

    tmp = Path(tempfile.mkdtemp())
    lib = PolicyLibrary.create(tmp / "lib", base, BENCH_CONFIG, capacity=RANK)
    model = MultiLoraModel(copy.deepcopy(base), n, RANK)
    gen = torch.Generator().manual_seed(1)
    for k in range(n):
        model.reset_slot(k, RANK, 2 * RANK, generator=gen)
        for layer in model.layers.values():
            with torch.no_grad():
                layer.lora_B[k].normal_(0, 0.02, generator=gen)
    for k in range(n):
        lib.add_skill(f"s{k}", (model, k), {})
    return lib, model, [f"s{k}" for k in range(n)]


def _measure(n: int, base: nn.Module, x: torch.Tensor, repeats: int, inner: int) -> dict:
    """Forward and training-step timings for N skills mixed in one batch."""
    lib, model, names = _make_library(n, base)
    gen = torch.Generator().manual_seed(2)
    adapters = [model.slot_state(k) for k in range(n)]
    row_skill = [names[i % n] for i in torch.randperm(BATCH, generator=gen).tolist()]
    full = [model.merged_copy(k).eval() for k in range(n)]
    groups = [torch.tensor([i for i, s in enumerate(row_skill) if s == nm]) for nm in names]
    peft_model = _peft_model(base, adapters, n)
    fns: dict[str, Callable[[], object]] = {}
    with torch.no_grad():
        fns["base"] = lambda: base(x)
        fns["skillbank"] = lambda: lib.forward(x, row_skill)

        def loop_full() -> torch.Tensor:
            out = torch.empty(BATCH, DIMS[-1])
            for k, idx in enumerate(groups):
                out[idx] = full[k](x[idx])
            return out

        fns["full"] = loop_full
        if peft_model is not None:
            fns["peft"] = lambda: peft_model(x, adapter_names=row_skill)
        ref = loop_full()
        got = lib.forward(x, row_skill)
        assert torch.allclose(got, ref, atol=1e-4), "skillbank output differs from merged"
        t = _time(fns, repeats, inner)

    train_base = copy.deepcopy(base).train()
    lib.model.train()
    ids = lib.slot_ids(row_skill, BATCH)
    order = torch.argsort(ids, stable=True)
    xs, ids_sorted = x[order], ids[order]

    def step_base() -> None:
        train_base.zero_grad(set_to_none=True)
        train_base(x).square().mean().backward()

    def step_lora() -> None:
        lib.model.zero_grad(set_to_none=True)
        with lib.model.slots(ids_sorted):
            lib.model.base(xs).square().mean().backward()

    tt = _time({"base": step_base, "skillbank": step_lora}, repeats, inner)
    lib.model.eval()
    peft_s = f"{t['peft']:.2f} ({t['peft'] / t['base']:.2f}x)" if "peft" in t else "n/a"
    print(
        f"{n:>4} {t['base']:8.2f} {t['skillbank']:7.2f} ({t['skillbank'] / t['base']:.2f}x)"
        f" {peft_s:>16} {t['full']:7.2f} ({t['full'] / t['base']:.2f}x)"
        f" {tt['base']:14.2f} {tt['skillbank']:7.2f} ({tt['skillbank'] / tt['base']:.2f}x)"
    )
    return {"n": n, "forward_ms": t, "train_ms": tt}


def _samples(
    fns: dict[str, Callable[[], object]], rounds: int, calls: int, warmup: int = 20
) -> dict[str, list[float]]:
    """Seconds of every single call, the peers taking turns in rounds of ``calls`` calls."""
    for f in fns.values():
        for _ in range(warmup):
            f()
    out: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, f in fns.items():
            for _ in range(calls):
                t = time.perf_counter()
                f()
                out[name].append(time.perf_counter() - t)
    return out


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def start_busy(n: int) -> list[subprocess.Popen]:
    """``n`` CPU-burning child processes (stopped with ``stop_busy``)."""
    code = "while True: pass"
    return [subprocess.Popen([sys.executable, "-c", code]) for _ in range(n)]


def stop_busy(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        os.kill(proc.pid, signal.SIGTERM)
    for proc in procs:
        proc.wait(timeout=10)


def act_latency(base: nn.Module, threads: int, busy: int = 1, rounds: int = 30) -> dict:
    """p50 / p99 of act() at batch 1 and 8 with 32 skills loaded, idle and beside ``busy``
    CPU-burning processes, as ratios to the base network's forward at the same batch."""
    lib, _, names = _make_library(LATENCY_SKILLS, base)
    rng = torch.Generator().manual_seed(3)
    print(
        f"# act() latency, {LATENCY_SKILLS} skills loaded, torch.set_num_threads({threads})"
        f" (batches <= {lib.small_batch_rows} rows act with 1 thread); us p50 / p99 per call"
        f" and (ratio to the base network's forward at that batch, same rounds);"
        f" busy = {busy} CPU-burning process(es) on {os.cpu_count()} CPUs"
    )
    cols = ["base fwd", "base fwd 1 thread", "act(skill)", "act(8 skills)", "act(base)"]
    cols.append("act(skill) no policy")
    print(f"{'load':>6} {'batch':>5} " + " ".join(f"{c:>27}" for c in cols))
    result: dict = {"threads": threads, "busy": busy}
    for load in ("idle", "busy"):
        procs = start_busy(busy) if load == "busy" else []
        try:
            if procs:
                time.sleep(0.5)
            for batch in (1, 8):
                obs = torch.randn(batch, DIMS[0], generator=rng)
                mixed = [names[(5 * i) % len(names)] for i in range(batch)]
                raw = obs[0].numpy() if batch == 1 else obs.numpy()
                fns: dict[str, Callable[[], object]] = {
                    "base fwd": partial(_no_grad, base, obs),
                    "base fwd 1 thread": partial(_one_thread, base, obs),
                    "act(skill)": partial(lib.act, raw, names[-1]),
                    "act(base)": partial(lib.act, raw, None),
                    "act(skill) no policy": partial(_no_policy, lib, raw, names[-1]),
                }
                if batch > 1:
                    fns["act(8 skills)"] = partial(lib.act, raw, mixed)
                got = _samples(fns, rounds, 50)
                ref = _pct(got["base fwd"], 0.5), _pct(got["base fwd"], 0.99)
                cells = []
                for c in cols:
                    if c not in got:
                        cells.append(f"{'-':>27}")
                        continue
                    p50, p99 = _pct(got[c], 0.5), _pct(got[c], 0.99)
                    result[(load, batch, c)] = (p50, p99)
                    ratio = f"({p50 / ref[0]:4.1f}x/{p99 / ref[1]:4.1f}x)"
                    cells.append(f"{p50 * 1e6:6.0f} /{p99 * 1e6:6.0f} {ratio}")
                print(f"{load:>6} {batch:>5} " + " ".join(cells))
        finally:
            stop_busy(procs)
    return result


def _no_grad(module: nn.Module, x: torch.Tensor) -> object:
    with torch.no_grad():
        return module(x)


def _one_thread(module: nn.Module, x: torch.Tensor) -> object:
    from skillbank.library.acting import intra_op_threads

    with intra_op_threads(1), torch.no_grad():
        return module(x)


def _no_policy(lib: Any, raw: object, name: str) -> object:
    """act() with the caller's thread count at every batch size (the thread policy off)."""
    keep, lib.small_batch_rows = lib.small_batch_rows, 0
    try:
        return lib.act(raw, name)
    finally:
        lib.small_batch_rows = keep


def _memory_line(base: nn.Module) -> str:
    base_bytes = sum(p.numel() * p.element_size() for p in base.parameters())
    skill = sum((RANK * a + b * RANK) * 4 for a, b in zip(DIMS[:-1], DIMS[1:]))
    return (
        f"memory: base {base_bytes:,} B, one r={RANK} skill {skill:,} B "
        f"({100 * skill / base_bytes:.1f}% of the base)"
    )


def main(threads: int = 2, quick: bool = False, only: str | None = None, busy: int = 1) -> None:
    run(threads=threads, quick=quick, only=only, busy=busy)
